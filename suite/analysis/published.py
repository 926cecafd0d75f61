"""Published Long Range Arena test accuracies, shown by ``compare --reference lra`` beside measured rows.

These numbers were NOT re-run by this suite. They are copied exactly, in percent, from the tables their
papers publish: Transformer, Linear Transformer and Performer from LRA Table 1, and S4 (the updated S4-LegS
row) and Mega from the later-results tables. ``FAIL`` (stored as None) is LRA's entry for a model that did
not learn Path-X (no better than chance). Every entry was measured at the paper's own lengths and settings
(ListOps up to 2K, Text 4K, Retrieval 4K per document, Image 1K, Pathfinder 1K, Path-X 16K), not at the L
of the rows it is shown beside.
"""
from __future__ import annotations

from dataclasses import dataclass

#: suite task name -> the column name the papers use
LRA_TASKS: dict[str, str] = {"lra-listops": "ListOps", "lra-text": "Text", "lra-retrieval": "Retrieval",
                             "lra-image": "Image", "lra-pathfinder": "Pathfinder", "lra-pathx": "Path-X"}

FAIL = None  # LRA's "FAIL": the model did not learn the task (Path-X), no better than chance

_LRA_TABLE_1 = ("Tay et al., Long Range Arena: A Benchmark for Efficient Transformers, ICLR 2021 "
                "(arXiv:2011.04006), Table 1; the google-research/long-range-arena README lists the same numbers")


@dataclass(frozen=True)
class PublishedLRA:
    """One published row: a model's LRA test accuracy per task, in percent, as its source prints it."""

    model: str  # the model as its source names it
    table: str  # short name of the table, for labels
    source: str  # full citation
    accuracy_percent: dict[str, float | None]  # suite task name -> accuracy in % (None = FAIL)

    @property
    def label(self) -> str:
        """Column label, e.g. ``published: Transformer (LRA Table 1)``."""
        return f"published: {self.model} ({self.table})"

    def accuracy(self, task: str) -> float | None:
        """Accuracy as a fraction in [0, 1] (as the suite records it); None for FAIL. KeyError for a non-LRA task."""
        value = self.accuracy_percent[task]
        return None if value is None else value / 100.0


def _row(model: str, table: str, source: str, *percent: float | None) -> PublishedLRA:
    return PublishedLRA(model, table, source, dict(zip(LRA_TASKS, percent, strict=True)))


#: Columns: ListOps, Text, Retrieval, Image, Pathfinder, Path-X (test accuracy, %).
PUBLISHED_LRA: tuple[PublishedLRA, ...] = (
    _row("Transformer", "LRA Table 1", _LRA_TABLE_1, 36.37, 64.27, 57.46, 42.44, 71.40, FAIL),
    _row("Linear Trans.", "LRA Table 1", _LRA_TABLE_1, 16.13, 65.90, 53.09, 42.34, 75.30, FAIL),
    _row("Performer", "LRA Table 1", _LRA_TABLE_1, 18.01, 65.40, 53.82, 42.77, 77.05, FAIL),
    _row("S4 (v2, S4-LegS)", "S4 Table 10",
         "Gu, Goel and Ré, Efficiently Modeling Long Sequences with Structured State Spaces, ICLR 2022 "
         "(arXiv:2111.00396), Table 10, the updated S4-LegS row", 59.60, 86.82, 90.90, 88.65, 94.20, 96.35),
    _row("Mega", "Mega Table 2",
         "Ma et al., Mega: Moving Average Equipped Gated Attention, ICLR 2023 (arXiv:2209.10655), Table 2 "
         "(as transcribed by paperswithcode)", 63.14, 90.43, 91.25, 90.44, 96.01, 97.98),
)

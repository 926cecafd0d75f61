"""``compare`` and ``report`` read runs through one list of sections: the main metric per task and configuration
on the test split by default (mean over seeds with a 95% confidence interval, the paired difference against a
baseline attention by seed and by seeds plus test set, the smallest detectable difference, and across runs the
run-to-run difference), the QK-norm control (``controls``: whether EA's difference to softmax survives softmax
with EA's QK-norm), the cost per family (report), the scaling against L, and the published LRA results beside the
LRA tasks (``reference="lra"``). ``sections`` assembles them; ``section_lines`` writes any of them as Markdown (the
report's levels or compare's), ``render`` prints them (rich) or returns them (markdown, csv).

- ``render(..., fmt)``: ``rich`` (tables on the console), ``markdown`` (pipe tables), ``csv`` (long form: one row
  per run, task, metric, L and attention carrying the numbers of every table column, see ``tables.CSV_FIELDS``).
- ``render(..., reference="lra")`` adds the published LRA accuracies (``published``, not re-run) beside the measured
  accuracy of the LRA tasks: a table whose columns are the measured attentions and then ``published: <model>
  (<table>)``, with a footnote citing each source (rich, markdown); extra long-form rows with ``run`` = ``published``
  and ``published`` = True (csv). Records without an LRA task get the one line ``NO_LRA_TASKS`` instead.

What the cells hold and how the numbers are computed: ``frames`` (statistics), ``tables`` (cells), ``stats``.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field

import pandas as pd
from rich.console import Console

from suite.analysis import FORMATS, REFERENCES
from suite.analysis.controls import QK_NORM_NOTE, qk_norm_lines
from suite.analysis.frames import (
    DEFAULT_BASELINE,
    DEFAULT_SPLIT,
    LRA_METRIC,
    csv_frame,
    metric_stats,
    published_lra_rows,
    scaling_frame,
)
from suite.analysis.published import LRA_TASKS
from suite.analysis.tables import (
    COST_NOTE,
    cost_tables,
    footnotes,
    lra_reference_table,
    markdown_table,
    rich_table,
    scaling_note,
    scaling_table,
    task_tables,
)
from suite.console import make_console

NO_LRA_TASKS = (f"--reference lra: these records hold no LRA task ({', '.join(LRA_TASKS)}), so there is nothing to "
                "set the published LRA numbers beside")


@dataclass
class Section:
    """One part of a comparison: a title, its tables (each under its own heading, or none), its notes, and plain
    lines for a part that is text only."""

    key: str  # main, control, cost, scaling, lra
    title: str
    tables: list[tuple[str | None, pd.DataFrame]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    text: list[str] = field(default_factory=list)


#: how compare words its section titles (the report's are the defaults of ``sections``)
def compare_titles(metric: str | None, runs: list[str]) -> dict[str, str]:
    return {"main": f"{metric or 'main metric'} by task, L and attention ({', '.join(runs)})",
            "control": "QK-norm control", "scaling": "scaling against L",
            "lra": f"LRA {LRA_METRIC}: measured ({', '.join(runs)}) beside published results (not re-run)"}


REPORT_TITLES = {"main": "Main metric", "control": "QK-norm control", "cost": "Cost", "scaling": "Scaling against L",
                 "lra": "LRA: measured beside published results (not re-run)"}


def sections(frame: pd.DataFrame, baseline: str = DEFAULT_BASELINE, *, metric: str | None = None,
             costs: bool = False, scaling: bool = True, reference: str | None = None,
             titles: dict[str, str] | None = None, split: str = DEFAULT_SPLIT) -> list[Section]:
    """The sections of a comparison of ``frame`` (``load_runs``), in order: main metric (on ``split``), the QK-norm
    control (where a task holds ea, softmax and softmax:qk_norm=true), cost (``costs``), scaling against L
    (``scaling``; when some task has two lengths), the LRA reference (``reference="lra"``)."""
    titles = {**REPORT_TITLES, **(titles or {})}
    runs = frame.attrs.get("runs") or list(dict.fromkeys(frame["run"]))
    stats = metric_stats(frame, metric, baseline, split)
    out = [Section("main", titles["main"], list(task_tables(stats, baseline, runs)), footnotes(stats, baseline, runs))]
    control = qk_norm_lines(frame, split) if metric is None else []
    if control:
        out.append(Section("control", titles["control"], notes=[*control, QK_NORM_NOTE]))
    if costs:
        cost = cost_tables(frame, baseline, runs)
        if cost:
            out.append(Section("cost", titles["cost"], list(cost), [COST_NOTE]))
    if scaling:
        scale = scaling_table(scaling_frame(frame, baseline), baseline)
        if not scale.empty:
            out.append(Section("scaling", titles["scaling"], [(None, scale)], [scaling_note(baseline)]))
    if reference == "lra":
        lra = lra_reference_table(frame, baseline)
        if lra is not None:
            out.append(Section("lra", titles["lra"], [(None, lra[0])], lra[1]))
        else:
            out.append(Section("lra", "", text=[NO_LRA_TASKS]))
    return out


def section_lines(section: Section, level: str) -> list[str]:
    """One section as Markdown lines: its title at ``level`` (e.g. ``##``), each table under its heading one level
    down, then its notes as a list. A text-only section is its lines."""
    if not section.title:
        return list(section.text)
    lines = [f"{level} {section.title}", ""]
    for heading, table in section.tables:
        if heading is not None:
            lines += [f"{level}# {heading}", ""]
        lines += [markdown_table(table), ""]
    return lines + [f"- {note}" for note in section.notes] + section.text


def markdown_lines(parts: list[Section], level: str) -> list[str]:
    """Every section as Markdown, one blank line between them."""
    lines: list[str] = []
    for i, section in enumerate(parts):
        lines += ([""] if i else []) + section_lines(section, level)
    return lines


def print_sections(parts: list[Section], console: Console) -> None:
    """The sections on the console: each table as a rich table titled by its heading (or the section's title)."""
    for i, section in enumerate(parts):
        if not section.title:
            for line in section.text:
                console.print(line, markup=False)
            continue
        if i == 0:
            console.print(section.title, markup=False, style="bold")
        for heading, table in section.tables:
            console.print(rich_table(table, heading or section.title))
        for note in section.notes:
            console.print(f"- {note}" if i == 0 else note, markup=False)


def render(frame: pd.DataFrame, metric: str | None = None, fmt: str = "rich", console: Console | None = None,
           scaling: bool = True, reference: str | None = None, baseline: str = DEFAULT_BASELINE,
           split: str = DEFAULT_SPLIT) -> str:
    """Print (rich) or return (markdown, csv) the comparison of ``frame``; returns the text for non-rich formats.

    ``reference="lra"`` adds the published LRA rows (module docstring); the measured numbers do not change.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; valid: {', '.join(FORMATS)}")
    if reference is not None and reference not in REFERENCES:
        raise ValueError(f"unknown reference {reference!r}; valid: {', '.join(REFERENCES)}")
    runs = frame.attrs.get("runs") or list(dict.fromkeys(frame["run"]))
    if fmt == "csv":
        long = csv_frame(metric_stats(frame, metric, baseline, split))
        if reference == "lra":
            published = published_lra_rows(frame)
            long = long.assign(published=False)
            if not published.empty:
                long = pd.concat([long.astype({"seq_len": "Int64", "n": "Int64"}),
                                  published.astype({"seq_len": "Int64", "n": "Int64"})], ignore_index=True)
        buffer = io.StringIO()
        long.to_csv(buffer, index=False, float_format="%.6g")
        return buffer.getvalue()
    parts = sections(frame, baseline, metric=metric, scaling=scaling, reference=reference,
                     titles=compare_titles(metric, runs), split=split)
    if fmt == "markdown":
        return "\n".join(markdown_lines(parts, "###")) + "\n"
    print_sections(parts, console or make_console())
    return ""

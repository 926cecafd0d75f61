"""``run_suite.py gpu-check``: a first GPU window in one command, which never ends empty-handed (DESIGN.md §6).

- ``plan``:    the rows in run order (environment, EA screen, headline timings, the other checks, baselines,
               copy bandwidth, the launch sweep, every timing) and the cost model that estimates each one
- ``rows``:    what each row does on the device, in a worker process
- ``runner``:  the parent: one worker at a time, a fresh one after a crash, a hang or a lost CUDA context; every
               row appended and the report re-rendered as soon as it completes; the time budget; signals
- ``targets``: each target met, missed, invalid (a check it rests on failed) or not measured
- ``report``:  OUT/<card>/gpu_check.jsonl (the record), README.md, checks.csv, timings.csv, targets.csv

Nothing here imports more than the GPU box has (torch, triton, numpy, pyyaml; fla and mamba-ssm when present).
"""
from __future__ import annotations

import os
import re

from suite.gpu_check.plan import TINY, RowSpec, Shapes, card_for, plan_rows, total_estimate
from suite.gpu_check.targets import TARGETS, evaluate_targets

__all__ = ["TARGETS", "TINY", "RowSpec", "Shapes", "card_for", "card_slug", "ea_backend", "evaluate_targets",
           "plan_rows", "total_estimate"]


def card_slug(name: str) -> str:
    """'NVIDIA H200' -> 'nvidia-h200': the results folder of a card."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "unknown"


def ea_backend(device: str) -> str:
    """The EA backend under test: Triton on CUDA and under the interpreter, else the torch path (labelled)."""
    return "triton" if device.startswith("cuda") or os.environ.get("TRITON_INTERPRET") == "1" else "torch"

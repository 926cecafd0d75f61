"""Causal language modelling around ``suite.models.lm.DecoderLM``: tokenizers, checkpoints, held-out metrics,
the decode benchmark, and lm-eval (model ``suite-lm`` and the local tasks in ``tasks/lm/lm_eval/``).

This module itself holds only the environment variables the LM jobs read (no torch import, so the CLI can
use them): ``EA_SUITE_LM_EVAL_TASKS`` (comma-separated lm-eval tasks; empty or ``none``: no lm-eval) and
``EA_SUITE_CHECKPOINT_DIR`` (where trained models are saved)."""
from __future__ import annotations

import os

LM_EVAL_TASKS_ENV = "EA_SUITE_LM_EVAL_TASKS"
CHECKPOINT_ENV = "EA_SUITE_CHECKPOINT_DIR"


def lm_eval_tasks_from_env() -> list[str] | None:
    """``$EA_SUITE_LM_EVAL_TASKS`` as a list (unset: None; empty or ``none``: [])."""
    value = os.environ.get(LM_EVAL_TASKS_ENV)
    if value is None:
        return None
    return [] if value.strip().lower() in ("", "none") else [t.strip() for t in value.split(",") if t.strip()]

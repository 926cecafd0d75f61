"""Run lm-eval on a trained DecoderLM: the local held-out tasks (``lm_eval_tasks/`` beside this file) and any
standard task.

``run_lm_eval(model, tokenizer, tasks, source=..., data_root=..., limit=...)`` returns
``{"results": {task: {metric: value}}, "table": markdown, "n_samples": {task: n}}``; ``flatten_metrics`` turns
the results into record metrics (``lm_eval.<task>.<metric>``).

- Local tasks (``LOCAL_TASKS``) are read with ``TaskManager(include_path=TASK_DIR, include_defaults=False)``
  (indexing lm-eval's 14k default tasks takes ~17 s, so that happens only when a standard task is named). Their
  documents come from the held-out split of the corpus passed here (the one the model trained on).
- Standard tasks (``lambada_openai``, ``hellaswag``, ...) run only from the local Hugging Face cache:
  everything runs with HF offline mode on unless ``download=True``; a task whose data set is not cached
  raises DataMissingError saying so.
"""
from __future__ import annotations

import difflib
import functools
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from suite.data import DataMissingError
from suite.data.text import hf_offline, load_text
from suite.families.lm.heldout_docs import as_dataset_dict, cloze_docs, perplexity_docs

TASK_DIR = Path(__file__).resolve().parent / "lm_eval_tasks"  # the local tasks' YAML files, package data
LOCAL_TASKS = ("suite_heldout_ppl", "suite_heldout_cloze", "suite_heldout_cloze_gen")


@functools.lru_cache(maxsize=2)
def _heldout_bytes(source: str, data_root: str | None, split: str, download: bool) -> bytes:
    corpus = load_text(source, data_root, download)
    if split not in corpus.splits:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(corpus.splits)}")
    return corpus.splits[split]


def heldout_dataset(kind: str, source: str = "kjv", data_root: str | None = None, split: str = "test",
                    download: bool = False, **_task_metadata: Any) -> Any:
    """The DatasetDict ({"test": docs}) of a local task: ``kind`` is "perplexity" or "cloze"."""
    text = _heldout_bytes(source, data_root, split, bool(download))
    builders: dict[str, Callable[[bytes], list[dict[str, str]]]] = {"perplexity": perplexity_docs, "cloze": cloze_docs}
    if kind not in builders:
        raise ValueError(f"unknown held-out task kind {kind!r}; valid: {', '.join(builders)}")
    return as_dataset_dict(builders[kind](text))


def check_task_names(tasks: Iterable[str], manager: Any = None) -> None:
    """ValueError naming every unknown lm-eval task (with the closest known name). The local tasks are known
    without lm-eval; any other name needs lm-eval's index of its standard tasks (about 20 s), which is cheaper
    than training every model before finding out."""
    tasks = list(tasks)
    standard = [t for t in tasks if t not in LOCAL_TASKS]
    if not standard:
        return
    if manager is None:
        from lm_eval.tasks import TaskManager

        manager = TaskManager(include_path=str(TASK_DIR), include_defaults=True)
    unknown = [t for t in standard if t not in manager.all_tasks]
    if unknown:
        hints = [f"{t} (did you mean {m[0]}?)" if (m := difflib.get_close_matches(t, manager.all_tasks, n=1)) else t
                 for t in unknown]
        raise ValueError(f"unknown lm-eval task(s) {', '.join(hints)}; local tasks: {', '.join(LOCAL_TASKS)}, "
                         "or any task lm-eval lists (lm-eval ls tasks)")


def _task_manager(tasks: list[str], metadata: dict[str, Any]) -> Any:
    from lm_eval.tasks import TaskManager

    standard = [t for t in tasks if t not in LOCAL_TASKS]
    manager = TaskManager(include_path=str(TASK_DIR), include_defaults=bool(standard), metadata=metadata)
    check_task_names(tasks, manager)
    return manager


def _is_missing_data(err: BaseException) -> bool:
    """True for the errors datasets / huggingface_hub raise when a data set is not cached and we are offline."""
    names = {type(e).__name__ for e in (err, err.__cause__, err.__context__) if e is not None}
    return bool(names & {"ConnectionError", "OfflineModeIsEnabled", "LocalEntryNotFoundError",
                         "DatasetNotFoundError", "FileNotFoundError", "HfHubHTTPError"})


def run_lm_eval(model: Any, tokenizer: Any, tasks: Iterable[str] = LOCAL_TASKS, source: str = "kjv",
                data_root: str | Path | None = None, split: str = "test", limit: int | float | None = None,
                max_length: int | None = None, batch_size: int = 16, download: bool = False) -> dict[str, Any]:
    """Evaluate ``model`` (a DecoderLM on its device) with lm-eval; see the module docstring for the result."""
    import lm_eval
    from lm_eval.utils import make_table

    from suite.families.lm.lm_eval_model import SuiteLM

    tasks = list(tasks)
    if not tasks:
        raise ValueError("no lm-eval tasks given")
    metadata = {"source": source, "data_root": str(data_root) if data_root else None, "split": split,
                "download": bool(download)}
    manager = _task_manager(tasks, metadata)
    device = str(next(model.parameters()).device)
    lm = SuiteLM(model=model, tokenizer=tokenizer, device=device, batch_size=batch_size, max_length=max_length)
    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    try:
        with hf_offline(not download):
            out = lm_eval.simple_evaluate(model=lm, tasks=tasks, task_manager=manager, limit=limit,
                                          bootstrap_iters=0, log_samples=False)
    except DataMissingError:
        raise
    except Exception as err:
        if _is_missing_data(err):
            raise DataMissingError(f"lm-eval tasks {', '.join(tasks)}: a data set is not in the local Hugging Face "
                                   f"cache ({type(err).__name__}: "
                                   f"{str(err).splitlines()[0][:200] if str(err) else ''});"
                                   " pass --download once to fetch it") from err
        raise
    results = {task: {name.split(",")[0]: value for name, value in metrics.items()
                      if "stderr" not in name and name != "sample_len" and isinstance(value, (int, float))}
               for task, metrics in out["results"].items()}
    return {"results": results, "table": make_table(out), "n_samples": {t: n.get("effective") for t, n in
                                                                        out.get("n-samples", {}).items()}}


def flatten_metrics(results: dict[str, dict[str, float]]) -> dict[str, float]:
    """{"task": {"metric": v}} -> {"lm_eval.task.metric": v} for a result record's ``metrics``."""
    return {f"lm_eval.{task}.{metric}": float(value) for task, metrics in results.items()
            for metric, value in metrics.items()}

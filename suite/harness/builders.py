"""Builders turn one job (task config, attention, L, seed, device) into a ``Job`` that the harness runs.

A task file names its builder (``builder: vit``); the builder is a function registered under that name::

    from suite.harness.builders import BuildContext, Job, register_builder

    @register_builder("vit")
    def build_vit_job(ctx: BuildContext) -> Job:
        model = ...                                  # nn.Module using build_attention(ctx.attention, ...)
        return Job(model=model, train_batches=loader, eval_batches=val_loader,
                   loss_fn=lambda model, batch: F.cross_entropy(model(batch[0]), batch[1]),
                   evaluate=evaluate_accuracy,      # (model, batches) -> {"accuracy": ..., "loss": ...}
                   data_info={"source": "cifar10", "substitute": False})

and its module is listed in ``BUILDER_MODULES`` below (builder name -> module, imported only when a job
needs it), or named in the environment variable ``EA_SUITE_PLUGINS`` (comma-separated modules, for builders
that live outside the suite and for tests).

The builder reads its hyperparameters from ``ctx.hparams`` (the task's resolved profile), shards data by
``ctx.rank`` / ``ctx.world_size`` under torchrun, and raises ``suite.data.DataMissingError`` when a data set
is not on disk (the job is then ``skipped``). ``data_info`` must say which data actually ran:
``{"source": name, "substitute": bool, ...}`` (substitute = an embedded stand-in, not the published set).

Two kinds of job:

- training jobs: ``model``, ``train_batches``, ``loss_fn``, ``eval_batches``, ``evaluate``. The one loop in
  ``suite.harness.train`` trains with AdamW for ``hparams["steps"]`` steps (or ``epochs`` x
  ``steps_per_epoch``), then calls ``evaluate(model, batches)`` on the eval batches (already on the device)
  under ``torch.no_grad()`` and times it for inference throughput. ``extra_eval(model)`` may add untimed
  metrics afterwards (decoding speed, lm-eval scores).
- measurement jobs (the ``kernels`` family): only ``measure()``, returning the metrics dict.

Batches are whatever the builder yields (tensors, tuples, dicts); the harness moves every tensor in them to
the device. ``count_batch(batch) -> (samples, tokens)`` counts a batch for throughput; by default samples is
the first dimension of the first tensor and tokens = samples x ``ctx.seq_len`` (padded positions count:
throughput is positions processed).
"""
from __future__ import annotations

import difflib
import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

#: builder name -> module whose import registers it (imported lazily, only for the jobs that need it)
BUILDER_MODULES: dict[str, str] = {
    "kernels": "suite.harness.kernels_builder",
    "lra": "suite.models.lra_builder",
    "lm": "suite.lm.builder",
    "lm-decode": "suite.lm.builder",
    "vit": "suite.models.vit_builder",
}

PLUGINS_ENV = "EA_SUITE_PLUGINS"


@dataclass(frozen=True)
class BuildContext:
    """Everything a builder may use to build one job."""

    task: str
    family: str
    attention: str  # canonical attention spec, e.g. "ea:order=2"
    seq_len: int
    seed: int
    device: str  # "cpu", "cuda", "cuda:1"
    hparams: dict[str, Any]  # the task's resolved profile (seq_len list removed)
    data: dict[str, Any]  # the task's data section: {"source": ..., ...}
    profile: str = "smoke"
    data_root: Path | None = None
    rank: int = 0
    world_size: int = 1


@dataclass
class Job:
    """What a builder returns: a training job (model ... evaluate) or a measurement job (measure)."""

    data_info: dict[str, Any]
    model: Any = None  # torch.nn.Module
    train_batches: Iterable | None = None  # re-iterable; the loop starts it again when it runs out
    loss_fn: Callable[[Any, Any], Any] | None = None  # (model, batch) -> scalar loss tensor
    eval_batches: Iterable | None = None  # re-iterable
    evaluate: Callable[[Any, Iterable], dict[str, float]] | None = None  # (model, batches) -> task metrics
    count_batch: Callable[[Any], tuple[int, int]] | None = None  # batch -> (samples, tokens)
    extra_eval: Callable[[Any], dict[str, float]] | None = None  # untimed extra metrics
    steps_per_epoch: int | None = None  # needed when the profile gives epochs
    measure: Callable[[], dict[str, Any]] | None = None  # measurement job
    backends: dict[str, str] = field(default_factory=dict)  # attention -> backend used (measurement jobs)

    def validate(self, builder: str) -> None:
        if not isinstance(self.data_info, dict) or not isinstance(self.data_info.get("source"), str) \
                or not isinstance(self.data_info.get("substitute"), bool):
            raise ValueError(f"builder {builder!r}: data_info must be {{'source': str, 'substitute': bool, ...}},"
                             f" got {self.data_info!r}")
        if self.measure is not None:
            return
        missing = [n for n in ("model", "train_batches", "loss_fn", "eval_batches", "evaluate") if getattr(self, n) is None]
        if missing:
            raise ValueError(f"builder {builder!r} returned a job without {', '.join(missing)} "
                             "(a training job needs them all; a measurement job needs measure)")


Builder = Callable[[BuildContext], Job]
_REGISTRY: dict[str, Builder] = {}


def register_builder(name: str) -> Callable[[Builder], Builder]:
    """Function decorator: make ``fn(ctx) -> Job`` the builder called ``name`` in task files."""

    def wrap(fn: Builder) -> Builder:
        if name in _REGISTRY and _REGISTRY[name] is not fn:
            raise ValueError(f"builder {name!r} is registered twice")
        _REGISTRY[name] = fn
        return fn

    return wrap


def plugin_modules() -> list[str]:
    return [m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(",") if m.strip()]


def load_plugins(modules: Iterable[str] | None = None) -> None:
    """Import the plugin modules (default: those in ``$EA_SUITE_PLUGINS``) so that their builders register."""
    for module in plugin_modules() if modules is None else modules:
        importlib.import_module(module)


def builder_names() -> list[str]:
    """Every builder name a task file may use (registered, lazily importable, or from plugins)."""
    load_plugins()
    return sorted(set(_REGISTRY) | set(BUILDER_MODULES))


def get_builder(name: str) -> Builder:
    """The builder registered as ``name``, importing its module if needed; ValueError listing valid names."""
    if name not in _REGISTRY:
        load_plugins()
    if name not in _REGISTRY and name in BUILDER_MODULES:
        importlib.import_module(BUILDER_MODULES[name])
        if name not in _REGISTRY:
            raise ValueError(f"module {BUILDER_MODULES[name]} did not register builder {name!r}")
    if name not in _REGISTRY:
        valid = builder_names()
        close = difflib.get_close_matches(name, valid, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown builder {name!r}{hint}; valid builders: {', '.join(valid)}")
    return _REGISTRY[name]

"""What a builder gets and returns: one job (task config, attention, L, seed, settings) becomes a ``Workload``.

A task file names its builder (``builder: vit``); the builder is a function registered under that name with
the hyperparameters it reads (``suite.run.hparams``)::

    from suite.run.builders import BuildContext, Workload, register_builder
    from suite.run.hparams import TRAINING, HParam

    @register_builder("vit", hparams=[*TRAINING, HParam("depth", "int", 4, "transformer blocks", low=1)])
    def build_vit_job(ctx: BuildContext) -> Workload:
        model = ...                                  # nn.Module using build_attention(ctx.attention, ...)
        return Workload(model=model, train_batches=loader, val_batches=val_loader, test_batches=test_loader,
                        loss_fn=lambda model, batch: F.cross_entropy(model(batch[0]), batch[1]),
                        evaluate=evaluate_accuracy,      # (model, batches) -> Evaluation or {"accuracy": ...}
                        data_info={"source": "cifar10", "substitute": False})

The suite's own builders live in ``suite.families`` (importing it registers them all); others register from
any module the task loader imports (``EA_SUITE_PLUGINS``, see ``suite.tasks``). Nothing here imports a family:
the runner receives each job's ``Builder`` from the task that planned it.

The builder reads its hyperparameters from ``ctx.hparams`` (the task's resolved profile: declared defaults
filled in, so every declared key with a default is there), its settings from the other ``ctx`` fields (never
from the environment), shards data by ``ctx.rank`` / ``ctx.world_size`` under torchrun, and raises
``suite.data.DataMissingError`` when a data set is not on disk (the job is then ``skipped``). ``data_info``
must say which data actually ran: ``{"source": name, "substitute": bool, ...}``.

Two kinds of job:

- training jobs: ``model``, ``train_batches``, ``loss_fn``, ``val_batches``, ``test_batches``, ``evaluate``. The
  one loop in ``suite.run.train`` trains with AdamW for ``hparams["steps"]`` steps (or ``epochs`` x
  ``steps_per_epoch``), calling ``evaluate(model, batches)`` (batches already on the device, under
  ``torch.no_grad()``) on the validation batches for the learning curve, and at the end once on the validation
  and once on the test batches (the latter timed for inference throughput). ``evaluate`` returns an
  ``Evaluation`` (metrics and per-example outcomes) or a plain metrics dict. The validation split serves every
  choice; the test split must be disjoint from the training and validation data. ``extra_eval(model)`` may add
  untimed metrics afterwards (decoding speed, lm-eval scores).
- measurement jobs (kernels, decoding): only ``measure()``, returning the metrics dict.

Batches are whatever the builder yields (tensors, tuples, dicts); the harness moves every tensor in them to
the device. ``count_batch(batch) -> (samples, tokens)`` counts a batch for throughput; by default samples is
the first dimension of the first tensor and tokens = samples x ``ctx.seq_len``.
"""
from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from suite.run.hparams import HParam, by_name, check_hparams, resolve


@dataclass(frozen=True)
class BuildContext:
    """Everything a builder may use to build one job: the job's identity, hyperparameters and settings."""

    task: str
    family: str
    attention: str  # canonical attention spec, e.g. "ea:order=2"
    seq_len: int
    seed: int
    device: str  # "cpu", "cuda", "cuda:1"
    hparams: dict[str, Any]  # the task's resolved profile (declared defaults filled in)
    data: dict[str, Any]  # the task's data section: {"source": ..., ...}
    profile: str = "smoke"
    data_root: Path | None = None  # where real data sets live (--data-root); None: embedded defaults only
    download: bool = False  # a missing data set may be fetched (--download)
    artifacts_dir: Path | None = None  # this job's own folder for what it saves (checkpoints); None: save nothing
    rank: int = 0
    world_size: int = 1


@dataclass
class Evaluation:
    """What a training job's ``evaluate`` returns: ``metrics`` (the task's, unprefixed: accuracy, loss, bpb) and,
    where the task can give them, per-example outcomes in the evaluation's order: ``outcomes`` [N] (bool
    ``correct`` or float ``loss``, as ``kind`` says), ``clusters`` [N] (ints; examples sharing a source) and
    ``fingerprint`` (``suite.run.records.fingerprint`` of the examples' labels or targets)."""

    metrics: dict[str, float]
    outcomes: Any = None  # numpy array [N] or None
    kind: str = "correct"  # correct | loss
    clusters: Any = None  # numpy int array [N] or None
    fingerprint: str | None = None


def as_evaluation(result: Evaluation | dict[str, Any]) -> Evaluation:
    """An ``evaluate`` result as an ``Evaluation`` (a plain metrics dict has no per-example outcomes)."""
    if isinstance(result, Evaluation):
        return result
    return Evaluation({k: float(v) for k, v in result.items()})


@dataclass
class Workload:
    """What a builder returns: a training job (model ... evaluate) or a measurement job (measure)."""

    data_info: dict[str, Any]
    model: Any = None  # torch.nn.Module
    train_batches: Iterable | None = None  # re-iterable; the loop starts it again when it runs out
    loss_fn: Callable[[Any, Any], Any] | None = None  # (model, batch) -> scalar loss tensor
    val_batches: Iterable | None = None  # re-iterable: the validation split (curves, every choice)
    test_batches: Iterable | None = None  # re-iterable: the test split, evaluated once at the end
    evaluate: Callable[[Any, Iterable], Evaluation | dict[str, float]] | None = None  # (model, batches) -> metrics
    count_batch: Callable[[Any], tuple[int, int]] | None = None  # batch -> (samples, tokens)
    extra_eval: Callable[[Any], dict[str, float]] | None = None  # untimed extra metrics
    steps_per_epoch: int | None = None  # needed when the profile gives epochs
    measure: Callable[[], dict[str, Any]] | None = None  # measurement job
    backends: dict[str, str] = field(default_factory=dict)  # attention -> backend used (measurement jobs)
    warnings: list[str] = field(default_factory=list)  # what went wrong without spoiling the result (record env)
    curve: dict[str, Any] | None = None  # the learning curve the training loop leaves (suite.run.train)
    examples: dict[str, Any] | None = None  # per-example test outcomes the loop leaves (records.Examples)

    def save_artifact(self, what: str, save: Callable[[], Any]) -> None:
        """Run ``save()`` (a write to the job's artifacts folder); an OSError (full or read-only disk) becomes a
        warning in the record instead of losing the job's result."""
        try:
            save()
        except OSError as err:
            self.warnings.append(f"{what} not saved: {err.strerror or err} ({type(err).__name__})")

    def validate(self, builder: str) -> None:
        if not isinstance(self.data_info, dict) or not isinstance(self.data_info.get("source"), str) \
                or not isinstance(self.data_info.get("substitute"), bool):
            raise ValueError(f"builder {builder!r}: data_info must be {{'source': str, 'substitute': bool, ...}},"
                             f" got {self.data_info!r}")
        if self.measure is not None:
            return
        needed = ("model", "train_batches", "loss_fn", "val_batches", "test_batches", "evaluate")
        missing = [n for n in needed if getattr(self, n) is None]
        if missing:
            raise ValueError(f"builder {builder!r} returned a job without {', '.join(missing)} "
                             "(a training job needs them all; a measurement job needs measure)")


@dataclass(frozen=True)
class Builder:
    """A registered builder: its function, the hyperparameters it declares, an optional pre-flight check, and its
    rehearsal.

    ``check(hparams)`` runs once per task before any job (on the resolved hyperparameters) and raises
    ValueError for what only the builder can judge (e.g. lm-eval task names), so a night does not start on it.
    ``rehearsal``: the overrides that cut a profile's steps, batches and examples to a couple each, keeping
    its model shape, data pipeline, augmentation, optimizer and evaluation (``run --rehearse``: a GPU night's
    ``full`` profile end to end on a CPU in minutes). ``data_status(data section, data root)`` says, without
    loading anything, which data a job would use: ("real" | "substitute" | "generated" | "missing", detail; for
    missing data the instructions). ``cost(hparams, data section, L, attention)`` is a job's rough (FLOPs, peak bytes),
    for
    the plan's estimates where no earlier record says better (``suite.run.pool.estimates``). ``probes(data section)``
    names the learnability probes a task of this builder offers ({name: what it is}; ``run_suite.py probe``): a
    job whose attention is ``probe:<name>`` gets that probe model in place of the model with attention.
    """

    name: str
    build: Callable[[BuildContext], Workload]
    hparams: dict[str, HParam]
    description: str = ""
    check: Callable[[dict[str, Any]], None] | None = None
    rehearsal: dict[str, Any] = field(default_factory=dict)
    data_status: Callable[[dict[str, Any], Any], tuple[str, str]] | None = None
    cost: Callable[[dict[str, Any], dict[str, Any], int, str], tuple[float, float]] | None = None
    probes: Callable[[dict[str, Any]], dict[str, str]] | None = None

    def __call__(self, ctx: BuildContext) -> Workload:
        """Build the job, ``ctx.hparams`` checked against the declarations and over the declared defaults (already
        there when a task resolved them); ValueError naming the first bad hyperparameter."""
        problems = check_hparams(ctx.hparams, self.hparams, f"builder {self.name!r}")
        if problems:
            raise ValueError(f"builder {self.name!r}: hyperparameter {problems[0]}")
        return self.build(replace(ctx, hparams=resolve(ctx.hparams, self.hparams)))

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        """Pickled by name: a job process imports the builder's module, which registers it again."""
        return _registered, (self.build.__module__, self.name)


def _registered(module: str, name: str) -> Builder:
    importlib.import_module(module)
    return get_builder(name)


_REGISTRY: dict[str, Builder] = {}


def register_builder(name: str, hparams: Sequence[HParam], description: str = "",
                     check: Callable[[dict[str, Any]], None] | None = None,
                     rehearsal: dict[str, Any] | None = None,
                     data_status: Callable[[dict[str, Any], Any], tuple[str, str]] | None = None,
                     cost: Callable[[dict[str, Any], dict[str, Any], int, str], tuple[float, float]] | None = None,
                     probes: Callable[[dict[str, Any]], dict[str, str]] | None = None
                     ) -> Callable[[Callable[[BuildContext], Workload]], Builder]:
    """Function decorator: make ``fn(ctx) -> Workload`` the builder called ``name`` in task files, reading ``hparams``.

    The decorated name becomes the ``Builder`` (callable like the function, with the declared defaults filled in).
    """
    declared = by_name(hparams)
    problems = check_hparams(rehearsal or {}, declared, f"builder {name!r}")
    if problems:
        raise ValueError(f"builder {name!r}: rehearsal {problems[0]}")

    def wrap(fn: Callable[[BuildContext], Workload]) -> Builder:
        known = _REGISTRY.get(name)
        if known is not None and (known.build.__module__, known.build.__qualname__) != (fn.__module__, fn.__qualname__):
            raise ValueError(f"builder {name!r} is registered twice")
        doc = description or (fn.__doc__ or "").strip().split("\n")[0]
        _REGISTRY[name] = Builder(name, fn, declared, doc, check, dict(rehearsal or {}), data_status, cost,
                                  probes)
        return _REGISTRY[name]

    return wrap


def load_plugins(modules: Iterable[str]) -> None:
    """Import modules whose import registers builders (plugins outside the suite, test builders)."""
    for module in modules:
        importlib.import_module(module)


def builder_names() -> list[str]:
    """Every registered builder name."""
    return sorted(_REGISTRY)


def get_builder(name: str) -> Builder:
    """The builder registered as ``name``; ValueError listing the valid names."""
    if name not in _REGISTRY:
        valid = builder_names()
        close = difflib.get_close_matches(name, valid, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown builder {name!r}{hint}; valid builders: {', '.join(valid)}")
    return _REGISTRY[name]

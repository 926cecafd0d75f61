"""The one training and evaluation loop, used by every family (ViT, LRA, LM).

``train_and_evaluate(work, ctx)`` trains ``work.model`` with AdamW for ``steps`` optimizer steps (or ``epochs``
x ``work.steps_per_epoch``), with linear warm-up then the task's schedule (cosine by default), gradient
clipping, and bf16 autocast on CUDA (``amp: none`` turns it off; the CPU always runs fp32). NaN or infinite
training loss raises ``DivergedError``. Then it evaluates once on the validation split and once on the test
split and returns the metrics:

- the task's own metrics from ``work.evaluate`` (accuracy, loss, bpb, ...) on each split, as ``val_<name>`` and
  ``test_<name>``, and those of ``work.extra_eval``;
- ``train_loss``: mean training loss over the last 10% of steps (at least one);
- ``train_samples_per_s``, ``train_tokens_per_s``: over every step but the first (which pays for allocation
  and compilation), summed over ranks under DDP; ``train_s``: wall seconds of all steps;
- ``infer_samples_per_s``, ``infer_tokens_per_s``, ``eval_s``: the test pass under ``torch.no_grad()``;
- ``peak_mem_bytes``: peak memory of training plus evaluation (see ``suite.run.measure``);
- ``params``: trainable and frozen parameters of the model; ``train_steps``; ``world_size`` under DDP, with
  ``ddp_param_max_diff`` (largest difference between ranks of per-tensor parameter checksums, 0 when the
  replicas agree).

It also leaves the test split's per-example outcomes in ``work.examples`` (``suite.run.records.Examples``, when
``evaluate`` gives them) and the job's learning curve in ``work.curve`` (at a bounded number of points, whatever
the number of steps): ``{"split": "val", "train": [{"step", "tokens", "loss"}, ...], "eval": [{"step",
"tokens", <task metrics>}, ...]}`` with the training loss averaged over windows of ``ceil(steps / 100)`` steps,
and the task's evaluation on the validation split at ``eval_points`` evenly spaced steps, the last one being
the final validation (intermediate evaluations are not counted in the training time or throughput).
With ``tensorboard`` (a folder) the same points go to a TensorBoard event file there as they happen, to watch
a night live.

Under ``torchrun`` (``ctx.world_size > 1``, process group already initialised) the model is wrapped in
``DistributedDataParallel``; the builder shards the training data by rank; rank 0 evaluates.
Hyperparameters (from ``ctx.hparams``): those of ``suite.run.hparams.TRAINING`` (steps | epochs, lr,
weight_decay, betas, warmup_steps, schedule, min_lr_ratio, grad_clip, amp), whose declared defaults apply.
"""
from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn

from suite.run.builders import BuildContext, Evaluation, Workload, as_evaluation
from suite.run.hparams import TRAINING, by_name, resolve
from suite.run.measure import Stopwatch, peak_memory_bytes, reset_peak_memory, synchronize
from suite.run.records import encode_examples

_DIVERGENCE_CHECK_EVERY = 25


class DivergedError(RuntimeError):
    """The training loss became NaN or infinite."""


def lr_factor(step: int, total: int, warmup: int, schedule: str = "cosine", min_ratio: float = 0.0) -> float:
    """Learning-rate multiplier at optimizer step ``step`` (0-based) of ``total``: linear warm-up, then decay."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "linear":
        decay = 1.0 - progress
    elif schedule == "cosine":
        decay = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        raise ValueError(f"unknown schedule {schedule!r}; valid: cosine, linear, constant")
    return min_ratio + (1.0 - min_ratio) * decay


def to_device(batch: Any, device: str) -> Any:
    """Move every tensor in a (nested) tuple, list or dict to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def _first_tensor(batch: Any) -> torch.Tensor | None:
    if isinstance(batch, torch.Tensor):
        return batch
    values = batch.values() if isinstance(batch, dict) else batch if isinstance(batch, (list, tuple)) else ()
    for value in values:
        found = _first_tensor(value)
        if found is not None:
            return found
    return None


def default_count_batch(seq_len: int):
    """(samples, tokens) of a batch: the first tensor's first dimension, times ``seq_len`` for tokens."""

    def count(batch: Any) -> tuple[int, int]:
        tensor = _first_tensor(batch)
        if tensor is None or tensor.dim() == 0:
            raise ValueError("cannot count a batch without a batched tensor; give the Workload a count_batch")
        return int(tensor.shape[0]), int(tensor.shape[0]) * seq_len

    return count


def _cycle(batches: Iterable) -> Iterator:
    while True:
        empty = True
        for batch in batches:
            empty = False
            yield batch
        if empty:
            raise ValueError("the training batches are empty")


def resolve_steps(hparams: dict[str, Any], work: Workload) -> int:
    """Optimizer steps: ``steps``, or ``epochs`` x steps per epoch (``work.steps_per_epoch`` or len of the batches)."""
    if "steps" in hparams:
        return int(hparams["steps"])
    if "epochs" in hparams:
        per_epoch = work.steps_per_epoch
        if per_epoch is None and hasattr(work.train_batches, "__len__"):
            per_epoch = len(work.train_batches)  # type: ignore[arg-type]
        if not per_epoch:
            raise ValueError("the profile gives epochs but the workload does not know its steps per epoch")
        return max(1, math.ceil(float(hparams["epochs"]) * per_epoch))
    raise ValueError("the profile gives neither steps nor epochs")


def attention_backends(model: nn.Module) -> dict[str, str]:
    """Attention spec -> the backend its modules actually ran (several joined by '+')."""
    seen: dict[str, set[str]] = {}
    for module in model.modules():
        if hasattr(module, "backend_used") and hasattr(module, "spec"):
            seen.setdefault(str(module.spec), set()).add(str(module.backend_used))
    return {spec: "+".join(sorted(backends)) for spec, backends in seen.items()}


def _autocast(device: str, hparams: dict[str, Any]):
    if str(device).startswith("cuda") and hparams["amp"] == "bf16":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return nullcontext()


class _CountingBatches:
    """Yields the eval batches on the device and counts samples and tokens; other attributes are the batches'
    own (an evaluation may read what its batches carry)."""

    def __init__(self, batches: Iterable, device: str, count) -> None:
        self.batches, self.device, self.count = batches, device, count
        self.samples = self.tokens = 0

    def __getattr__(self, name: str) -> Any:
        if name == "batches":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.batches, name)

    def __iter__(self) -> Iterator:
        for batch in self.batches:
            samples, tokens = self.count(batch)
            self.samples += samples
            self.tokens += tokens
            yield to_device(batch, self.device)


def _param_checksums(model: nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return torch.stack([torch.stack([p.double().sum(), p.double().square().sum()])
                            for p in model.parameters()]).flatten()


_TRAINING = by_name(TRAINING)
CURVE_POINTS = 100  # at most this many training-loss points per job


class _Curve:
    """The learning curve of one job (module docstring), mirrored to TensorBoard when a folder is given."""

    def __init__(self, total_steps: int, eval_points: int, tensorboard: Path | None) -> None:
        self.window = max(1, math.ceil(total_steps / CURVE_POINTS))
        self.eval_steps = {max(1, round(total_steps * i / eval_points)) for i in range(1, eval_points)}
        self.eval_steps.discard(total_steps)  # the final evaluation is the job's own
        self.train: list[dict[str, float]] = []
        self.eval: list[dict[str, float]] = []
        self.writer = None
        if tensorboard is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(tensorboard))

    def train_point(self, step: int, tokens: int, loss: float) -> None:
        self.train.append({"step": step, "tokens": tokens, "loss": loss})
        if self.writer is not None:
            self.writer.add_scalar("train/loss", loss, step)

    def eval_point(self, step: int, tokens: int, metrics: dict[str, float]) -> None:
        self.eval.append({"step": step, "tokens": tokens, **metrics})
        if self.writer is not None:
            for name, value in metrics.items():
                self.writer.add_scalar(f"eval/{name}", value, step)
            self.writer.flush()

    def close(self) -> dict[str, Any]:
        if self.writer is not None:
            self.writer.close()
        return {"split": "val", "train": self.train, "eval": self.eval}


def _evaluate(work: Workload, model: nn.Module, batches: Iterable | None, device: str, hp: dict[str, Any],
              count) -> tuple[Evaluation, _CountingBatches]:
    """The task's evaluation of ``batches`` (no grad), and the counting wrapper (samples, tokens)."""
    assert batches is not None and work.evaluate is not None  # Workload.validate checked a training job
    counting = _CountingBatches(batches, device, count)
    with torch.no_grad(), _autocast(device, hp):
        result = as_evaluation(work.evaluate(model, counting))
    result.metrics = {k: float(v) for k, v in result.metrics.items()}
    return result, counting


def train_and_evaluate(work: Workload, ctx: BuildContext, tensorboard: Path | None = None) -> dict[str, float]:
    """Train ``work.model`` and evaluate it; returns the metrics and leaves the learning curve in ``work.curve``
    (module docstring). Raises DivergedError."""
    hp, device = resolve(ctx.hparams, _TRAINING), ctx.device
    distributed = ctx.world_size > 1
    count = work.count_batch or default_count_batch(ctx.seq_len)
    total_steps = resolve_steps(hp, work)
    warmup = int(hp["warmup_steps"])

    model = work.model.to(device)
    core = model
    if distributed:
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [torch.device(device).index] if device.startswith("cuda") else None
        model = DistributedDataParallel(model, device_ids=device_ids)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=float(hp["lr"]), betas=tuple(hp["betas"]),
                                  weight_decay=float(hp["weight_decay"]))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(
        s, total_steps, warmup, hp["schedule"], float(hp["min_lr_ratio"])))
    grad_clip = hp["grad_clip"]

    reset_peak_memory(device)
    model.train()
    assert work.train_batches is not None and work.loss_fn is not None  # Workload.validate checked them
    batches = _cycle(work.train_batches)
    recent: deque[torch.Tensor] = deque(maxlen=max(1, total_steps // 10))
    nonfinite = torch.zeros((), dtype=torch.bool, device=device)
    counted = [0, 0]  # samples, tokens of the timed steps (every step but the first, unless there is one)
    curve = _Curve(total_steps, int(hp["eval_points"]), tensorboard if ctx.rank == 0 else None)
    window_loss, tokens_seen, eval_seconds = torch.zeros((), device=device), 0, 0.0
    synchronize(device)
    started = timed_from = time.perf_counter()
    for step in range(total_steps):
        if step == 1:
            synchronize(device)
            timed_from, counted, eval_seconds = time.perf_counter(), [0, 0], 0.0
        batch = next(batches)
        samples, tokens = count(batch)
        counted = [counted[0] + samples, counted[1] + tokens]
        tokens_seen += tokens
        batch = to_device(batch, device)
        with _autocast(device, hp):
            loss = work.loss_fn(model, batch)
        loss_value = loss.detach().float()
        nonfinite |= ~torch.isfinite(loss_value)
        if ((step + 1) % _DIVERGENCE_CHECK_EVERY == 0 or step + 1 == total_steps) and bool(nonfinite):
            raise DivergedError(f"training loss became NaN or infinite by step {step + 1} of {total_steps}")
        recent.append(loss_value)
        window_loss += loss_value
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, float(grad_clip))
        optimizer.step()
        scheduler.step()
        done = step + 1
        if done % curve.window == 0 or done == total_steps:
            curve.train_point(done, tokens_seen,
                              float(window_loss) / (done - (done - 1) // curve.window * curve.window))
            window_loss.zero_()
        if done in curve.eval_steps:
            with Stopwatch(device) as paused:
                if ctx.rank == 0:
                    core.eval()
                    curve.eval_point(done, tokens_seen,
                                     _evaluate(work, core, work.val_batches, device, hp, count)[0].metrics)
                    core.train()
                if distributed:
                    import torch.distributed as dist

                    dist.barrier()
            eval_seconds += paused.seconds
    synchronize(device)
    finished = time.perf_counter()
    timed_samples, timed_tokens = float(counted[0]), float(counted[1])
    train_seconds = finished - timed_from - eval_seconds

    metrics: dict[str, float] = {"train_steps": total_steps, "train_s": finished - started - eval_seconds,
                                 "train_loss": float(torch.stack(list(recent)).mean())}
    if distributed:
        import torch.distributed as dist

        totals = torch.tensor([timed_samples, timed_tokens], dtype=torch.float64, device=device)
        dist.all_reduce(totals)
        slowest = torch.tensor([train_seconds], dtype=torch.float64, device=device)
        dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
        timed_samples, timed_tokens, train_seconds = float(totals[0]), float(totals[1]), float(slowest)
        sums = _param_checksums(core)
        high, low = sums.clone(), sums.clone()
        dist.all_reduce(high, op=dist.ReduceOp.MAX)
        dist.all_reduce(low, op=dist.ReduceOp.MIN)
        metrics["world_size"] = ctx.world_size
        metrics["ddp_param_max_diff"] = float((high - low).abs().max())
    metrics["train_samples_per_s"] = timed_samples / train_seconds
    metrics["train_tokens_per_s"] = timed_tokens / train_seconds

    if ctx.rank == 0:
        core.eval()
        val = _evaluate(work, core, work.val_batches, device, hp, count)[0]
        curve.eval_point(total_steps, tokens_seen, val.metrics)
        with Stopwatch(device) as eval_time:
            test, counting = _evaluate(work, core, work.test_batches, device, hp, count)
        metrics.update({f"val_{k}": v for k, v in val.metrics.items()})
        metrics.update({f"test_{k}": v for k, v in test.metrics.items()})
        if test.outcomes is not None:
            work.examples = dict(encode_examples("test", test.kind, test.outcomes, test.fingerprint or "",
                                                 test.clusters))
        metrics["eval_s"] = eval_time.seconds
        metrics["infer_samples_per_s"] = counting.samples / eval_time.seconds
        metrics["infer_tokens_per_s"] = counting.tokens / eval_time.seconds
        if work.extra_eval is not None:
            with _autocast(device, hp):
                metrics.update({k: float(v) for k, v in work.extra_eval(core).items()})
    if distributed:
        import torch.distributed as dist

        dist.barrier()
    metrics["peak_mem_bytes"] = peak_memory_bytes(device)
    metrics["params"] = sum(p.numel() for p in core.parameters())
    work.curve = curve.close()
    return metrics

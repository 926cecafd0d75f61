"""Test-only builder ``test-tiny`` (loaded through EA_SUITE_PLUGINS) and helpers that write test task files.

The job classifies random sequences x [N, L, 4] by the sign of their summed first feature with a one-layer
model around a registry attention. Hyperparameters steer it: ``sleep`` (seconds before building),
``inject`` ({"<seq_len>": what}) makes the job at that L fail: ``missing`` (DataMissingError), ``error``,
``oom`` (torch.OutOfMemoryError), ``cpu-oom`` (a real CPU allocation failure: torch asked for 2^60 bytes),
``diverge`` (NaN loss), ``hang`` (sleeps an hour), ``crash`` (the process kills itself with SIGKILL),
``semaphore`` (makes a multiprocessing lock that lives until exit, as tqdm does inside lm-eval, and takes a
second to exit),
``once:<path>`` (an error the first time, when <path> does not exist yet), ``hang-once:<path>`` (hangs the
first time), ``fill:<path>`` (writes <path> until
the disk is full, when it does not exist yet). ``artifact_kb`` writes a file of
that size to the job's artifacts folder after training (atomically, as real jobs save checkpoints).
"""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from suite.attention import build_attention
from suite.data import DataMissingError
from suite.run.artifacts import atomic_folder
from suite.run.builders import BuildContext, Workload, register_builder
from suite.run.hparams import TRAINING, HParam

TESTS_DIR = Path(__file__).resolve().parent
_HELD: list = []  # what a job keeps until its process exits


class TinyModel(nn.Module):
    def __init__(self, attention: str, dim: int = 8) -> None:
        super().__init__()
        self.embed = nn.Linear(4, dim)
        self.attn = build_attention(attention, dim, num_heads=2)
        self.head = nn.Linear(dim, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        return self.head((h + self.attn(h)).mean(dim=1))


def _data(n: int, seq_len: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, seq_len, 4, generator=g)
    return x, (x[:, :, 0].sum(dim=1) > 0).long()


def _batches(x: torch.Tensor, y: torch.Tensor, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(x), batch_size)]


def _evaluate(model: nn.Module, batches) -> dict[str, float]:
    correct = total = 0
    loss = 0.0
    for x, y in batches:
        logits = model(x)
        loss += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(-1) == y).sum())
        total += len(y)
    return {"accuracy": correct / total, "loss": loss / total}


TINY_HPARAMS = (
    *TRAINING,
    HParam("sleep", "float", 0.0, "seconds to sleep before building", low=0),
    HParam("inject", "mapping", None, "{seq_len: fault} to inject"),
    HParam("train_size", "int", 32, "training examples", low=1),
    HParam("substitute", "bool", False, "mark the data as a substitute"),
    HParam("artifact_kb", "int", 0, "KB written to the artifacts folder after training", low=0),
)


@register_builder("test-tiny", TINY_HPARAMS, "a tiny classifier on random data, for tests")
def build_tiny(ctx: BuildContext) -> Workload:
    hp = ctx.hparams
    time.sleep(float(hp.get("sleep", 0)))
    inject = (hp.get("inject") or {}).get(str(ctx.seq_len))
    if inject == "missing":
        raise DataMissingError("tiny data set not found: generate it with `run_suite.py data generate tiny` "
                               "and put it under --data-root")
    if inject == "error":
        raise RuntimeError("injected failure")
    if inject == "oom":
        raise torch.OutOfMemoryError("CUDA out of memory (injected)")
    if inject == "cpu-oom":
        torch.empty(1 << 60, dtype=torch.uint8)
    if inject == "hang":
        time.sleep(3600)
    if isinstance(inject, str) and inject.startswith("hang-once:") and not Path(inject[10:]).exists():
        Path(inject[10:]).write_text("hung once")
        time.sleep(3600)
    if inject == "semaphore":
        import multiprocessing
        from multiprocessing import util

        _HELD.append(multiprocessing.get_context().RLock())
        util.Finalize(None, time.sleep, (1.0,), exitpriority=100)  # exit clean-up that takes a moment, run first
    if inject == "crash":
        os.kill(os.getpid(), signal.SIGKILL)
    if isinstance(inject, str) and inject.startswith("once:") and not Path(inject[5:]).exists():
        Path(inject[5:]).write_text("failed once")
        raise RuntimeError("injected failure (once)")
    if isinstance(inject, str) and inject.startswith("fill:") and not Path(inject[5:]).exists():
        # another process fills the disk under the run (once: not when the file is already there)
        fd = os.open(inject[5:], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            for block in (65536, 4096, 1):  # to the last byte
                try:
                    while os.write(fd, b"\0" * block):
                        pass
                except OSError:
                    pass
        finally:
            os.close(fd)
    x, y = _data(int(hp.get("train_size", 32)), ctx.seq_len, 1000 + ctx.seed)
    shard = slice(ctx.rank, None, ctx.world_size)  # under DDP each rank trains on its own shard
    train = _batches(x[shard], y[shard], int(hp["batch_size"]))
    val = _batches(*_data(16, ctx.seq_len, 7), 8)
    test = _batches(*_data(16, ctx.seq_len, 8), 8)
    model = TinyModel(ctx.attention)

    def loss_fn(model: nn.Module, batch) -> torch.Tensor:
        loss = F.cross_entropy(model(batch[0]), batch[1])
        return loss * float("nan") if inject == "diverge" else loss

    def extra_eval(_model: nn.Module) -> dict[str, float]:
        if hp["artifact_kb"] and ctx.artifacts_dir is not None:
            def save() -> None:
                with atomic_folder(ctx.artifacts_dir / "blob") as folder:
                    (folder / "blob.bin").write_bytes(b"\1" * 1024 * hp["artifact_kb"])

            job.save_artifact("blob", save)
        return {}

    job = Workload(model=model, train_batches=train, loss_fn=loss_fn, val_batches=val, test_batches=test,
                   evaluate=_evaluate, extra_eval=extra_eval,
                   data_info={"source": "tiny-random", "substitute": bool(hp.get("substitute", False))})
    return job


TINY_TASK = """\
name: {name}
family: test
description: tiny test task
builder: test-tiny
data: {{source: tiny-random}}
metric: {{name: accuracy, direction: max}}
seq_len: [8]
attentions: [softmax]
defaults: {{batch_size: 8, lr: 0.01, warmup_steps: 1}}
profiles:
  smoke: {smoke}
  cpu: {{steps: 4}}
  full: {{steps: 4}}
"""


def write_tiny_task(root: Path, name: str = "tiny", smoke: str = "{steps: 3}") -> Path:
    """Write ``root/test/<name>.yaml`` (a test-tiny task) and return the path."""
    path = root / "test" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(TINY_TASK.format(name=name, smoke=smoke))
    return path


def plugin_env(task_root: Path) -> dict[str, str]:
    """Environment for a subprocess that should see the test-tiny builder and the tasks under ``task_root``."""
    env = dict(os.environ)
    env["EA_SUITE_PLUGINS"] = "tiny_jobs"
    env["EA_SUITE_TASKS"] = str(task_root)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS_DIR), env.get("PYTHONPATH")]))
    return env

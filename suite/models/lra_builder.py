"""The ``lra`` builder: one LRA task (suite.data.lra) + the LRA encoder (suite.models.lra) -> a training job.

Task data section: ``{source: lra-<task>, task: listops|text|retrieval|image|pathfinder|pathx}``.
Hyperparameters the builder reads (beyond the harness's own): dim, depth, num_heads, mlp_dim, dropout,
pooling (cls | mean), pos_emb (learned | sinusoidal), num_train / num_eval (examples; default all),
eval_split (val | test). ListOps, Text and Retrieval take L = the job's seq_len as max_len; the pixel tasks
have a fixed L (1024, 1024, 16384) and reject another.
"""
from __future__ import annotations

from typing import Any, Iterator

import torch
import torch.nn.functional as F

from suite.data.sampling import epoch_permutation
from suite.harness.builders import BuildContext, Job, register_builder


class ShuffledBatches:
    """Re-iterable batches of an LRAData split (a fresh seeded permutation per pass; sharded by rank)."""

    def __init__(self, data, batch_size: int, shuffle: bool, seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.data, self.batch_size, self.shuffle, self.seed = data, batch_size, shuffle, seed
        self.rank, self.world_size, self.epoch = rank, world_size, 0

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        n = len(self.data)
        if self.shuffle:
            order = epoch_permutation(n, self.seed, self.epoch)
            self.epoch += 1
        else:
            order = torch.arange(n)
        order = order[self.rank::self.world_size]
        for start in range(0, len(order), self.batch_size):
            yield self.data.batch(order[start:start + self.batch_size])

    def __len__(self) -> int:
        return -(-len(range(self.rank, len(self.data), self.world_size)) // self.batch_size)


def _logits(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    if "tokens2" in batch:
        return model(batch["tokens"], batch["mask"], batch["tokens2"], batch["mask2"])
    return model(batch["tokens"], batch["mask"])


def lra_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return F.cross_entropy(_logits(model, batch), batch["labels"])


def lra_evaluate(model, batches) -> dict[str, float]:
    """Top-1 accuracy and mean cross-entropy over the evaluation batches."""
    correct, total, loss = 0, 0, 0.0
    for batch in batches:
        logits = _logits(model, batch).float()
        loss += F.cross_entropy(logits, batch["labels"], reduction="sum").item()
        correct += (logits.argmax(-1) == batch["labels"]).sum().item()
        total += len(batch["labels"])
    return {"accuracy": correct / max(total, 1), "loss": loss / max(total, 1)}


@register_builder("lra")
def build_lra_job(ctx: BuildContext) -> Job:
    from suite.data.lra import PIXEL_TASKS, load_lra
    from suite.models.lra import LRAClassifier, LRAConfig, LRADualClassifier

    hp: dict[str, Any] = ctx.hparams
    task = ctx.data["task"]
    max_len = None if task in PIXEL_TASKS else ctx.seq_len
    common = dict(data_root=ctx.data_root, max_len=max_len, seed=0, progress=ctx.rank == 0)
    if task in PIXEL_TASKS and ctx.seq_len != PIXEL_TASKS[task] ** 2:
        raise ValueError(f"{ctx.task}: sequences are {PIXEL_TASKS[task] ** 2} pixels long; seq_len "
                         f"{ctx.seq_len} is not available for this task")
    train = load_lra(task, "train", num_examples=hp.get("num_train"), **common)
    evald = load_lra(task, hp.get("eval_split", "val"), num_examples=hp.get("num_eval"), **common)
    cfg = LRAConfig(vocab_size=train.vocab_size, num_classes=train.num_classes, max_len=train.seq_len,
                    dim=int(hp.get("dim", 64)), depth=int(hp.get("depth", 2)), num_heads=int(hp.get("num_heads", 4)),
                    mlp_dim=int(hp.get("mlp_dim", 128)), dropout=float(hp.get("dropout", 0.1)),
                    pooling=str(hp.get("pooling", "cls")), pos_emb=str(hp.get("pos_emb", "learned")))
    model_cls = LRADualClassifier if train.tokens2 is not None else LRAClassifier
    model = model_cls(ctx.attention, cfg)
    batch_size = int(hp["batch_size"])
    train_batches = ShuffledBatches(train, batch_size, True, ctx.seed, ctx.rank, ctx.world_size)
    eval_batches = ShuffledBatches(evald, int(hp.get("eval_batch_size", batch_size)), False, 0)
    docs = 2 if train.tokens2 is not None else 1

    def count_batch(batch: dict[str, torch.Tensor]) -> tuple[int, int]:
        n = len(batch["labels"])
        return n, n * train.seq_len * docs

    info = train.describe()
    info.update(eval_split=evald.split, eval_examples=len(evald), eval_source=evald.source)
    return Job(model=model, train_batches=train_batches, loss_fn=lra_loss, eval_batches=eval_batches,
               evaluate=lra_evaluate, count_batch=count_batch, steps_per_epoch=len(train_batches),
               data_info=info)

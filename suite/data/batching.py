"""One seeded, sharded batcher for every family whose examples sit in memory (ViT arrays, LRA splits).

``SeededBatches(take, size, batch_size, shuffle, seed, rank, world_size, drop_last)`` is re-iterable:

- training (``shuffle``): pass ``p`` (0, 1, ...) visits ``epoch_permutation(size, seed, p)`` (a fresh seeded
  order per pass), keeps every ``world_size``-th example from ``rank`` (DDP sharding), and yields
  ``take(indices)`` per batch; ``drop_last`` leaves out a final partial batch;
- evaluation: every example once, in order (no sharding: rank 0 evaluates).

``take(indices: LongTensor [n]) -> batch`` builds one batch (a tuple or dict of tensors).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch

from suite.data.sampling import epoch_permutation


class SeededBatches:
    """Re-iterable batches ``take(indices)`` over ``size`` examples (module docstring)."""

    def __init__(self, take: Callable[[torch.Tensor], Any], size: int, batch_size: int, shuffle: bool,
                 seed: int = 0, rank: int = 0, world_size: int = 1, drop_last: bool = False) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.take, self.size, self.batch_size, self.shuffle, self.seed = take, size, batch_size, shuffle, seed
        self.rank, self.world_size, self.drop_last, self.epoch = rank, world_size, drop_last, 0

    def _order(self) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.size)
        order = epoch_permutation(self.size, self.seed, self.epoch)
        self.epoch += 1
        return order[self.rank::self.world_size]

    def __iter__(self) -> Iterator[Any]:
        order = self._order()
        stop = len(order) - len(order) % self.batch_size if self.drop_last else len(order)
        for start in range(0, stop, self.batch_size):
            yield self.take(order[start:start + self.batch_size])

    @property
    def num_examples(self) -> int:
        """Examples in this batcher (before sharding)."""
        return self.size

    def __len__(self) -> int:
        n = len(range(self.rank, self.size, self.world_size)) if self.shuffle else self.size
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

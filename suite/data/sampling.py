"""Seeded orders of examples: the fixed subsets and per-pass training orders every builder uses, so that all
families shuffle and subset the same way (and every attention of a job sees the same examples in the same order)."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def seeded_permutation(n: int, seed: int) -> torch.Tensor:
    """A permutation of range(n) (int64 [n]) that depends only on ``seed``."""
    import torch

    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The training order of pass ``epoch`` (0, 1, ...) of a job seeded ``seed``: a fresh permutation per pass."""
    return seeded_permutation(n, seed * 1_000_003 + epoch)

"""The one classifier evaluation of the ViT and LRA families: accuracy and cross-entropy over eval batches."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def evaluate_classifier(model: Any, batches: Iterable[Any],
                        logits_and_labels: Callable[[Any, Any], tuple[torch.Tensor, torch.Tensor]],
                        top5: bool = False) -> dict[str, float]:
    """Top-1 ``accuracy`` (fraction), mean cross-entropy ``loss`` (nats) and, with ``top5``, ``accuracy_top5``.

    ``logits_and_labels(model, batch) -> (logits [B, C], labels int64 [B])``. ValueError when there is no
    example to score.
    """
    import torch.nn.functional as F

    correct: float = 0  # counts; .item() is typed int | float
    correct5: float = 0
    total = 0
    loss = 0.0
    for batch in batches:
        logits, labels = logits_and_labels(model, batch)
        logits = logits.float()
        loss += F.cross_entropy(logits, labels, reduction="sum").item()
        top = logits.topk(min(5, logits.shape[-1]), dim=-1).indices
        correct += (top[:, 0] == labels).sum().item()
        correct5 += (top == labels[:, None]).any(-1).sum().item()
        total += len(labels)
    if total == 0:
        raise ValueError("the evaluation split is empty")
    metrics = {"accuracy": correct / total, "loss": loss / total}
    if top5:
        metrics["accuracy_top5"] = correct5 / total
    return metrics

"""The one classifier evaluation of the ViT and LRA families: accuracy, cross-entropy and each example's outcome."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from suite.run.builders import Evaluation
from suite.run.records import fingerprint

if TYPE_CHECKING:
    import torch


def evaluate_classifier(model: Any, batches: Iterable[Any],
                        logits_and_labels: Callable[[Any, Any], tuple[torch.Tensor, torch.Tensor]],
                        top5: bool = False, clusters_of: Callable[[Any], torch.Tensor | None] | None = None
                        ) -> Evaluation:
    """Top-1 ``accuracy`` (fraction), mean cross-entropy ``loss`` (nats) and, with ``top5``, ``accuracy_top5``;
    per example (in order) whether its top-1 prediction was right, with the labels' fingerprint and, where
    ``clusters_of(batch)`` gives them, the examples' cluster ids.

    ``logits_and_labels(model, batch) -> (logits [B, C], labels int64 [B])``. ValueError when there is no
    example to score.
    """
    import numpy as np
    import torch.nn.functional as F

    correct: list[np.ndarray] = []
    labels_seen: list[np.ndarray] = []
    clusters: list[np.ndarray] = []
    correct5: float = 0
    loss = 0.0
    for batch in batches:
        logits, labels = logits_and_labels(model, batch)
        logits = logits.float()
        loss += F.cross_entropy(logits, labels, reduction="sum").item()
        top = logits.topk(min(5, logits.shape[-1]), dim=-1).indices
        correct.append((top[:, 0] == labels).cpu().numpy())
        correct5 += (top == labels[:, None]).any(-1).sum().item()
        labels_seen.append(labels.cpu().numpy())
        group = clusters_of(batch) if clusters_of is not None else None
        if group is not None:
            clusters.append(group.cpu().numpy())
    total = sum(len(c) for c in correct)
    if total == 0:
        raise ValueError("the evaluation split is empty")
    outcomes = np.concatenate(correct)
    metrics = {"accuracy": float(outcomes.mean()), "loss": loss / total}
    if top5:
        metrics["accuracy_top5"] = correct5 / total
    all_labels = np.concatenate(labels_seen).astype(np.int64)
    return Evaluation(metrics, outcomes, "correct", np.concatenate(clusters) if clusters else None,
                      fingerprint(all_labels))

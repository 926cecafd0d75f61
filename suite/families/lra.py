"""The LRA family (builder ``lra``): one Long Range Arena task (``suite.data.lra``) + the LRA encoder
(``suite.models.lra``) -> a training job.

Probes (``run_suite.py probe TASK``, attention ``probe:<name>``): models without attention trained and evaluated
exactly like the encoder (same data, L, steps and evaluation), to show whether a task is learnable at its
budget: ``LRA_PROBES`` lists them per task (``suite.models.probes``).

Task data section: ``{source: lra-<task>, task: listops|text|retrieval|image|pathfinder|pathx}``. ListOps,
Text and Retrieval take L = the job's seq_len as their maximum length (Retrieval: per document); the pixel
tasks have a fixed L (1024, 1024, 16384) and reject another. Evaluation: ``accuracy`` and mean cross-entropy
``loss`` on the val split (curves, every choice) and once on the test split (``val_*``, ``test_*``), with each
test example's outcome (and its cluster where the data has them: the KJV substitutes).
The model's defaults are ``LRAConfig``'s (one source); ``run_suite.py list --family lra --hparams`` lists every
hyperparameter.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from suite.data.lra import PIXEL_TASKS
from suite.data.lra.status import lra_data_status
from suite.families.classifier import evaluate_classifier
from suite.models.config import LRAConfig
from suite.run.builders import BuildContext, Evaluation, Workload, register_builder
from suite.run.hparams import TRAINING, HParam
from suite.run.pool.estimates import transformer_cost
from suite.run.records import probe_name

if TYPE_CHECKING:
    import torch

_MODEL = LRAConfig(vocab_size=1, num_classes=2, max_len=1)  # the model defaults, declared below from one source

HPARAMS = (
    *TRAINING,
    HParam("dim", "int", _MODEL.dim, "model width", low=1),
    HParam("depth", "int", _MODEL.depth, "encoder blocks", low=1),
    HParam("heads", "int", _MODEL.heads, "attention heads", low=1),
    HParam("mlp_dim", "int", _MODEL.mlp_dim, "hidden width of the blocks' MLP and of the head", low=1),
    HParam("dropout", "float", _MODEL.dropout, "dropout rate", low=0, high=1, high_open=True),
    HParam("pool", "str", _MODEL.pool, "classify from a prepended CLS token or the mean of the tokens",
           choices=("cls", "mean")),
    HParam("pos_emb", "str", _MODEL.pos_emb, "position embedding", choices=("learned", "sinusoidal")),
    HParam("num_train", "int", None, "training examples (a fixed subset; default: all)", low=1),
    HParam("num_val", "int", None, "validation examples (a fixed subset; default: all)", low=1),
    HParam("num_test", "int", None, "test examples (a fixed subset; default: all)", low=1),
)


def _logits_and_labels(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    if "tokens2" in batch:
        return model(batch["tokens"], batch["mask"], batch["tokens2"], batch["mask2"]), batch["labels"]
    return model(batch["tokens"], batch["mask"]), batch["labels"]


def lra_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Cross-entropy of one batch {'tokens', 'mask', 'labels'[, 'tokens2', 'mask2']}."""
    import torch.nn.functional as F

    return F.cross_entropy(*_logits_and_labels(model, batch))


def lra_evaluate(model, batches) -> Evaluation:
    """Top-1 ``accuracy``, mean cross-entropy ``loss`` and each example's outcome (with its cluster) over the
    batches."""
    return evaluate_classifier(model, batches, _logits_and_labels, clusters_of=lambda batch: batch.get("clusters"))


#: training examples of each LRA task's release (for the cost of an epoch)
TRAIN_SIZES = {"listops": 96_000, "text": 25_000, "retrieval": 147_086, "image": 45_000, "pathfinder": 160_000,
               "pathx": 160_000}


def lra_cost(hp: dict[str, Any], data: dict[str, Any], seq_len: int, attention: str) -> tuple[float, float]:
    """Rough (FLOPs, peak bytes) of an LRA job: its steps (Retrieval: two documents per example), evaluations."""
    examples = hp.get("num_train") or TRAIN_SIZES.get(data.get("task", ""), 50_000)
    steps = hp.get("steps") or math.ceil(float(hp.get("epochs") or 1) * examples / hp["batch_size"])
    dims = dict(tokens=seq_len, dim=hp["dim"], depth=hp["depth"], mlp_hidden=hp["mlp_dim"], attention=attention)
    flops, peak = transformer_cost(examples=steps * hp["batch_size"], **dims)
    held_out = (hp.get("num_val") or 2000) * hp["eval_points"] + (hp.get("num_test") or 2000)
    evals, _ = transformer_cost(examples=held_out, train=False, **dims)
    return flops + evals, peak + hp["batch_size"] * seq_len * hp["dim"] * hp["depth"] * 4 * 24


_BOW = "bag of token and hashed-bigram embeddings -> MLP (order beyond pairs lost)"
_TFIDF = ("TF-IDF of token 1-3-grams -> logistic regression (scikit-learn), fit on the training examples; "
          "not trained by steps")
_CNN = "a small ResNet on the pixels as an image (Path-X average-pooled to 32 px)"
#: the probes of each LRA task: name -> what it is
LRA_PROBES = {
    "listops": {"oracle": "ListOps' own stack evaluator on the visible tokens (an expression cut off by L has no "
                          "answer: equal logits for every class)",
                "bow": _BOW, "gru": "one GRU layer read to the last token (order-aware, no tree)"},
    "text": {"bow": _BOW, "tfidf": _TFIDF},
    "retrieval": {"bow": _BOW + "; the pair head reads [u, v, u*v, |u-v|]",
                  "tfidf": _TFIDF + "; a pair is [|a-b|, a*b] of its documents' vectors"},
    "image": {"bow": _BOW, "cnn": _CNN},
    "pathfinder": {"cnn": _CNN},
    "pathx": {"cnn": _CNN},
}


def lra_probes(data: dict[str, Any]) -> dict[str, str]:
    """The probes of the task in ``data`` (``LRA_PROBES``)."""
    return dict(LRA_PROBES.get(data.get("task", ""), {}))


def tfidf_probe(train, val, test) -> dict[str, float]:
    """Fit TF-IDF (token 1-3-grams, sublinear tf) + logistic regression on ``train`` and score ``val`` and ``test``
    (LRA data sets: tokens [N, L], mask, labels, and for two documents tokens2, mask2). Returns ``val_``/``test_``
    ``accuracy`` and mean cross-entropy ``loss`` (nats), the fit's seconds and vocabulary size."""
    import time

    import numpy as np
    from scipy.sparse import hstack
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss

    def docs(tokens, mask) -> list[str]:
        return [" ".join(map(str, t[m].tolist())) for t, m in zip(tokens, mask)]

    start = time.perf_counter()
    vectorizer = TfidfVectorizer(analyzer="word", token_pattern=r"\S+", ngram_range=(1, 3), min_df=2,
                                 max_features=200_000, sublinear_tf=True)
    pair = train.tokens2 is not None
    first = docs(train.tokens, train.mask)
    vectorizer.fit(first + (docs(train.tokens2, train.mask2) if pair else []))

    def features(data):
        a = vectorizer.transform(docs(data.tokens, data.mask))
        if not pair:
            return a
        b = vectorizer.transform(docs(data.tokens2, data.mask2))
        return hstack([abs(a - b), a.multiply(b)]).tocsr()

    model = LogisticRegression(max_iter=2000, C=4.0)
    model.fit(features(train), train.labels.numpy())
    metrics = {"fit_s": time.perf_counter() - start, "vocabulary": float(len(vectorizer.vocabulary_)),
               "train_examples": float(len(train))}
    for split, held_out in (("val", val), ("test", test)):
        x_eval, y_eval = features(held_out), held_out.labels.numpy()
        proba = model.predict_proba(x_eval)
        metrics[f"{split}_accuracy"] = float((model.classes_[proba.argmax(1)] == y_eval).mean())
        metrics[f"{split}_loss"] = float(log_loss(y_eval, proba, labels=model.classes_))
        metrics[f"{split}_examples"] = float(len(y_eval))
        metrics[f"{split}_chance"] = float(np.bincount(y_eval).max() / len(y_eval))
    return metrics


def check_probe(name: str, task: str) -> None:
    """ValueError, naming the valid ones, unless ``name`` is a probe of ``task``."""
    if name not in LRA_PROBES.get(task, {}):
        raise ValueError(f"lra-{task} has no probe {name!r}; its probes: {', '.join(LRA_PROBES.get(task, {}))}")


def build_probe(name: str, task: str, vocab_size: int, num_classes: int, dual: bool) -> torch.nn.Module:
    """The probe model ``name`` of ``task`` (ValueError naming the valid ones); ``tfidf`` is not a model
    (``tfidf_probe``)."""
    from suite.models.probes import BagOfTokens, GRUProbe, OracleProbe, PixelProbe

    check_probe(name, task)
    if name == "oracle":
        from suite.data.lra.listops import evaluate_ids

        return OracleProbe(evaluate_ids, num_classes)
    if name == "cnn":
        return PixelProbe(PIXEL_TASKS[task], num_classes)
    return (BagOfTokens if name == "bow" else GRUProbe)(vocab_size, num_classes, dual=dual)


@register_builder("lra", HPARAMS, "a Long Range Arena task with the LRA Transformer encoder (dual for Retrieval)",
                  rehearsal={"steps": 2, "batch_size": 4, "eval_batch_size": 4, "num_train": 8, "num_val": 8,
                             "num_test": 8},
                  data_status=lambda data, root: lra_data_status(data["task"], root), cost=lra_cost,
                  probes=lra_probes)
def build_lra_job(ctx: BuildContext) -> Workload:
    from suite.data.batching import SeededBatches
    from suite.data.lra import load_lra
    from suite.models.lra import LRAClassifier, LRADualClassifier

    hp: dict[str, Any] = ctx.hparams
    task = ctx.data["task"]
    max_len = None if task in PIXEL_TASKS else ctx.seq_len
    common: dict[str, Any] = dict(data_root=ctx.data_root, max_len=max_len, seed=0, progress=ctx.rank == 0)
    if task in PIXEL_TASKS and ctx.seq_len != PIXEL_TASKS[task] ** 2:
        raise ValueError(f"{ctx.task}: sequences are {PIXEL_TASKS[task] ** 2} pixels long; seq_len "
                         f"{ctx.seq_len} is not available for this task")
    train = load_lra(task, "train", num_examples=hp.get("num_train"), **common)
    val = load_lra(task, "val", num_examples=hp.get("num_val"), **common)
    test = load_lra(task, "test", num_examples=hp.get("num_test"), **common)
    cfg = LRAConfig(vocab_size=train.vocab_size, num_classes=train.num_classes, max_len=train.seq_len,
                    dim=hp["dim"], depth=hp["depth"], heads=hp["heads"], mlp_dim=hp["mlp_dim"],
                    dropout=float(hp["dropout"]), pool=hp["pool"], pos_emb=hp["pos_emb"])
    info = train.describe()
    info.update(val_examples=len(val), test_examples=len(test), test_source=test.source)
    probe = probe_name(ctx.attention)
    if probe == "tfidf":
        check_probe("tfidf", task)
        return Workload(measure=lambda: tfidf_probe(train, val, test), data_info=info)
    if probe is not None:
        model = build_probe(probe, task, train.vocab_size, train.num_classes, train.tokens2 is not None)
    else:
        model = (LRADualClassifier if train.tokens2 is not None else LRAClassifier)(ctx.attention, cfg)
    batch_size = int(hp["batch_size"])
    train_batches = SeededBatches(train.batch, len(train), batch_size, True, ctx.seed, ctx.rank, ctx.world_size)
    eval_batch_size = int(hp.get("eval_batch_size") or batch_size)
    val_batches = SeededBatches(val.batch, len(val), eval_batch_size, False)
    test_batches = SeededBatches(test.batch, len(test), eval_batch_size, False)
    docs = 2 if train.tokens2 is not None else 1

    def count_batch(batch: dict[str, torch.Tensor]) -> tuple[int, int]:
        n = len(batch["labels"])
        return n, n * train.seq_len * docs

    return Workload(model=model, train_batches=train_batches, loss_fn=lra_loss, val_batches=val_batches,
                    test_batches=test_batches, evaluate=lra_evaluate, count_batch=count_batch,
                    steps_per_epoch=len(train_batches), data_info=info)

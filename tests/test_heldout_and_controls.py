"""Validation for every choice and test once; per-example outcomes in the records; evaluation sets large enough
to measure a point; and the QK-norm control (softmax, linear, based, retention with EA's per-head RMSNorm)."""
import numpy as np
import pytest
import torch
from tiny_jobs import build_tiny

from suite.attention import build_attention, timm_attn_layer
from suite.run.builders import BuildContext, Evaluation
from suite.run.job import seed_everything
from suite.run.records import decode_examples, encode_examples, fingerprint, make_record, split_metric
from suite.run.train import train_and_evaluate
from suite.tasks import load_tasks

QK_NORM_ATTENTIONS = ("ea", "softmax", "linear", "based", "retention")


# -- the QK-norm control ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", QK_NORM_ATTENTIONS)
def test_qk_norm_is_a_per_head_rmsnorm_with_a_learnable_gain(name):
    on = build_attention(f"{name}:qk_norm=true", 32, 4)
    off = build_attention(f"{name}:qk_norm=false", 32, 4)
    assert isinstance(on.q_norm, torch.nn.RMSNorm) and isinstance(on.k_norm, torch.nn.RMSNorm)
    assert on.q_norm.weight.requires_grad and torch.equal(on.q_norm.weight, torch.ones_like(on.q_norm.weight))
    assert isinstance(off.q_norm, torch.nn.Identity) and isinstance(off.k_norm, torch.nn.Identity)
    # the norm acts: scaling the input does not change q and k after it (RMSNorm is scale invariant)
    x = torch.randn(2, 16, 32)
    q1, k1, _ = on.project_qkv(x)
    with torch.no_grad():
        for layer in (getattr(on, "qkv", None), getattr(on, "q_proj", None), getattr(on, "k_proj", None)):
            if layer is not None:
                layer.weight.mul_(3.0)
                if layer.bias is not None:
                    layer.bias.mul_(3.0)
    q2, k2, _ = on.project_qkv(x)
    torch.testing.assert_close(q1, q2, rtol=1e-4, atol=1e-4)
    assert on(x).shape == (2, 16, 32)


def test_softmax_stays_without_qk_norm_by_default_and_ea_with_it():
    assert isinstance(build_attention("softmax", 32, 4).q_norm, torch.nn.Identity)
    assert isinstance(build_attention("ea", 32, 4).q_norm, torch.nn.RMSNorm)


def test_timm_maps_its_qk_norm_to_the_attentions_own():
    assert timm_attn_layer("softmax:qk_norm=true").timm_args["qk_norm"] is True
    layer = timm_attn_layer("softmax")(32, num_heads=2, qk_norm=True)
    assert isinstance(layer.inner.q_norm, torch.nn.RMSNorm)
    assert isinstance(timm_attn_layer("softmax")(32, num_heads=2).inner.q_norm, torch.nn.Identity)


@pytest.mark.parametrize("task", ["vit-fashion-mnist", "vit-cifar10", "lra-listops", "lra-text", "lra-retrieval",
                                  "lra-image", "lm-kjv"])
def test_quality_tasks_hold_the_2x2_of_attention_and_qk_norm(task):
    attentions = load_tasks()[task].attentions
    assert {"ea", "ea:qk_norm=false", "softmax", "softmax:qk_norm=true"} <= set(attentions)


# -- val for every choice, test once ---------------------------------------------------------------------------

def _ctx(**hparams):
    hp = {"batch_size": 8, "lr": 0.01, "steps": 4, "eval_points": 2, **hparams}
    return BuildContext(task="tiny", family="test", attention="softmax", seq_len=8, seed=0, device="cpu",
                        hparams=hp, data={"source": "tiny-random"})


def test_the_loop_reads_val_for_the_curve_and_test_once_with_each_examples_outcome():
    ctx = _ctx()
    seed_everything(0)
    job = build_tiny(ctx)
    seen = []

    def evaluate(model, batches):
        pairs = list(batches)
        labels = torch.cat([y for _, y in pairs])
        seen.append(int(labels.sum()))
        correct = torch.cat([model(x).argmax(-1) == y for x, y in pairs]).numpy()
        return Evaluation({"accuracy": float(correct.mean())}, correct, "correct", None,
                          fingerprint(labels.numpy()))

    job.evaluate = evaluate
    val_sum = int(torch.cat([y for _, y in job.val_batches]).sum())
    test_sum = int(torch.cat([y for _, y in job.test_batches]).sum())
    metrics = train_and_evaluate(job, ctx)
    assert seen == [val_sum, val_sum, test_sum]  # mid-run val, final val, then the test split once
    assert set(metrics) >= {"val_accuracy", "test_accuracy"} and "accuracy" not in metrics
    assert job.curve["split"] == "val" and job.curve["eval"][-1]["accuracy"] == metrics["val_accuracy"]
    values, clusters = decode_examples(job.examples)
    assert job.examples["split"] == "test" and len(values) == 16 and clusters is None
    assert values.mean() == pytest.approx(metrics["test_accuracy"])


def test_per_example_outcomes_round_trip_through_a_record():
    correct = np.random.default_rng(0).random(1001) < 0.7
    clusters = np.arange(1001) // 7
    examples = encode_examples("test", "correct", correct, "abc", clusters)
    record = make_record(key="k", task="t", family="f", attention="ea", profile="cpu", seed=0, seq_len=1,
                         status="ok", error=None, metrics={"test_accuracy": 0.7}, config={}, data={}, env={},
                         started_at="", wall_s=1.0, examples=examples)
    values, groups = decode_examples(record["examples"])
    assert np.array_equal(values, correct) and np.array_equal(groups, clusters)
    assert len(examples["values"]) < 200  # one bit per example
    losses = np.random.default_rng(1).random(256)
    values, _ = decode_examples(encode_examples("test", "loss", losses, "x"))
    assert np.allclose(values, losses.astype(np.float32))
    assert "examples" not in make_record(**{**record, "examples": None})
    with pytest.raises(ValueError, match="malformed"):
        decode_examples({**examples, "values": "%%%"})


def test_old_records_keep_the_split_their_metric_was_measured_on():
    def record(family, metrics, hparams=None):
        return {"family": family, "metrics": metrics, "config": {"hparams": hparams or {}}}

    assert split_metric(record("lra", {"accuracy": 0.5}, {"eval_split": "test"}), "accuracy") == (0.5, "test")
    assert split_metric(record("lra", {"accuracy": 0.5}, {"eval_split": "val"}), "accuracy") == (None, "test")
    assert split_metric(record("vit", {"accuracy": 0.5}), "accuracy") == (0.5, "test")
    old_lm = record("lm", {"bpb": 3.1, "test_bpb": 3.2})
    assert split_metric(old_lm, "bpb") == (3.2, "test") and split_metric(old_lm, "bpb", "val") == (3.1, "val")
    new = record("lra", {"val_accuracy": 0.6, "test_accuracy": 0.5, "train_samples_per_s": 9.0})
    assert split_metric(new, "train_samples_per_s") == (9.0, None)
    assert split_metric(record("kernels", {"fwd_ms": 1.0}), "fwd_ms") == (1.0, None)


# -- the evaluation sets ---------------------------------------------------------------------------------------

def test_the_text_substitute_has_over_1500_test_segments_clustered_by_chapter():
    from suite.data.lra import load_lra

    test = load_lra("text", "test", max_len=256)
    train = load_lra("text", "train", max_len=256, num_examples=2000)
    assert len(test) >= 1500 and test.clusters is not None and len(test.clusters) == len(test)
    assert set(test.clusters.tolist()).isdisjoint(train.clusters.tolist())  # chapters never cross splits
    assert (test.mask.sum(1) <= 256).all() and test.info["clusters"].startswith("chapters")


def test_the_retrieval_substitute_has_2000_test_pairs_from_chapters_disjoint_from_training():
    from suite.data.lra import kjv, load_lra

    test = load_lra("retrieval", "test", max_len=256)
    assert len(test) >= 2000 and test.clusters is not None and float(test.labels.float().mean()) == 0.5
    chapters = {split: {kjv.split_segments(split)[s][0] for a, b, _, _ in kjv.kjv_pairs(split) for s in (a, b)}
                for split in ("train", "val", "test")}
    assert chapters["test"].isdisjoint(chapters["train"]) and chapters["test"].isdisjoint(chapters["val"])
    # a pair's two segments come from one block of books, so pairs of two blocks share no chapter
    blocks = kjv.book_blocks("test")
    every = kjv.kjv_chapters()
    for a, b, _, block in kjv.kjv_pairs("test")[:500]:
        pieces = kjv.split_segments("test")
        assert blocks[every[pieces[a][0]].book] == blocks[every[pieces[b][0]].book] == block


def test_segments_keep_words_whole_and_lose_only_the_cut_spaces():
    from suite.data.lra.kjv import segments

    text = b"In the beginning God created the heaven and the earth. And the earth was without form"
    pieces = segments(text, 24)
    assert all(len(p) <= 24 for p in pieces) and b" ".join(pieces) == text
    assert all(not p.startswith(b" ") and not p.endswith(b" ") for p in pieces)


def test_vit_validation_is_held_out_of_training_and_never_trained_on():
    from suite.data.images import holdout

    train, val = holdout(1000, 100)
    assert len(val) == 100 and len(train) == 900 and not set(train) & set(val)
    assert holdout(1000, 100) == (train, val)  # the same for every job
    with pytest.raises(ValueError, match="cannot hold out 10 of 10"):
        holdout(10, 10)


def test_imdb_val_comes_out_of_the_training_reviews_not_the_test_split():
    from suite.data.lra import imdb

    assert imdb.SPLIT_DIRS["val"] == "train"
    order = {split: set(imdb._shuffled(25_000, split).tolist()) for split in ("train", "val")}
    assert len(order["val"]) == imdb.VAL_SIZE and not order["train"] & order["val"]

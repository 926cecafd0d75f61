"""Learnability probes: the models, ListOps' evaluator on what a model sees, and ``run_suite.py probe``."""
import json
import random

import pytest
import torch

from suite.cli import main
from suite.data.lra.listops import encode_rows, evaluate_ids, iter_unique_examples
from suite.families.lra import LRA_PROBES, build_probe
from suite.models.probes import BagOfTokens, GRUProbe, OracleProbe, PixelProbe


def _rows(n, min_length=60, max_length=200, seed=3):
    stream = iter_unique_examples(random.Random(seed), min_length=min_length, max_length=max_length)
    return [next(stream) for _ in range(n)]


def test_listops_evaluator_gets_every_complete_expression_right_and_refuses_a_cut_one():
    rows = _rows(40)
    tokens, mask, labels = encode_rows(rows, max_len=2000)
    assert [evaluate_ids(t[m].tolist()) for t, m in zip(tokens, mask)] == labels.tolist()
    short, short_mask, _ = encode_rows(rows, max_len=10)  # every expression is longer than 10 tokens
    assert all(evaluate_ids(t[m].tolist()) is None for t, m in zip(short, short_mask))


def test_oracle_probe_answers_what_the_visible_tokens_determine():
    rows = _rows(8)
    tokens, mask, labels = encode_rows(rows, max_len=2000)
    probe = OracleProbe(evaluate_ids, 10)
    assert (probe(tokens, mask).argmax(1) == labels).all()
    probe(tokens, mask).sum().backward()  # one learnable scale, so the training loop can run it
    assert probe.scale.grad is not None
    cut, cut_mask, _ = encode_rows(rows, max_len=10)
    assert (probe(cut, cut_mask) == 0).all()  # no answer: equal logits, never a guess from the generator


def test_bag_of_tokens_ignores_padding_and_reads_two_documents():
    torch.manual_seed(0)
    model = BagOfTokens(16, 3, dim=8, dual=True)
    tokens = torch.randint(1, 16, (2, 10))
    mask = torch.ones(2, 10, dtype=torch.bool)
    padded = torch.cat([tokens, torch.full((2, 5), 7)], 1)  # whatever the padded positions hold
    padded_mask = torch.cat([mask, torch.zeros(2, 5, dtype=torch.bool)], 1)
    out = model(tokens, mask, tokens, mask)
    assert out.shape == (2, 3)
    torch.testing.assert_close(model(padded, padded_mask, tokens, mask), out)


def test_gru_probe_reads_the_state_at_the_last_real_token():
    torch.manual_seed(0)
    model = GRUProbe(16, 4, dim=8, hidden=16)
    tokens = torch.randint(1, 16, (3, 12))
    mask = torch.ones(3, 12, dtype=torch.bool)
    padded = torch.cat([tokens, torch.randint(1, 16, (3, 4))], 1)
    padded_mask = torch.cat([mask, torch.zeros(3, 4, dtype=torch.bool)], 1)
    torch.testing.assert_close(model(padded, padded_mask), model(tokens, mask))


@pytest.mark.parametrize("side", [32, 128])
def test_pixel_probe_sees_the_pixels_as_an_image_pooled_to_32_px(side):
    model = PixelProbe(side, 2, width=4)
    tokens = torch.randint(0, 256, (2, side * side))
    out = model(tokens, torch.ones_like(tokens, dtype=torch.bool))
    assert out.shape == (2, 2) and model.pool == side // 32


def test_every_lra_task_has_a_probe_and_an_unknown_one_is_refused():
    assert set(LRA_PROBES) == {"listops", "text", "retrieval", "image", "pathfinder", "pathx"}
    assert all(LRA_PROBES.values())
    with pytest.raises(ValueError, match="its probes: oracle, bow, gru"):
        build_probe("cnn", "listops", 16, 10, False)


@pytest.mark.parametrize("argv, words", [
    (["probe", "lra-listops", "--probe", "nope"], "not a probe of lra-listops; its probes: oracle, bow, gru"),
    (["probe", "lra-listops", "--attn", "ea"], "not attentions"),
    (["probe", "lm-kjv"], "has no probes"),
    (["probe", "no-such-task"], "no-such-task"),
])
def test_probe_bad_input_is_one_line_and_exit_2(capsys, tmp_path, argv, words):
    assert main(argv + ["--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err
    assert not (tmp_path / "run").exists()


def test_probe_runs_the_tasks_probes_as_recorded_jobs_that_compare_labels(capsys, tmp_path):
    out = tmp_path / "run"
    assert main(["probe", "lra-listops", "--profile", "smoke", "--out", str(out)]) == 0
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert sorted(r["attention"] for r in records) == ["probe:bow", "probe:gru", "probe:oracle"]
    assert all(r["status"] == "ok" and "test_accuracy" in r["metrics"] for r in records)
    # the smoke profile's L = 128 cuts every ListOps expression: the oracle cannot answer any of them
    oracle = next(r for r in records if r["attention"] == "probe:oracle")
    assert oracle["seq_len"] == 128
    capsys.readouterr()
    assert main(["compare", str(out), "--format", "markdown"]) == 0
    assert "probe:oracle (probe)" in capsys.readouterr().out


def test_tfidf_probe_separates_pairs_that_share_their_words_from_pairs_that_do_not():
    from suite.data.lra import LRAData
    from suite.families.lra import tfidf_probe

    gen = torch.Generator().manual_seed(0)

    def pairs(n):
        a = torch.randint(1, 200, (n, 40), generator=gen)
        labels = torch.arange(n) % 2
        other = torch.randint(1, 200, (n, 40), generator=gen)
        b = torch.where(labels[:, None] == 1, a[:, torch.randperm(40, generator=gen)], other)
        mask = torch.ones(n, 40, dtype=torch.bool)
        return LRAData(task="retrieval", split="train", tokens=a, mask=mask, labels=labels, num_classes=2,
                       seq_len=40, vocab_size=200, pad_id=0, source="test", substitute=False, generated=True,
                       tokens2=b, mask2=mask.clone())

    metrics = tfidf_probe(pairs(200), pairs(100), pairs(100))
    assert metrics["test_accuracy"] > 0.9 and metrics["test_chance"] == 0.5 and metrics["val_accuracy"] > 0.9


def test_tfidf_probe_runs_as_a_recorded_job(tmp_path):
    out = tmp_path / "run"
    assert main(["probe", "lra-text", "--probe", "tfidf", "--profile", "smoke", "--out", str(out)]) == 0
    (record,) = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert record["attention"] == "probe:tfidf" and record["status"] == "ok"
    assert 0 <= record["metrics"]["test_accuracy"] <= 1 and record["metrics"]["train_examples"] > 0

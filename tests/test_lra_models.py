"""LRA models and the ``lra`` builder: padding reaches the attention, each task's model learns on a fixture."""
import pytest
import torch

from suite.families.lra import build_lra_job, lra_evaluate, lra_loss
from suite.models.config import LRAConfig
from suite.models.lra import LRAClassifier, LRADualClassifier
from suite.run.builders import BuildContext


def _cfg(**kw):
    base = dict(vocab_size=20, num_classes=3, max_len=24, dim=16, depth=1, heads=2, mlp_dim=32, dropout=0.0)
    base.update(kw)
    return LRAConfig(**base)


@pytest.mark.parametrize("pool", ["cls", "mean"])
@pytest.mark.parametrize("attention", ["ea", "softmax"])
def test_padded_tokens_do_not_change_the_prediction(attention, pool):
    torch.manual_seed(0)
    model = LRAClassifier(attention, _cfg(pool=pool, pos_emb="sinusoidal")).eval()
    tokens = torch.randint(1, 20, (2, 24))
    mask = torch.ones(2, 24, dtype=torch.bool)
    mask[:, 15:] = False
    other = tokens.clone()
    other[:, 15:] = torch.randint(1, 20, (2, 9))
    assert torch.allclose(model(tokens, mask), model(other, mask), atol=1e-5)


def _overfit(model, batch, steps=40):
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(steps):
        loss = lra_loss(model, batch)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return first, loss.item()


def test_single_encoder_learns_a_fixture_batch():
    torch.manual_seed(0)
    batch = {"tokens": torch.randint(1, 20, (8, 24)), "mask": torch.ones(8, 24, dtype=torch.bool),
             "labels": torch.randint(0, 3, (8,))}
    first, last = _overfit(LRAClassifier("ea", _cfg()), batch)
    assert last < 0.5 * first


def test_dual_encoder_learns_a_fixture_batch_and_shares_weights():
    torch.manual_seed(0)
    model = LRADualClassifier("ea", _cfg(num_classes=2))
    assert not hasattr(model, "encoder2")  # one encoder for both documents
    batch = {"tokens": torch.randint(1, 20, (8, 24)), "mask": torch.ones(8, 24, dtype=torch.bool),
             "tokens2": torch.randint(1, 20, (8, 24)), "mask2": torch.ones(8, 24, dtype=torch.bool),
             "labels": torch.randint(0, 2, (8,))}
    first, last = _overfit(model, batch)
    assert last < 0.5 * first


def _ctx(task, seq_len, tmp_path, **hp):
    hparams = dict(batch_size=4, dim=16, depth=1, heads=2, mlp_dim=32, num_train=12, num_val=6, num_test=6, dropout=0.0)
    hparams.update(hp)
    return BuildContext(task=f"lra-{task}", family="lra", attention="ea", seq_len=seq_len, seed=0, device="cpu",
                        hparams=hparams, data={"source": f"lra-{task}", "task": task}, data_root=tmp_path)


def test_builder_trains_listops_from_a_release_fixture(tmp_path, monkeypatch):
    monkeypatch.setenv("EA_SUITE_CACHE", str(tmp_path / "cache"))
    rows = ["Source\tTarget"] + ["( ( [MAX 2 ) 9 ) ] )\t9", "( ( [MIN 4 ) 1 ) ] )\t1", "( ( [SM 3 ) 4 ) ] )\t7"] * 4
    release = tmp_path / "lra_release" / "listops-1000"
    release.mkdir(parents=True)
    for split in ("train", "val", "test"):
        (release / f"basic_{split}.tsv").write_text("\n".join(rows) + "\n")
    job = build_lra_job(_ctx("listops", 16, tmp_path))
    assert job.data_info["substitute"] is False and "generated" in job.data_info and not job.data_info["generated"]
    batch = next(iter(job.train_batches))
    assert batch["tokens"].shape == (4, 16) and batch["mask"][:, 7:].sum() == 0  # 7 tokens, then padding
    first, last = _overfit(job.model, batch)
    assert last < 0.5 * first
    result = lra_evaluate(job.model, job.test_batches)
    assert 0.0 <= result.metrics["accuracy"] <= 1.0 and result.metrics["loss"] > 0
    assert result.kind == "correct" and len(result.outcomes) == 6
    assert result.outcomes.mean() == result.metrics["accuracy"]


def test_builder_rejects_a_length_the_pixel_task_does_not_have(tmp_path):
    with pytest.raises(ValueError, match="1024 pixels"):
        build_lra_job(_ctx("pathfinder", 512, tmp_path))


def test_builder_counts_both_documents_for_retrieval_throughput(tmp_path):
    tsv = tmp_path / "lra_release" / "tsv_data"
    tsv.mkdir(parents=True)
    line = "1.0\tp1\tp2\tabc def\tghi jkl\n0.0\tp3\tp4\txyz\tuvw\n"
    for split in ("train", "eval", "test"):
        (tsv / f"new_aan_pairs.{split}.tsv").write_text(line * 4)
    job = build_lra_job(_ctx("retrieval", 12, tmp_path))
    batch = next(iter(job.train_batches))
    assert job.count_batch(batch) == (4, 4 * 12 * 2)
    assert isinstance(job.model, LRADualClassifier)
    assert lra_loss(job.model, batch).item() > 0

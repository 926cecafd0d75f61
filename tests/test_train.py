"""The one training loop: schedule, metrics, seeding, divergence, epochs."""
import math

import pytest
from tiny_jobs import TinyModel, build_tiny

from suite.run.builders import BuildContext
from suite.run.job import seed_everything
from suite.run.train import DivergedError, lr_factor, resolve_steps, train_and_evaluate

DESIGN_METRICS = {"val_accuracy", "val_loss", "test_accuracy", "test_loss", "train_loss", "train_samples_per_s",
                  "train_tokens_per_s", "infer_samples_per_s", "infer_tokens_per_s", "peak_mem_bytes", "params",
                  "train_steps", "train_s", "eval_s"}


def context(seq_len=8, seed=0, **hparams):
    hp = {"batch_size": 8, "lr": 0.01, "steps": 3, **hparams}
    return BuildContext(task="tiny", family="test", attention="softmax", seq_len=seq_len, seed=seed, device="cpu",
                        hparams=hp, data={"source": "tiny-random"})


def run(ctx):
    seed_everything(ctx.seed)
    return train_and_evaluate(build_tiny(ctx), ctx)


def tiny_job(**hparams):
    ctx = context(**hparams)
    seed_everything(ctx.seed)
    return build_tiny(ctx), ctx


def test_lr_schedule_warms_up_linearly_then_decays_to_the_floor():
    assert [lr_factor(s, 10, 4) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(4, 10, 4) == pytest.approx(1.0)
    assert lr_factor(10, 10, 4, "cosine", 0.1) == pytest.approx(0.1)
    assert lr_factor(7, 10, 4, "cosine") == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor(7, 10, 4, "linear") == pytest.approx(0.5)
    assert lr_factor(9, 10, 0, "constant") == 1.0


def test_a_job_reports_task_metrics_throughput_memory_and_params():
    metrics = run(context())
    assert set(metrics) >= DESIGN_METRICS
    assert metrics["train_steps"] == 3
    assert metrics["train_tokens_per_s"] == pytest.approx(8 * metrics["train_samples_per_s"])
    assert metrics["infer_tokens_per_s"] == pytest.approx(8 * metrics["infer_samples_per_s"])
    assert metrics["params"] == sum(p.numel() for p in TinyModel("softmax").parameters()) > 4 * 8 + 8 * 2
    assert metrics["peak_mem_bytes"] > 10_000_000  # CPU: the process's peak RSS, torch included
    assert 0.0 <= metrics["test_accuracy"] <= 1.0


def test_same_seed_gives_the_same_result_and_another_seed_does_not():
    first, again, other = run(context(seed=3)), run(context(seed=3)), run(context(seed=4))
    assert first["train_loss"] == again["train_loss"] and first["test_loss"] == again["test_loss"]
    assert first["train_loss"] != other["train_loss"]


def test_training_lowers_the_loss():
    before = run(context(steps=1, lr=1e-9))
    after = run(context(steps=60, lr=0.03, train_size=64))
    assert after["val_loss"] < before["val_loss"] - 0.05


def test_nan_loss_ends_the_job_as_diverged():
    with pytest.raises(DivergedError, match="NaN or infinite by step 3 of 3"):
        run(context(inject={"8": "diverge"}))


def test_epochs_become_steps_from_the_number_of_batches():
    ctx = context(train_size=32, batch_size=8)
    job = build_tiny(ctx)
    assert resolve_steps({"epochs": 2}, job) == 8
    assert resolve_steps({"epochs": 0.5}, job) == 2
    with pytest.raises(ValueError, match="neither steps nor epochs"):
        resolve_steps({}, job)


def test_training_leaves_a_bounded_learning_curve_and_keeps_evaluation_out_of_the_timing(tmp_path):
    job, ctx = tiny_job(steps=250, eval_points=5)
    metrics = train_and_evaluate(job, ctx)
    curve = job.curve
    assert 50 <= len(curve["train"]) <= 100 and curve["train"][-1]["step"] == 250  # at most 100 points
    assert [p["step"] for p in curve["eval"]] == [50, 100, 150, 200, 250]
    assert curve["split"] == "val"
    assert curve["eval"][-1]["accuracy"] == metrics["val_accuracy"]  # the last point is the final validation
    tokens = [p["tokens"] for p in curve["train"]]
    assert tokens == sorted(tokens) and tokens[-1] == 250 * 8 * 8  # batch 8 x L 8
    assert all(set(p) >= {"step", "tokens", "loss"} for p in curve["train"])


def test_tensorboard_receives_the_curve_as_it_trains(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    job, ctx = tiny_job(steps=20, eval_points=2)
    train_and_evaluate(job, ctx, tensorboard=tmp_path / "tb")
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert {"train/loss", "eval/accuracy", "eval/loss"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("eval/accuracy")] == [10, 20]

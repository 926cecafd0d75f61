"""The suite runner: outcome classification, isolation of failures, resume after a kill, Ctrl-C."""
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from rich.console import Console

from suite.errors import UsageError
from suite.harness.execute import JobSpec, run_job
from suite.harness.records import job_slug, read_records
from suite.harness.runner import plan_jobs, run_jobs
from suite.tasks import load_task_file
from tiny_jobs import plugin_env, write_tiny_task

RUN_SUITE = Path(__file__).resolve().parents[1] / "run_suite.py"


@pytest.fixture
def tiny_plugins(monkeypatch):
    monkeypatch.setenv("EA_SUITE_PLUGINS", "tiny_jobs")


def tiny_jobs_for(tmp_path, smoke, seq_lens, name="tiny"):
    task = load_task_file(write_tiny_task(tmp_path / "tasks", name=name, smoke=smoke))
    return plan_jobs([task], "smoke", seq_lens=seq_lens)


def quiet():
    return Console(file=open(os.devnull, "w"))


def spec_with(**config_changes):
    config = {"builder": "test-tiny", "metric": "accuracy", "direction": "max", "data": {"source": "tiny-random"},
              "hparams": {"batch_size": 8, "steps": 2, **config_changes.pop("hparams", {})}, **config_changes}
    return JobSpec("tiny", "test", "softmax", "smoke", 0, 8, config, "k")


@pytest.mark.parametrize("inject,status,error", [
    (None, "ok", None),
    ("missing", "skipped", "tiny data set not found"),
    ("error", "error", "RuntimeError: injected failure"),
    ("oom", "oom", "OutOfMemoryError: CUDA out of memory (injected)"),
    ("diverge", "diverged", "DivergedError: training loss became NaN"),
])
def test_job_outcome_is_classified_by_what_went_wrong(inject, status, error):
    outcome = run_job(spec_with(hparams={"inject": {"8": inject}}), "cpu")
    assert outcome["status"] == status
    assert (outcome["error"] or "").startswith(error or "")
    if status == "ok":
        assert outcome["data"] == {"source": "tiny-random", "substitute": False}
        assert outcome["env"]["backends"] == {"softmax": outcome["env"]["backends"]["softmax"]}
        assert outcome["env"]["device"] == "cpu" and outcome["env"]["device_name"]
    if status in ("error", "oom", "diverged"):
        assert "Traceback" in outcome["traceback"]


def test_job_without_its_main_metric_is_an_error():
    outcome = run_job(spec_with(metric="bpb"), "cpu")
    assert outcome["status"] == "error"
    assert "lack the task's main metric 'bpb'" in outcome["error"]


def test_plan_expands_lengths_seeds_and_attentions_once_each(tmp_path, tiny_plugins):
    task = load_task_file(write_tiny_task(tmp_path))
    jobs = plan_jobs([task], "smoke", ["softmax", "ea", "softmax"], seeds=2, seq_lens=[8, 16])
    assert len(jobs) == 2 * 2 * 2 == len({j.key for j in jobs})
    assert {(j.attention, j.seed, j.seq_len) for j in jobs} == {
        (a, s, L) for a in ("softmax", "ea") for s in (0, 1) for L in (8, 16)}
    with pytest.raises(UsageError, match="--seeds must be at least 1"):
        plan_jobs([task], "smoke", seeds=0)


def test_injected_failures_are_recorded_and_the_other_jobs_finish(tmp_path, tiny_plugins):
    inject = '{"16": oom, "24": error, "32": hang, "40": crash, "48": missing}'
    jobs = tiny_jobs_for(tmp_path, f"{{steps: 2, inject: {inject}}}", [8, 16, 24, 32, 40, 48, 56])
    summary = run_jobs(jobs, tmp_path / "out", job_timeout=4, console=quiet())
    by_length = {r["seq_len"]: r for r in read_records(tmp_path / "out")}
    assert {L: r["status"] for L, r in by_length.items()} == {
        8: "ok", 16: "oom", 24: "error", 32: "timeout", 40: "error", 48: "skipped", 56: "ok"}
    assert "SIGKILL" in by_length[40]["error"] and "--job-timeout 4" in by_length[32]["error"]
    assert by_length[56]["metrics"]["accuracy"] >= 0 and by_length[56]["wall_s"] > 0
    failed = by_length[24]
    log = tmp_path / "out" / "logs" / f"{job_slug('tiny', 'softmax', 24, 0, failed['key'])}.log"
    assert log.name.startswith("tiny_softmax_L24_s0_") and "injected failure" in log.read_text()
    assert len(summary.failed()) == 4 and len(summary.skipped()) == 1 and not summary.interrupted


def test_an_output_directory_with_records_needs_resume(tmp_path, tiny_plugins):
    jobs = tiny_jobs_for(tmp_path, "{steps: 1}", [8])
    run_jobs(jobs, tmp_path / "out", console=quiet())
    with pytest.raises(UsageError, match="already holds 1 records; pass --resume"):
        run_jobs(jobs, tmp_path / "out", console=quiet())


def test_resume_skips_ok_jobs_and_reruns_failed_ones(tmp_path, tiny_plugins):
    marker = tmp_path / "failed-once"
    jobs = tiny_jobs_for(tmp_path, f'{{steps: 1, inject: {{"16": "once:{marker}"}}}}', [8, 16])
    first = run_jobs(jobs, tmp_path / "out", console=quiet())
    assert Counter(r["status"] for r in first.records) == {"ok": 1, "error": 1}
    second = run_jobs(jobs, tmp_path / "out", resume=True, console=quiet())
    assert second.ran == 1 and second.reused == 1
    assert [r["status"] for r in second.records] == ["ok", "ok"]
    assert len(read_records(tmp_path / "out")) == 3  # the failed attempt stays in the log, superseded


def start_suite(tmp_path, out, *extra):
    return subprocess.Popen([sys.executable, str(RUN_SUITE), "suite", "--tasks", "slow", "--seq-len", "8,9,10,11",
                             "--out", str(out), *extra], env=plugin_env(tmp_path / "tasks"), cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def wait_for_records(out, count, proc, limit=120):
    deadline = time.monotonic() + limit
    path = out / "records.jsonl"
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().count("\n") >= count:
            return
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.2)
    raise AssertionError(f"no {count} records after {limit} s")


def test_suite_resumes_after_being_killed_without_losing_or_duplicating_records(tmp_path):
    write_tiny_task(tmp_path / "tasks", name="slow", smoke="{steps: 1, sleep: 0.7}")
    out = tmp_path / "run"
    proc = start_suite(tmp_path, out)
    wait_for_records(out, 1, proc)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole process group, as a lost terminal or the OOM killer would
    proc.wait()
    before = (out / "records.jsonl").read_text()
    with open(out / "records.jsonl", "a") as f:
        f.write('{"key": "torn-by-the-kill", "sta')
    resumed = subprocess.run([sys.executable, str(RUN_SUITE), "suite", "--tasks", "slow", "--seq-len", "8,9,10,11",
                              "--out", str(out), "--resume"], env=plugin_env(tmp_path / "tasks"), cwd=tmp_path,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    text = (out / "records.jsonl").read_text()
    assert text.startswith(before)  # what was recorded before the kill is kept as it was
    records = read_records(out)
    assert sorted(r["seq_len"] for r in records) == [8, 9, 10, 11]  # nothing lost, nothing twice
    assert all(r["status"] == "ok" for r in records) and "torn-by-the-kill" not in text
    assert "already ok" in resumed.stdout


def test_ctrl_c_stops_after_recording_the_jobs_that_finished(tmp_path):
    write_tiny_task(tmp_path / "tasks", name="slow", smoke="{steps: 1, sleep: 1.5}")
    out = tmp_path / "run"
    proc = start_suite(tmp_path, out)
    wait_for_records(out, 1, proc)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, output
    assert "interrupted" in output and "--resume" in output and "Traceback" not in output
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert 1 <= len(records) < 4 and all(r["status"] == "ok" for r in records)

"""The overnight suite at scale: a plan before the night (data status, estimates, totals), a pool of workers
(one record per job, kill and resume lose and duplicate nothing), and one owner per run directory."""
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from tiny_jobs import plugin_env, write_tiny_task

from suite.cli import main
from suite.run.pool.estimates import makespan
from suite.run.records import append_record, make_record, read_records

RUN_SUITE = Path(__file__).resolve().parents[1] / "run_suite.py"


@pytest.fixture
def tasks(tmp_path, monkeypatch):
    monkeypatch.setenv("EA_SUITE_PLUGINS", "tiny_jobs")
    monkeypatch.setenv("EA_SUITE_TASKS", str(tmp_path / "tasks"))
    monkeypatch.chdir(tmp_path)
    write_tiny_task(tmp_path / "tasks", name="slow", smoke="{steps: 1, sleep: 1.0}")
    return tmp_path


def plan(capsys, *args):
    assert main(["suite", "--tasks", "slow", "--plan", "--format", "json", "--device", "cpu", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_makespan_is_the_longest_first_schedule():
    assert makespan([5, 4, 3, 3, 3], 2) == pytest.approx(10)  # 5 | 4, then 3 to 4 (7), 3 to 5 (8), 3 to 7 (10)
    assert makespan([10, 1, 1], 3) == 10 and makespan([2, 2, 2, 2], 1) == 8 and makespan([], 4) == 0


def test_plan_lists_every_job_with_its_data_and_an_estimate_from_the_cost_model(tasks, capsys):
    planned = plan(capsys, "--seq-len", "8,16", "--seeds", "2", "--attn", "ea;softmax")
    assert planned["totals"]["jobs"] == planned["totals"]["to_run"] == 8 and planned["totals"]["done"] == 0
    assert {j["estimate"] for j in planned["jobs"]} == {"none"}  # the tiny builder declares no cost model
    assert not (tasks / "results").exists()  # a plan runs nothing and creates nothing


def test_plan_estimates_from_earlier_records_and_counts_what_is_done(tasks, capsys):
    planned = plan(capsys, "--seq-len", "8,16,24", "--attn", "softmax")
    keys = {j["L"]: j["key"] for j in planned["jobs"]}
    earlier = tasks / "earlier"
    from suite.run.job import device_env

    name = device_env("cpu")["device_name"]

    def record(key, L, wall, status="ok", device_name=name):
        append_record(earlier, make_record(
            key=key, task="slow", family="test", attention="softmax", profile="smoke", seed=0, seq_len=L,
            status=status, error=None, metrics={"accuracy": 0.5, "peak_mem_bytes": 1e9}, data={},
            config={"metric": "accuracy", "direction": "max"}, env={"device_name": device_name},
            started_at="2026-01-01T00:00:00+00:00", wall_s=wall))

    record(keys[8], 8, 100.0)  # this very job: its time
    record("other-config", 16, 40.0)  # the same task, attention and L with another config: similar
    record("other-config-2", 16, 60.0)
    record(keys[24], 24, 999.0, device_name="another machine")  # another device says nothing
    planned = plan(capsys, "--seq-len", "8,16,24", "--attn", "softmax", "--history", str(earlier))
    by_length = {j["L"]: j for j in planned["jobs"]}
    assert (by_length[8]["est_s"], by_length[8]["estimate"]) == (100.0, "record")
    assert (by_length[16]["est_s"], by_length[16]["estimate"]) == (50.0, "similar")
    assert by_length[24]["estimate"] == "none" and by_length[8]["est_peak_bytes"] == 1e9
    totals = planned["totals"]
    assert totals["job_seconds"] == pytest.approx(100 + 50 + by_length[24]["est_s"])
    two = plan(capsys, "--seq-len", "8,16,24", "--attn", "softmax", "--history", str(earlier), "--workers", "2")
    assert two["totals"]["wall_seconds"] == pytest.approx(100.0) and two["totals"]["workers"] == 2
    out = tasks / "out"
    append_record(out, {**read_records(earlier)[0]})
    resumed = plan(capsys, "--seq-len", "8,16,24", "--attn", "softmax", "--out", str(out), "--resume")
    assert resumed["totals"]["done"] == 1 and resumed["totals"]["to_run"] == 2


def test_plan_of_the_full_profile_names_missing_data_and_its_fix(capsys, monkeypatch):
    monkeypatch.delenv("EA_SUITE_DATA", raising=False)
    assert main(["suite", "--plan", "--profile", "full", "--device", "cpu", "--tasks",
                 "vit-cifar10,lra-listops,lm-kjv", "--attn", "ea"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "missing data: vit-cifar10: CIFAR-10 not found" in out and "cifar-10-python.tar.gz" in out
    assert "generated" in out and "substitute" in out and "model" in out
    assert "without their data: they will be skipped" in out


def start(tmp_path, out, *extra):
    return subprocess.Popen([sys.executable, str(RUN_SUITE), "suite", "--tasks", "slow", "--seq-len", "8,9,10,11,12,13",
                             "--out", str(out), "--device", "cpu", *extra], env=plugin_env(tmp_path / "tasks"),
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def wait_for_records(out, count, proc, limit=180):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        path = out / "records.jsonl"
        if path.exists() and path.read_text().count("\n") >= count:
            return
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.2)
    raise AssertionError(f"no {count} records after {limit} s")


@pytest.mark.slow
def test_two_workers_record_every_job_exactly_once(tasks):
    out = tasks / "run"
    result = subprocess.run([sys.executable, str(RUN_SUITE), "suite", "--tasks", "slow", "--seq-len", "8,9,10,11",
                             "--out", str(out), "--device", "cpu", "--workers", "2"], env=plugin_env(tasks / "tasks"),
                            cwd=tasks, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "(2 at a time)" in result.stdout and "[cpu#1]" in result.stdout
    keys = Counter(r["key"] for r in read_records(out))
    assert len(keys) == 4 and set(keys.values()) == {1}


@pytest.mark.slow
def test_killing_a_two_worker_suite_then_resuming_loses_and_duplicates_nothing(tasks):
    out = tasks / "run"
    proc = start(tasks, out, "--workers", "2")
    wait_for_records(out, 2, proc)
    os.killpg(proc.pid, signal.SIGKILL)  # parent, forkserver and both jobs, as a lost node would
    proc.wait()
    before = (out / "records.jsonl").read_text()
    resumed = subprocess.run([sys.executable, str(RUN_SUITE), "suite", "--tasks", "slow", "--seq-len",
                              "8,9,10,11,12,13", "--out", str(out), "--device", "cpu", "--workers", "2", "--resume"],
                             env=plugin_env(tasks / "tasks"), cwd=tasks, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert (out / "records.jsonl").read_text().startswith(before)
    assert "took over the stale lock" in resumed.stdout  # the killed run never released it
    records = read_records(out)
    assert sorted(r["seq_len"] for r in records) == [8, 9, 10, 11, 12, 13]  # nothing lost, nothing twice


@pytest.mark.slow
def test_a_second_run_on_the_same_out_is_refused_at_once(tasks):
    out = tasks / "run"
    first = start(tasks, out)
    wait_for_records(out, 1, first)
    os.kill(first.pid, signal.SIGSTOP)  # the first run holds OUT however long the second takes to start
    try:
        second = subprocess.run([sys.executable, str(RUN_SUITE), "suite", "--tasks", "slow", "--seq-len",
                                 "8,9,10,11,12,13", "--out", str(out), "--device", "cpu", "--resume"],
                                env=plugin_env(tasks / "tasks"), cwd=tasks, capture_output=True, text=True, timeout=300)
    finally:
        os.kill(first.pid, signal.SIGCONT)
    assert second.returncode == 2, second.stdout + second.stderr
    assert second.stderr.count("\n") == 1 and f"pid {first.pid}" in second.stderr and "is in use by" in second.stderr
    assert "ok " not in second.stdout  # refused before running any job
    output, _ = first.communicate(timeout=600)
    assert first.returncode == 0, output
    keys = Counter(r["key"] for r in read_records(out))
    assert len(keys) == 6 and set(keys.values()) == {1}  # zero duplicated records


def test_plan_totals_leave_jobs_without_data_out_of_the_times():
    import pandas as pd

    from suite.run.pool.estimates import duration, plan_totals

    frame = pd.DataFrame({"done": [False, False, True], "data": ["real", "missing", "real"],
                          "est_s": [100.0, 1e9, 50.0]})
    totals = plan_totals(frame, workers=1)
    assert (totals["to_run"], totals["missing_data"], totals["job_seconds"], totals["wall_seconds"]) == (2, 1, 100, 100)
    assert duration(3 * 86400 + 4 * 3600) == "3d 04h" and duration(3725) == "1h 02m"


def test_a_plan_needs_no_torch_once_the_attention_specs_and_the_device_speed_are_kept(tmp_path):
    # what makes `suite --plan --profile full` take seconds: no torch import (families, data status, cost models
    # and the CLI are torch-free; spec checks and the device's speed are cached per code version and machine)
    env = {k: v for k, v in os.environ.items() if k not in ("EA_SUITE_PLUGINS", "EA_SUITE_TASKS")}
    env["EA_SUITE_CACHE"] = str(tmp_path / "cache")
    # (the CPUs count as quiet here, so the speed measured first is the one kept: see the next test for busy ones)
    code = ("import sys; import suite.run.pool.estimates as p; p.cpus_busy = lambda cpus: False; "
            "from suite.cli import main; "
            "rc = main(['suite', '--plan', '--profile', 'full', '--device', 'cpu', '--format', 'json']); "
            "print('\\ntorch imported:', 'torch' in sys.modules, 'rc', rc)")

    def plan_in_a_fresh_process():
        proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True,
                              timeout=300)
        body, _, last = proc.stdout.rstrip().rpartition("\n")
        return json.loads(body), last

    first, said = plan_in_a_fresh_process()
    assert said == "torch imported: True rc 0"  # the first plan asks the registry and measures the device
    assert {p.name for p in (tmp_path / "cache").iterdir()} == {"attention-specs.json", "device-flops.json"}
    again, said = plan_in_a_fresh_process()
    assert said == "torch imported: False rc 0"
    assert [j["key"] for j in again["jobs"]] == [j["key"] for j in first["jobs"]] and len(first["jobs"]) > 200
    assert again["totals"] == first["totals"]


def test_the_device_speed_is_measured_once_per_machine(tmp_path, monkeypatch):
    from suite.run.pool import estimates as planning

    monkeypatch.setenv("EA_SUITE_CACHE", str(tmp_path))
    monkeypatch.setattr(planning, "cpus_busy", lambda cpus: False)
    measured = []
    monkeypatch.setattr(planning, "_measure_flops", lambda device: measured.append(device) or 1e11)
    planning.device_flops.cache_clear()
    try:
        assert planning.device_flops("cpu", keep=False) == 1e11  # a run ordering jobs beside its job server
        assert not (tmp_path / planning.FLOPS_CACHE).exists() and measured == ["cpu"]
        measured.clear()
        assert planning.device_flops("cpu") == 1e11
        planning.device_flops.cache_clear()
        assert planning.device_flops("cpu") == 1e11 and measured == ["cpu"]
        kept = json.loads((tmp_path / planning.FLOPS_CACHE).read_text())
        assert list(kept) == [next(iter(kept))] and planning.device_name("cpu") in next(iter(kept))
    finally:
        planning.device_flops.cache_clear()


def test_a_device_speed_measured_on_busy_cpus_is_measured_again_once_they_are_quiet(tmp_path, monkeypatch):
    # a plan beside a night's training measured a share of the machine (7x low here once) and kept it for good
    from suite.run.pool import estimates as planning

    monkeypatch.setenv("EA_SUITE_CACHE", str(tmp_path))
    busy, speeds = [True], [1.6e10, 1.2e11]
    monkeypatch.setattr(planning, "cpus_busy", lambda cpus: busy[0])
    monkeypatch.setattr(planning, "_measure_flops", lambda device: speeds.pop(0))

    def plan_speed():
        planning.device_flops.cache_clear()
        return planning.device_flops("cpu")

    try:
        assert plan_speed() == 1.6e10
        assert plan_speed() == 1.6e10 and speeds == [1.2e11]  # still busy: the kept one serves, no new measure
        busy[0] = False
        assert plan_speed() == 1.2e11 and speeds == []  # quiet: measured again, and this one is kept
        busy[0] = True
        assert plan_speed() == 1.2e11
        (key, entry), = json.loads((tmp_path / planning.FLOPS_CACHE).read_text()).items()
        assert entry == {"flops": 1.2e11, "busy": False}
        (tmp_path / planning.FLOPS_CACHE).write_text(json.dumps({key: 1.6e10}))  # kept by an older version
        speeds.append(1.1e11)
        busy[0] = False
        assert plan_speed() == 1.1e11
    finally:
        planning.device_flops.cache_clear()

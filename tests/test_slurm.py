"""The Slurm launcher against a real single-node Slurm (``tests/slurm_cluster.py``), and the same path through
submitit's local executor: every job recorded once, Slurm's failure states mapped to statuses with Slurm's
reason, ``--no-wait`` then ``--collect``, and ``--resume`` across launchers."""
import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from slurm_cluster import SlurmCluster
from tiny_jobs import plugin_env, write_tiny_task

from suite.run.records import read_records

pytestmark = pytest.mark.slow

RUN_SUITE = Path(__file__).resolve().parents[1] / "run_suite.py"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    slurm = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        slurm.start()  # fails the tests loudly when Slurm cannot run here: no silent skip
        yield slurm
    finally:
        slurm.stop()


def suite(tmp_path, env_extra, *args, timeout=600):
    env = {**plugin_env(tmp_path / "tasks"), **env_extra}
    return subprocess.run([sys.executable, str(RUN_SUITE), "suite", "--tasks", "tiny", *args], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=timeout)


def manifest(out):
    return [json.loads(line) for line in (out / "slurm" / "jobs.jsonl").read_text().splitlines()]


def test_a_slurm_array_records_every_job_once_maps_a_cancelled_job_and_resumes(tmp_path, cluster):
    marker = tmp_path / "hung-once"
    write_tiny_task(tmp_path / "tasks", smoke=f'{{steps: 1, inject: {{"16": "hang-once:{marker}"}}}}')
    out = tmp_path / "run"
    lengths = ["--seq-len", "8,16,24", "--out", str(out), "--launcher", "slurm", "--time", "10"]
    submitted = suite(tmp_path, cluster.env, *lengths, "--no-wait")
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    jobs = {entry["spec"]["seq_len"]: entry for entry in manifest(out)}
    assert sorted(jobs) == [8, 16, 24] and all(e["slurm_job_id"] for e in jobs.values())
    deadline = time.monotonic() + 120
    while not marker.exists():  # the L=16 job is running (and would hang for an hour)
        assert time.monotonic() < deadline, "the L=16 array task never started"
        time.sleep(0.5)
    subprocess.run(["scancel", jobs[16]["slurm_job_id"]], env=cluster.env, check=True, timeout=30)
    deadline = time.monotonic() + 300
    while True:
        collected = suite(tmp_path, cluster.env, "--collect", "--out", str(out))
        records = {r["seq_len"]: r for r in read_records(out)} if (out / "records.jsonl").exists() else {}
        if len(records) == 3:
            break
        assert time.monotonic() < deadline, collected.stdout + collected.stderr
        time.sleep(2)
    assert records[8]["status"] == records[24]["status"] == "ok"
    assert records[16]["status"] == "error" and "CANCELLED" in records[16]["error"]
    assert records[8]["env"]["slurm_job_id"] == jobs[8]["slurm_job_id"]
    again = suite(tmp_path, cluster.env, "--collect", "--out", str(out))
    assert again.returncode == 1 and len(read_records(out)) == 3  # nothing is recorded twice
    resumed = suite(tmp_path, cluster.env, *lengths, "--resume")  # only the cancelled job runs again, and waits
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    latest = {}
    for record in read_records(out):
        latest[record["key"]] = record
    assert sorted(r["status"] for r in latest.values()) == ["ok", "ok", "ok"]
    assert Counter(r["key"] for r in read_records(out) if r["status"] == "ok").most_common(1)[0][1] == 1


def test_the_same_path_through_submitits_local_executor_and_resume_across_launchers(tmp_path):
    write_tiny_task(tmp_path / "tasks", smoke='{steps: 1, inject: {"16": error}}')
    out = tmp_path / "run"
    first = suite(tmp_path, {}, "--seq-len", "8,16", "--out", str(out), "--launcher", "submitit-local")
    assert first.returncode == 1, first.stdout + first.stderr  # the injected error
    records = {r["seq_len"]: r for r in read_records(out)}
    assert records[8]["status"] == "ok" and records[16]["status"] == "error"
    assert "injected failure" in records[16]["error"] and records[8]["env"]["slurm_job_id"]
    local = suite(tmp_path, {}, "--seq-len", "8,16", "--out", str(out), "--resume")  # the local pool takes over
    assert "1 of 2 jobs already ok" in local.stdout
    assert len([r for r in read_records(out) if r["seq_len"] == 8]) == 1


def test_no_wait_is_refused_without_slurm_and_collect_needs_a_submission(tmp_path, capsys):
    from suite.cli import main

    assert main(["suite", "--tasks", "kernels-op", "--no-wait"]) == 2
    assert "--no-wait, --sbatch and --partition apply to --launcher slurm" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["suite", "--collect", "--out", str(tmp_path / "empty")]) == 2
    assert "no Slurm submission to collect" in capsys.readouterr().err

"""The suite runner: outcome classification, isolation of failures, resume after a kill, Ctrl-C."""
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from rich.console import Console
from tiny_jobs import plugin_env, write_tiny_task

from suite.errors import UsageError
from suite.run.job import JobRequest, JobSpec, run_job
from suite.run.pool.plan import plan_jobs
from suite.run.pool.process import JobProcess
from suite.run.pool.rundir import RunSettings, job_request
from suite.run.pool.runner import (
    Interrupted,
    run_jobs,
    stop_signals_interrupt,
)
from suite.run.records import job_slug, read_records
from suite.tasks import load_task_file

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
    outcome = run_job(JobRequest(spec_with(hparams={"inject": {"8": inject}}), "cpu"))
    assert outcome.status == status
    assert (outcome.error or "").startswith(error or "")
    if status == "ok":
        assert outcome.data == {"source": "tiny-random", "substitute": False}
        assert outcome.env["backends"] == {"softmax": outcome.env["backends"]["softmax"]}
        assert outcome.env["device"] == "cpu" and outcome.env["device_name"]
    if status in ("error", "oom", "diverged"):
        assert "Traceback" in outcome.traceback


def test_a_record_says_how_busy_the_machine_was_as_its_job_began_and_ended():
    outcome = run_job(JobRequest(spec_with(), "cpu"))
    assert outcome.status == "ok"
    for key in ("load_before", "load_after"):  # a job's times mean little without them on a shared machine
        assert isinstance(outcome.env[key], float) and outcome.env[key] >= 0


def test_job_without_its_main_metric_is_an_error():
    outcome = run_job(JobRequest(spec_with(metric="bpb"), "cpu"))
    assert outcome.status == "error"
    assert "lack the task's main metric 'bpb'" in outcome.error


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
    assert by_length[56]["metrics"]["test_accuracy"] >= 0 and by_length[56]["wall_s"] > 0
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


def _as_a_foreground_process() -> None:
    # a shell starts a background job (`bash .ci/run &`) with SIGINT ignored, and a Python started so installs no
    # KeyboardInterrupt handler: Ctrl-C then rightly does nothing. The suite under test is run as a terminal's
    # foreground command, whatever started pytest.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_suite(tmp_path, out, *extra):
    return subprocess.Popen([sys.executable, str(RUN_SUITE), "suite", "--tasks", "slow", "--seq-len", "8,9,10,11",
                             "--out", str(out), *extra], env=plugin_env(tmp_path / "tasks"), cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            preexec_fn=_as_a_foreground_process)


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


def test_a_job_that_held_a_semaphore_exits_cleanly_and_leaves_no_leak_warning(tmp_path):
    # a job process killed the moment it reports skips its exit clean-up; the resource tracker it shares with
    # the suite then prints "There appear to be N leaked semaphore objects" as the suite exits
    write_tiny_task(tmp_path / "tasks", name="held", smoke='{steps: 1, inject: {"8": semaphore}}')
    done = subprocess.run([sys.executable, str(RUN_SUITE), "run", "held", "--seq-len", "8,9", "--out",
                           str(tmp_path / "run")], env=plugin_env(tmp_path / "tasks"), cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "leaked" not in done.stdout + done.stderr and "2 ok" in done.stdout


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)],
                         ids=["ctrl-c", "sigterm", "sighup"])
def test_a_stop_signal_ends_the_suite_after_recording_the_jobs_that_finished(tmp_path, sig, code):
    write_tiny_task(tmp_path / "tasks", name="slow", smoke="{steps: 1, sleep: 1.5}")
    out = tmp_path / "run"
    proc = start_suite(tmp_path, out)
    wait_for_records(out, 1, proc)
    if sig == signal.SIGINT:
        os.killpg(proc.pid, sig)  # what Ctrl-C in a terminal sends: the whole foreground group
    else:
        os.kill(proc.pid, sig)  # a scheduler's stop, a closed terminal: the suite's own process
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == code, output
    assert f"interrupted by {signal.Signals(sig).name}" in output and "--resume" in output
    assert "Traceback" not in output
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert 1 <= len(records) < 4 and all(r["status"] == "ok" for r in records)


def test_a_stop_signal_during_a_job_hand_over_is_held_until_the_job_process_has_started(tmp_path, tiny_plugins,
                                                                                         monkeypatch):
    # cut halfway through handing a job to the forkserver, the forkserver dies printing a traceback
    job = JobProcess(job_request(spec_with(hparams={"sleep": 30}), tmp_path, "cpu", RunSettings()), None)
    (tmp_path / "logs").mkdir()
    real_start = type(job.proc).start

    def start_hit_by_a_signal(process):
        os.kill(os.getpid(), signal.SIGHUP)
        real_start(process)

    monkeypatch.setattr(type(job.proc), "start", start_hit_by_a_signal)
    try:
        with pytest.raises(Interrupted), stop_signals_interrupt():
            job.start()
        assert job.proc.pid is not None  # the hand-over completed; the signal came after it
    finally:
        job.stop()


def test_a_second_stop_signal_during_a_job_hand_over_is_acted_on_at_once(tmp_path, tiny_plugins, monkeypatch):
    job = JobProcess(job_request(spec_with(hparams={"sleep": 30}), tmp_path, "cpu", RunSettings()), None)
    real_start = type(job.proc).start

    def start_hit_twice(process):
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGHUP)  # a hand-over that hangs can still be stopped
        real_start(process)

    monkeypatch.setattr(type(job.proc), "start", start_hit_twice)
    try:
        with stop_signals_interrupt():
            handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
            with pytest.raises(Interrupted, match="SIGHUP"):
                job.start()
            assert {sig: signal.getsignal(sig) for sig in handlers} == handlers  # the suite's handlers, back
        assert job.proc.pid is None
    finally:
        job.stop()


def test_a_cpu_allocation_failure_is_recorded_as_oom():
    outcome = run_job(JobRequest(spec_with(hparams={"inject": {"8": "cpu-oom"}}), "cpu"))
    assert outcome.status == "oom" and "can't allocate memory" in outcome.error


def test_a_job_the_oom_killer_ends_is_recorded_as_oom(tmp_path, tiny_plugins, monkeypatch):
    from suite.run.pool import process as jobproc

    counts = iter([0, 1])  # the cgroup's oom_kill count rises while the job runs
    monkeypatch.setattr(jobproc, "oom_kill_count", lambda: next(counts))
    (record,) = run_jobs(tiny_jobs_for(tmp_path, '{steps: 1, inject: {"8": crash}}', [8]), tmp_path / "out",
                         console=quiet()).records
    assert record["status"] == "oom" and "OOM killer" in record["error"]


def test_a_job_killed_otherwise_stays_an_error(tmp_path, tiny_plugins, monkeypatch):
    from suite.run.pool import process as jobproc

    monkeypatch.setattr(jobproc, "oom_kill_count", lambda: 0)
    (record,) = run_jobs(tiny_jobs_for(tmp_path, '{steps: 1, inject: {"8": crash}}', [8]), tmp_path / "out",
                         console=quiet()).records
    assert record["status"] == "error" and "SIGKILL" in record["error"]


def test_the_error_of_a_job_is_its_root_exception_in_one_line():
    from suite.run.job import one_line

    worker = ValueError("Caught ValueError in DataLoader worker process 5.\nOriginal Traceback (most recent call "
                        "last):\n  File \"x.py\", line 1, in f\n    g()\nValueError: bits must be between or "
                        "equal to 1 and 8\n")
    assert one_line(worker) == ("ValueError: bits must be between or equal to 1 and 8 "
                                "(Caught ValueError in DataLoader worker process 5)")
    assert one_line(RuntimeError("two\nlines")) == "RuntimeError: two lines"
    assert len(one_line(RuntimeError("x" * 2000))) == 500


def test_a_plan_too_large_to_be_meant_is_refused_before_it_is_built(tmp_path, tiny_plugins):
    task = load_task_file(write_tiny_task(tmp_path))
    with pytest.raises(UsageError, match="the plan has 100,000,000 jobs"):
        plan_jobs([task], "smoke", seeds=100_000_000)


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs at tmp_path/disk (root only; the test says so and skips where it cannot mount)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({(mounted.stderr or mounted.stdout).strip()}); the full-disk "
                    "test needs root")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_full_disk_loses_no_finished_record_tears_none_and_resume_completes(tmp_path, tiny_plugins, small_disk):
    out = small_disk / "run"
    filler = small_disk / "filler"
    # three jobs save 300 KB each; the fourth's artifact no longer fits: a warning, its record still ok
    first = run_jobs(tiny_jobs_for(tmp_path, "{steps: 1, artifact_kb: 300}", [8, 9, 10, 11]), out,
                     console=quiet(), min_free_bytes=0)
    assert [r["status"] for r in first.records] == ["ok"] * 4 and not first.stopped
    warned = [r for r in first.records if r["env"].get("warnings")]
    assert len(warned) >= 1 and "No space left on device" in warned[-1]["env"]["warnings"][0]
    assert not list(small_disk.rglob(".blob.partial-*"))  # no half-written artifact is left behind
    recorded = (out / "records.jsonl").read_bytes()
    # the next job fills the disk (as another process might): its record cannot be written, the run stops
    jobs = tiny_jobs_for(tmp_path, f'{{steps: 1, inject: {{"12": "fill:{filler}"}}}}', [8, 9, 10, 11, 12, 13])
    jobs = [j for j in jobs if j.seq_len >= 12]
    stopped = run_jobs(jobs, out, console=quiet(), resume=True, min_free_bytes=0)
    assert stopped.stopped and "No space left on device" in stopped.stopped
    now = (out / "records.jsonl").read_bytes()
    assert now.startswith(recorded) and now.endswith(b"\n")  # every earlier record kept as it was, none torn
    assert all(json.loads(line)["status"] == "ok" for line in now[len(recorded):].splitlines())
    filler.write_bytes(b"")  # space is freed (the file stays, so the job does not fill the disk again)
    for folder in (out / "artifacts").iterdir():
        shutil.rmtree(folder)
    resumed = run_jobs(jobs, out, console=quiet(), resume=True, min_free_bytes=0)
    assert [r["status"] for r in resumed.records] == ["ok", "ok"] and not resumed.stopped
    keys = [r["key"] for r in read_records(out)]
    assert len(keys) == len(set(keys)) == 6  # nothing lost, nothing twice


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_an_artifact_a_full_or_read_only_disk_refuses_is_a_warning_on_the_job_s_record(tmp_path, monkeypatch, code):
    artifacts = tmp_path / "artifacts"
    real_mkdir = os.mkdir

    def refusing_mkdir(path, *args, **kwargs):
        if Path(path).is_relative_to(artifacts):
            raise OSError(code, os.strerror(code), str(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", refusing_mkdir)
    outcome = run_job(JobRequest(spec_with(hparams={"artifact_kb": 1}), "cpu", artifacts_dir=artifacts / "job"))
    assert outcome.status == "ok" and outcome.metrics["test_accuracy"] is not None
    assert outcome.env["warnings"] == [f"blob not saved: {os.strerror(code)} (OSError)"]
    assert not artifacts.exists()


def test_records_a_read_only_disk_refuses_stop_the_run_in_one_line_with_exit_1(tmp_path, capsys, monkeypatch):
    from suite.cli import main

    monkeypatch.chdir(tmp_path)
    real_open = os.open

    def read_only_records(path, flags, *args, **kwargs):  # as after a remount read-only once the run started
        if Path(path).name == "records.jsonl" and flags & (os.O_WRONLY | os.O_RDWR):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only_records)
    assert main(["run", "kernels-op", "--attn", "softmax;ea", "--seq-len", "16", "--out", "ro"]) == 1
    captured = capsys.readouterr()
    (stop,) = [line for line in captured.out.splitlines() if "Read-only file system" in line]
    assert stop.startswith("stopped: cannot write a record to ro/records.jsonl: Read-only file system; 2 jobs not "
                           "run;") and "make room" not in stop, stop
    assert "Traceback" not in captured.err and "Read-only" not in captured.err
    assert not (tmp_path / "ro" / "records.jsonl").exists() or not (tmp_path / "ro" / "records.jsonl").read_bytes()


@pytest.mark.parametrize("out,message", [
    ("", "expected a directory, got an empty string"),
    ("afile/run", "cannot create or write there"),
    ("/proc/ea-suite-run", "cannot create or write there"),
    ("x" * 300, "cannot create or write there (File name too long)"),
    ("held", "already holds 1 records; pass --resume"),
])
def test_an_unusable_out_exits_2_in_one_line_before_any_job(tmp_path, capsys, monkeypatch, out, message):
    from suite.cli import main
    from suite.run.records import append_record, make_record

    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("a regular file")
    append_record(tmp_path / "held", make_record(
        key="k", task="kernels-op", family="kernels", attention="softmax", profile="smoke", seed=0, seq_len=16,
        status="ok", error=None, metrics={}, config={"metric": "fwd_ms", "direction": "min"},
        data={"source": "x"}, env={}, started_at="t", wall_s=1.0))
    assert main(["run", "kernels-op", "--attn", "softmax", "--seq-len", "16", "--out", out]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and message in captured.err and "Traceback" not in captured.err
    assert captured.out == ""  # not even the "N jobs on ...; records in OUT" banner


def test_a_disk_without_room_is_refused_before_any_job(tmp_path, tiny_plugins):
    jobs = tiny_jobs_for(tmp_path, "{steps: 1}", [8])
    with pytest.raises(UsageError, match="MiB free on its disk"):
        run_jobs(jobs, tmp_path / "out", console=quiet(), min_free_bytes=1 << 60)

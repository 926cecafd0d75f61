"""One job in its own child process: forked from a ``forkserver`` that imported torch once, pinned to a device
slot, with its stdout/stderr in its log file and a per-job timeout.

``JobProcess(request, timeout).start()`` then ``poll()`` until it returns the ``Outcome`` (``run_job``'s, or
``timeout``, or how the process died: the kernel's OOM killer makes it ``oom``, seen through the memory
cgroup's ``oom_kill`` count), ``stop()`` always. The request (``job.JobRequest``) holds the job spec (its builder
pickles by name), the device, the run's settings, the job's folders and log, the environment (the parent's,
plus the slot's ``CUDA_VISIBLE_DEVICES``) and the slot's thread count.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from suite.run.job import JobRequest, Outcome, run_job


def _exit_when_parent_dies() -> None:
    parent = multiprocessing.parent_process()

    def watch() -> None:
        while parent is None or parent.is_alive():
            time.sleep(1.0)
        os._exit(3)

    threading.Thread(target=watch, daemon=True).start()


def _child_main(conn, request: JobRequest) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops this process
    if request.environ is not None:
        os.environ.clear()
        os.environ.update(request.environ)  # the parent's environment now, with the slot's device
    if request.threads:
        import torch

        torch.set_num_threads(int(request.threads))
    with open(request.log or os.devnull, "a", buffering=1) as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        _exit_when_parent_dies()
        try:
            outcome = run_job(request)
        except Exception as err:  # noqa: BLE001 - still a record, not a hang
            import traceback

            outcome = Outcome.failed("error", f"{type(err).__name__}: {err}", traceback.format_exc())
        if outcome.traceback:
            print(outcome.traceback, file=sys.stderr, flush=True)
        conn.send(outcome)
        conn.close()


_CONTEXT: Any = None
EXIT_GRACE_S = 10.0  # how long a job process that has reported may take to exit before it is terminated
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


def mp_context():
    """The forkserver context (it imports torch and the harness once; every job forks from it)."""
    global _CONTEXT
    if _CONTEXT is None:
        _CONTEXT = multiprocessing.get_context("forkserver")
        _CONTEXT.set_forkserver_preload(["torch", "torch._dynamo", "suite.run.train", "suite.run.job"])
    return _CONTEXT


def start_job_server() -> None:
    """Start the forkserver (it imports torch once) now, so that it loads while the parent plans the run."""
    mp_context()
    from multiprocessing import forkserver

    forkserver.ensure_running()


@contextmanager
def stop_signals_held() -> Iterator[None]:
    """While inside, the first Ctrl-C, SIGTERM or SIGHUP is noted, not acted on; on leaving, it is raised again
    under the handlers that were there before. A second one is acted on at once (a hand-over that hangs can
    still be stopped). Python runs signal handlers in the main thread only, so elsewhere this does nothing
    (and nothing there is interrupted)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    noted: list[int] = []
    saved: dict[int, Any] = {}
    holding = [True]

    def restore() -> None:
        for sig, old in list(saved.items()):
            signal.signal(sig, signal.SIG_DFL if old is None else old)

    def note(signum: int, _frame: Any) -> None:
        if holding[0] and not noted:
            noted.append(signum)
            return
        holding[0] = False  # a second signal, or one that came while the handlers were put back: act on it now
        noted.clear()
        restore()
        signal.raise_signal(signum)

    try:
        for sig in STOP_SIGNALS:
            saved[sig] = signal.signal(sig, note)
        yield
    finally:
        holding[0] = False
        restore()
        if noted:
            signal.raise_signal(noted.pop())


def _cgroup_files() -> list[Path]:
    """Where this process's memory cgroup counts OOM kills (cgroup v2 memory.events, v1 memory.oom_control)."""
    files = [Path("/sys/fs/cgroup/memory.events"), Path("/sys/fs/cgroup/memory/memory.oom_control")]
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, where = line.split(":", 2)
            if controllers == "":
                files.insert(0, Path("/sys/fs/cgroup") / where.lstrip("/") / "memory.events")
            elif "memory" in controllers.split(","):
                files.insert(0, Path("/sys/fs/cgroup/memory") / where.lstrip("/") / "memory.oom_control")
    except (OSError, ValueError):
        pass
    return files


def oom_kill_count() -> int | None:
    """How many processes the kernel's OOM killer has ended in this process's memory cgroup; None where the system
    does not say."""
    for path in _cgroup_files():
        try:
            for line in path.read_text().splitlines():
                name, _, value = line.partition(" ")
                if name == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            continue
    return None


def died(exitcode: int | None, ooms_before: int | None) -> Outcome:
    """The outcome of a job process that ended without reporting: ``oom`` when the kernel's OOM killer ended it
    (its cgroup's oom_kill count rose), else ``error`` saying how it ended."""
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name
        if name == "SIGKILL":
            after = oom_kill_count()
            if ooms_before is not None and after is not None and after > ooms_before:
                return Outcome.failed("oom", "the kernel's OOM killer ended the job process (out of host memory)")
            return Outcome.failed("error", f"the job process died from {name} (the host may have run out of memory)")
        return Outcome.failed("error", f"the job process died from {name}")
    return Outcome.failed("error", f"the job process exited with code {exitcode} before reporting a result")


class JobProcess:
    """One job in a child process (module docstring)."""

    def __init__(self, request: JobRequest, timeout: float | None) -> None:
        ctx = mp_context()
        self.request, self.timeout = request, timeout
        self.reader, self._writer = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(target=_child_main, args=(self._writer, request), name=f"job-{request.spec.key}")
        self.deadline: float | None = None
        self.ooms_before: int | None = None
        self.reported = False  # the child sent its outcome (and is exiting by itself)

    def start(self) -> None:
        """Start the job's process. A stop signal (Ctrl-C, SIGTERM, SIGHUP) that comes while the forkserver is being
        handed the job takes effect once the hand-over is whole: cut halfway, the forkserver would die printing a
        traceback into the suite's output."""
        self.ooms_before = oom_kill_count()
        with stop_signals_held():
            self.proc.start()  # the first start waits for the forkserver to import torch: not the job's time
        self.deadline = None if self.timeout is None else time.monotonic() + self.timeout
        self._writer.close()

    def poll(self) -> Outcome | None:
        """The outcome once the job has ended (reported, timed out, or died), else None; never blocks long."""
        if self.reader.poll(0):
            try:
                outcome = self.reader.recv()
                self.reported = True
                return outcome
            except EOFError:
                self.proc.join(5)
                return died(self.proc.exitcode, self.ooms_before)
        if self.deadline is not None and time.monotonic() > self.deadline:
            return Outcome.failed("timeout", f"the job ran past --job-timeout {self.timeout:g} s and was stopped")
        if not self.proc.is_alive() and not self.reader.poll(0.5):
            return died(self.proc.exitcode, self.ooms_before)
        return None

    def stop(self, grace: bool = False) -> None:
        """End the process (if still running) and free its pipe. With ``grace``, a job that has sent its outcome
        gets up to ``EXIT_GRACE_S`` to exit by itself first: killed at once, it would skip its exit clean-up (a
        semaphore it made, such as tqdm's lock inside lm-eval, would stay registered with the resource tracker it
        shares with the suite, which then warns of leaked semaphores as the suite exits). Without (a stop
        signal, a timeout), it is ended at once."""
        if self.proc.pid is not None:  # started (a Ctrl-C may come before)
            if grace and self.reported and self.proc.is_alive():
                self.proc.join(EXIT_GRACE_S)
            if self.proc.is_alive():
                self.proc.terminate()
                self.proc.join(5)
            if self.proc.is_alive():
                self.proc.kill()
            self.proc.join()
        self._writer.close()
        self.reader.close()

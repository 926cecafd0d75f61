"""gpu-check's parent process: runs the plan row by row in a worker process and never ends empty-handed.

The parent touches no CUDA itself. A worker (``rows.serve``, a spawned process, bound to the device) runs one row
at a time and sends its fields back; the parent appends each row to OUT/<card>/gpu_check.jsonl and re-renders the
report at once. When the worker dies (a crash, a kill, an exit), hangs past the row's timeout or reports an error
that poisons the CUDA context, the row is recorded with what happened and the next row starts a fresh worker.
Rows are skipped, with the reason on the row, once the time budget is spent, when they cannot run here, or when
the same attention failed or took over a minute at a shorter L. SIGTERM, SIGHUP and Ctrl-C stop the worker,
record the row in flight as interrupted and the rest as not run, write the report and return 143, 129 or 130.
"""
from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from suite.gpu_check import report
from suite.gpu_check.plan import TIMED, RowSpec, Shapes, format_duration

#: a row slower than this makes the same attention skip its longer lengths
SLOW_ROW_S = 60.0
#: exit codes of an interrupted run, as the rest of the CLI uses them
SIGNAL_EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGHUP: 129}


class WorkerLost(Exception):
    """The worker died, hung or stopped answering during a row."""


class Interrupted(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _die_with_parent() -> None:
    """Linux: the worker gets SIGKILL when the parent dies, so no orphan keeps the GPU (best effort)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _worker_main(conn, device: str, shapes: dict[str, Any], ea_backend: str) -> None:
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what an interrupt does
    from suite.gpu_check.rows import serve

    serve(conn, device, shapes, ea_backend)


class Worker:
    """One spawned worker process and its pipe."""

    def __init__(self, device: str, shapes: Shapes, ea_backend: str) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, device, shapes.to_dict(), ea_backend),
                                name="gpu-check-worker")
        self.proc.start()
        child.close()

    def run(self, spec: RowSpec, timeout: float) -> dict[str, Any]:
        """The row's fields; WorkerLost when the worker dies or gives no answer within ``timeout`` seconds."""
        try:
            self.conn.send(spec.to_dict())
        except (OSError, ValueError) as err:
            raise WorkerLost(f"the worker process could not be reached ({err})") from None
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WorkerLost(f"no result after {timeout:.0f} s; the worker process was stopped")
            try:
                ready = self.conn.poll(min(remaining, 0.5))
                message = self.conn.recv() if ready else None
            except (EOFError, OSError):
                message, ready = None, False
                self.proc.join(2)
            if message is not None and message[0] == "row":
                return message[2]
            if not ready and not self.proc.is_alive():
                code = self.proc.exitcode
                how = (f"killed by {signal.Signals(-code).name}" if code is not None and code < 0
                       else f"exit code {code}")
                raise WorkerLost(f"the worker process ended during the row ({how})")

    def stop(self, kill: bool = False) -> None:
        """End the worker: asked politely, then killed (``kill``: at once). Never raises."""
        try:
            if not kill and self.proc.is_alive():
                self.conn.send(None)
                self.proc.join(10)
            if self.proc.is_alive():
                self.proc.kill()
                self.proc.join(10)
        except (OSError, ValueError, AssertionError):
            pass
        finally:
            with contextlib.suppress(OSError):
                self.conn.close()


@dataclass
class RunResult:
    rows: dict[str, dict[str, Any]]
    status: str
    exit_code: int | None  # a signal's exit code, else None


def _row_record(spec: RowSpec, fields: dict[str, Any], wall_s: float) -> dict[str, Any]:
    return {"kind": "row", "id": spec.id, "step": spec.step, **spec.label, **fields, "requires": list(spec.requires),
            "estimate_s": spec.estimate_s, "wall_s": round(wall_s, 2)}


def kept_rows(rows: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The rows a --resume keeps: measured ones (ok or FAIL); errors, skips and interruptions run again."""
    return {k: r for k, r in rows.items()
            if k != "environment" and str(r.get("status", "")).startswith(("ok", "FAIL"))}


def run_plan(plan: list[RowSpec], folder: Path, header: dict[str, Any], device: str, shapes: Shapes,
             ea_backend: str, budget_s: float, progress: Callable[[str], None] = print,
             previous: dict[str, dict[str, Any]] | None = None, worker_start_s: float = 60.0) -> RunResult:
    """Run ``plan`` into ``folder`` (module docstring). ``previous``: rows kept from an earlier run (--resume)."""
    start = time.monotonic()
    rows: dict[str, dict[str, Any]] = {}
    header = {**header, "kind": "header", "budget_s": budget_s}
    report.append(folder, header)
    for spec in plan:
        if previous and spec.id in previous:
            rows[spec.id] = previous[spec.id]
            report.append(folder, {**previous[spec.id], "resumed": True})
    report.render(folder, header, rows, "running")
    worker: Worker | None = None
    slow: set[tuple] = set()
    status, exit_code = "complete", None
    saved = {s: signal.getsignal(s) for s in SIGNAL_EXIT}

    def on_signal(signum, _frame):
        raise Interrupted(signum)

    for s in SIGNAL_EXIT:
        signal.signal(s, on_signal)
    todo = [spec for spec in plan if spec.id not in rows]
    in_flight: RowSpec | None = None
    try:
        for spec in todo:
            elapsed = time.monotonic() - start
            kwargs = spec.kwargs
            family = (kwargs.get("key"), kwargs.get("mode")) if spec.call == "timing" else None
            skip = spec.skip
            need = TIMED[kwargs["key"]][3] if kwargs.get("key") in TIMED else None
            if skip is None and need in ("fla", "mamba_ssm") and str(rows.get("environment", {}).get(need, "yes")
                                                                   ).startswith("no"):
                skip = f"{need} not importable here: {rows['environment'][need][3:].strip('()')}"
            if skip is None and elapsed > budget_s:
                skip = f"time budget ({format_duration(budget_s)}) spent"
            if skip is None and family in slow:
                skip = "the same attention failed or took over a minute at a shorter L"
            t0 = time.monotonic()
            if skip is not None:
                fields = {"status": f"skipped: {skip}"}
            else:
                in_flight = spec
                new_worker = worker is None
                if worker is None:
                    worker = Worker(device, shapes, ea_backend)
                timeout = spec.timeout_s or max(30.0, min(max(60.0, 5 * spec.estimate_s), budget_s - elapsed + 60))
                timeout += worker_start_s if new_worker else 0.0
                try:
                    fields = worker.run(spec, timeout)
                except WorkerLost as err:
                    fields = {"status": f"error: {err}; the next row runs in a fresh worker"}
                    worker.stop(kill=True)
                    worker = None
                else:
                    if "CUDA context is lost" in str(fields.get("status", "")):
                        worker.stop(kill=True)
                        worker = None
                in_flight = None
            wall = time.monotonic() - t0
            record = _row_record(spec, fields, wall)
            rows[spec.id] = record
            report.append(folder, record)
            if family is not None and family[0] not in (None,) and (
                    str(fields.get("status", "")).startswith("error") or wall > SLOW_ROW_S):
                slow.add(family)
            report.render(folder, header, rows, f"running ({format_duration(time.monotonic() - start)} so far)")
            progress(f"[{len(rows):3d}/{len(plan)} {format_duration(time.monotonic() - start):>6s}] {spec.step:15s} "
                     f"{' '.join(f'{v}' for v in spec.label.values())}: {_summary(record)}")
    except (Interrupted, KeyboardInterrupt) as err:
        signum = err.signum if isinstance(err, Interrupted) else signal.SIGINT
        name = signal.Signals(signum).name
        if worker is not None:
            worker.stop(kill=True)
            worker = None
        if in_flight is not None:
            record = _row_record(in_flight, {"status": f"interrupted by {name}"}, 0.0)
            rows[in_flight.id] = record
            report.append(folder, record)
        status, exit_code = f"interrupted by {name}", SIGNAL_EXIT[signal.Signals(signum)]
    finally:
        if worker is not None:
            worker.stop()
        for s, handler in saved.items():
            signal.signal(s, handler)
    header["wall_s"] = round(time.monotonic() - start, 1)
    if status == "complete" and any(str(r.get("status", "")).startswith("skipped: time budget") for r in rows.values()):
        status = "complete up to the time budget"
    report.append(folder, {"kind": "end", "status": status, "wall_s": header["wall_s"]})
    report.render(folder, header, rows, status)
    return RunResult(rows, status, exit_code)


def _summary(row: dict[str, Any]) -> str:
    status = str(row.get("status", ""))
    if status == "ok" and "ms" in row:
        return f"ok, {row['ms']:.3g} ms"
    if status == "ok" and "max_rel_error" in row:
        return f"ok, error {row['max_rel_error']:.2g}"
    return status[:160]


def prepare_folder(out: Path, card_slug: str, resume: bool) -> tuple[Path, dict[str, dict[str, Any]], str | None]:
    """OUT/<card>/ ready for a run: (folder, rows kept by --resume, a note). Without --resume an earlier run's
    files move to OUT/<card>/previous-<time>/ (nothing is deleted). OSError when the folder cannot be written."""
    folder = Path(out) / card_slug
    folder.mkdir(parents=True, exist_ok=True)
    previous: dict[str, dict[str, Any]] = {}
    note = None
    if (folder / report.JSONL).exists():
        if resume:
            _, old_rows, _ = report.read(folder)
            previous = kept_rows(old_rows)
            note = f"resuming: {len(previous)} measured rows kept from {folder / report.JSONL}"
        else:
            stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime((folder / report.JSONL).stat().st_mtime))
            aside = folder / f"previous-{stamp}"
            aside.mkdir(exist_ok=True)
            for name in report.FILES:
                if (folder / name).exists():
                    os.replace(folder / name, aside / name)
            note = f"an earlier gpu-check in {folder} was moved to {aside} (--resume continues one instead)"
    probe = folder / f".write-probe-{os.getpid()}"
    probe.write_bytes(b"ok")
    probe.unlink()
    return folder, previous, note

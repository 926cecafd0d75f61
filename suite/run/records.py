"""The results store: one JSON object per line per job, appended, flushed and fsynced.

Every record has exactly these fields (DESIGN.md §4):

- identity: ``key`` (a stable hash of task, canonical attention spec, profile, seed, seq_len and the
  resolved config), ``task``, ``family``, ``attention``, ``profile``, ``seed``, ``seq_len``;
- outcome: ``status`` (ok | oom | diverged | timeout | error | skipped) and ``error`` (None or one line);
- ``metrics``: numbers by name (accuracy, loss, bpb, train_samples_per_s, train_tokens_per_s,
  infer_samples_per_s, infer_tokens_per_s, peak_mem_bytes, params, fwd_ms, fwdbwd_ms, decode_ms_per_token, ...);
  a NaN or infinite value is stored as null;
- reproduction: ``config`` (resolved), ``data`` ({source, substitute, ...}), ``env`` (device, versions, git sha
  and dirty flag, hostname, backend actually used per attention, how memory was measured, the 1-minute load
  average as the job began and ended: ``load_before``, ``load_after``), ``started_at``
  (ISO 8601, UTC) and ``wall_s``.

A training job's metrics hold its final evaluation on both held-out splits, ``val_<name>`` and ``test_<name>``
(``val_accuracy``, ``test_accuracy``, ``test_bpb``, ...): the validation split serves every choice (curves, budgets),
the test split is read once, at the end. Records written before the split was explicit hold the unprefixed
name (``legacy_split`` says which split it was). A training job's record also has the optional field
``examples`` (``Examples``): its per-example test outcomes, so that two attentions can be compared on the same
examples (``suite.analysis.paired``).

A run directory holds ``records.jsonl``. The file is an append-only log: a job re-run after a failure (on
``--resume``) appends a new record with the same key, and readers take the latest record per key
(``latest_by_key``). A torn last line (a write cut short by a crash) is skipped on read and cut off before the
next append. Readers (resume, compare, report) skip any other line they cannot use (not UTF-8, not JSON, not
a complete record) with one warning line on stderr naming file:line, and go on. An append that fails (a full
or read-only disk) leaves the file as it was before it, never a torn record, and raises ``RecordsWriteError``.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import re
import socket
import subprocess
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, TypedDict, cast

from suite.console import warn

RECORDS_FILE = "records.jsonl"
#: where each training job's learning curve lies beside its record: OUT/curves/<job>.json
CURVES_DIR = "curves"
#: a record's attention that names a learnability probe (a model without attention) instead of an attention
PROBE_PREFIX = "probe:"


def is_probe(attention: str) -> bool:
    """Whether a record's ``attention`` names a learnability probe (``probe:<name>``), not an attention."""
    return attention.startswith(PROBE_PREFIX)


def probe_attention(name: str) -> str:
    """The ``attention`` under which probe ``name`` is planned and recorded."""
    return PROBE_PREFIX + name


def probe_name(attention: str) -> str | None:
    """The probe an ``attention`` names (``probe:gru`` -> ``gru``), None for an attention."""
    return attention[len(PROBE_PREFIX):] if is_probe(attention) else None
STATUSES = ("ok", "oom", "diverged", "timeout", "error", "skipped")
RECORD_FIELDS = ("key", "task", "family", "attention", "profile", "seed", "seq_len", "status", "error",
                 "metrics", "config", "data", "env", "started_at", "wall_s")
#: fields a record may hold besides RECORD_FIELDS (absent when the job has none)
OPTIONAL_FIELDS = ("examples",)
#: the held-out splits a training job reports (metric ``<split>_<name>``)
SPLITS = ("val", "test")


class Examples(TypedDict):
    """Per-example outcomes of one evaluation, in the evaluation's order (``encode_examples``).

    ``kind``: ``correct`` (one bit per example: the top-1 prediction was right) or ``loss`` (one float32 per
    example, lower is better: an LM window's bits per byte). ``values``: base64 of the packed bits (numpy
    ``packbits``, big bit order) or of the little-endian float32s. ``clusters``: base64 of little-endian int32
    cluster ids, one per example, where examples share a source (segments of one chapter, pairs of one block of
    books) and are not independent; None when every example is its own. ``fingerprint``: 16 hex digits of the
    SHA-256 of the examples' labels (or targets) in order, so that outcomes are paired only on the same examples.
    """

    split: str
    kind: str
    n: int
    values: str
    clusters: str | None
    fingerprint: str


def fingerprint(*arrays: Any) -> str:
    """16 hex digits of the SHA-256 of the arrays' bytes, in order (labels or targets of evaluated examples)."""
    import numpy as np

    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(np.asarray(array)).tobytes())
    return digest.hexdigest()[:16]


def encode_examples(split: str, kind: str, values: Any, fingerprint: str, clusters: Any = None) -> Examples:
    """``Examples`` of ``values`` [N] (bool for ``correct``, float for ``loss``) and optional int ``clusters`` [N]."""
    import base64

    import numpy as np

    array = np.asarray(values)
    if kind == "correct":
        packed = np.packbits(array.astype(bool)).tobytes()
    elif kind == "loss":
        packed = array.astype("<f4").tobytes()
    else:
        raise ValueError(f"examples kind must be 'correct' or 'loss', got {kind!r}")
    groups = None
    if clusters is not None:
        cluster_array = np.asarray(clusters)
        if cluster_array.shape != array.shape:
            raise ValueError(f"clusters {cluster_array.shape} do not match the outcomes {array.shape}")
        groups = base64.b64encode(cluster_array.astype("<i4").tobytes()).decode("ascii")
    return Examples(split=split, kind=kind, n=int(array.size), values=base64.b64encode(packed).decode("ascii"),
                    clusters=groups, fingerprint=fingerprint)


def decode_examples(examples: Examples) -> tuple[Any, Any]:
    """(values [N] bool or float64, clusters [N] int64 or None) of ``examples``; ValueError when malformed."""
    import base64
    import binascii

    import numpy as np

    try:
        n, raw = int(examples["n"]), base64.b64decode(examples["values"], validate=True)
        if examples["kind"] == "correct":
            values = np.unpackbits(np.frombuffer(raw, np.uint8), count=n).astype(bool)
        elif examples["kind"] == "loss":
            values = np.frombuffer(raw, "<f4").astype(np.float64)
        else:
            raise ValueError(f"unknown kind {examples['kind']!r}")
        clusters = None
        if examples.get("clusters"):
            clusters = np.frombuffer(base64.b64decode(str(examples["clusters"]), validate=True), "<i4").astype(np.int64)
    except (KeyError, TypeError, binascii.Error) as err:
        raise ValueError(f"malformed per-example outcomes ({type(err).__name__}: {err})") from None
    if len(values) != n or (clusters is not None and len(clusters) != n):
        raise ValueError(f"malformed per-example outcomes (n={n}, got {len(values)} values)")
    return values, clusters


class _RecordFields(TypedDict):
    """The fields every record has (``RECORD_FIELDS``)."""

    key: str
    task: str
    family: str
    attention: str
    profile: str
    seed: int
    seq_len: int
    status: str
    error: str | None
    metrics: dict[str, float | None]
    config: dict[str, Any]
    data: dict[str, Any]
    env: dict[str, Any]
    started_at: str
    wall_s: float | None


class Record(_RecordFields, total=False):
    """One line of ``records.jsonl``: exactly ``RECORD_FIELDS``, and those ``OPTIONAL_FIELDS`` the job has (the
    module docstring says what each holds)."""

    examples: Examples


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def job_key(task: str, attention: str, profile: str, seed: int, seq_len: int, config: dict[str, Any]) -> str:
    """A stable 16-hex-digit hash of the job's identity and resolved config (``attention`` already canonical)."""
    identity = {"task": task, "attention": attention, "profile": profile, "seed": int(seed),
                "seq_len": int(seq_len), "config": config}
    return hashlib.sha256(_canonical_json(identity).encode()).hexdigest()[:16]


def job_slug(task: str, attention: str, seq_len: int, seed: int, key: str) -> str:
    """A job's readable file name: ``<task>_<attention>_L<seq_len>_s<seed>_<key[:8]>`` with every character
    outside [A-Za-z0-9._=-] replaced by '-' (the key's start keeps jobs apart that differ in config only)."""
    return re.sub(r"[^A-Za-z0-9._=-]+", "-", f"{task}_{attention}_L{seq_len}_s{seed}_{key[:8]}")


def _clean(value: Any) -> Any:
    """JSON-safe copy: non-finite floats -> None, numpy/torch scalars -> Python numbers, tuples -> lists."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "item"):  # numpy / torch scalar
        return _clean(value.item())
    return str(value)


def make_record(**fields: Any) -> Record:
    """A record with exactly RECORD_FIELDS and those OPTIONAL_FIELDS given (not None); ValueError on a missing or
    unknown field or a bad status."""
    missing = [f for f in RECORD_FIELDS if f not in fields]
    unknown = sorted(set(fields) - set(RECORD_FIELDS) - set(OPTIONAL_FIELDS))
    if missing or unknown:
        raise ValueError(f"record fields: missing {missing}, unknown {unknown}")
    if fields["status"] not in STATUSES:
        raise ValueError(f"record status must be one of {', '.join(STATUSES)}, got {fields['status']!r}")
    chosen = [*RECORD_FIELDS, *(f for f in OPTIONAL_FIELDS if fields.get(f) is not None)]
    return cast(Record, _clean({f: fields[f] for f in chosen}))


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def records_path(path: Path | str) -> Path:
    """``DIR/records.jsonl`` for a directory, the path itself for a file."""
    path = Path(path)
    return path / RECORDS_FILE if path.is_dir() or not path.suffix else path


def _repair_torn_tail(path: Path) -> None:
    """Make the file end with a newline: keep a complete unterminated record, cut off a torn one."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        data = f.read()
        if data.endswith(b"\n"):
            return
        start = data.rfind(b"\n") + 1
        try:
            complete = isinstance(json.loads(data[start:]), dict)
        except ValueError:
            complete = False
        if complete:
            f.write(b"\n")
        else:
            f.truncate(start)
        f.flush()
        os.fsync(f.fileno())


class RecordsWriteError(OSError):
    """A record could not be written (disk full, read-only, gone); the file is as it was before the attempt."""


def append_record(path: Path | str, record: Mapping[str, Any]) -> None:
    """Append one record as a line, then flush and fsync (the file and its directory are created if needed).

    All or nothing: when the write fails part-way (ENOSPC, EROFS, ...) the file is cut back to its size before
    it, and RecordsWriteError says what failed.
    """
    path = records_path(path)
    line = (json.dumps(_clean(record), sort_keys=False, allow_nan=False) + "\n").encode("utf-8")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _repair_torn_tail(path)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            try:
                view = memoryview(line)
                while view:  # unbuffered: a failed write leaves nothing queued behind the truncate below
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            except OSError:
                os.ftruncate(fd, size)
                raise
        finally:
            os.close(fd)
    except OSError as err:
        raise RecordsWriteError(err.errno, f"cannot write a record to {path}: {err.strerror or err}") from None


_WARNED: set[tuple[Any, ...]] = set()


def _skip(path: Path, number: int, why: str, raw: bytes) -> None:
    """One warning line per unusable line, naming file:line (not repeated when the same process reads the same
    line, unchanged, again: a resumed run reads its records before its jobs and again after appending to them)."""
    key = (str(path.resolve()), number, hashlib.sha1(raw).digest())
    if key not in _WARNED:
        _WARNED.add(key)
        warn(f"{path}:{number}: {why}; line skipped")


#: what a reader needs of a record, by field, and the type it must have
_USABLE = {"key": str, "task": str, "family": str, "attention": str, "profile": str, "seed": int, "seq_len": int,
           "status": str, "metrics": dict, "config": dict, "data": dict, "env": dict}


def _unusable(record: Any) -> str | None:
    """Why ``record`` cannot be used by the readers, or None."""
    if not isinstance(record, dict):
        return "not a JSON object"
    missing = [name for name, kind in _USABLE.items() if not isinstance(record.get(name), kind)]
    if missing:
        return f"not a complete result record (missing or wrong: {', '.join(missing)})"
    if record["status"] not in STATUSES:
        return f"unknown status {record['status']!r}"
    if not isinstance(record["config"].get("metric"), str) or record["config"].get("direction") not in ("max", "min"):
        return "its config names no metric and direction"
    return None


def read_records_file(path: Path) -> list[Record]:
    """Records of one file; a torn last line is skipped quietly, any other unusable line with a warning."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ValueError(f"{path}: cannot read ({err.strerror or err})") from None
    lines = data.split(b"\n")
    records = []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        torn_candidate = number == len(lines) and not data.endswith(b"\n")
        try:
            record = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            _skip(path, number, "not UTF-8", raw)
            continue
        except ValueError as err:
            if not torn_candidate:
                _skip(path, number, f"not a JSON record ({getattr(err, 'msg', err)})", raw)
            continue
        why = _unusable(record)
        if why is not None:
            _skip(path, number, why, raw)
            continue
        records.append(record)
    return records


def read_records(path: Path | str) -> list[Record]:
    """Every record in a ``.jsonl`` file, or in the ``*.jsonl`` files of a directory (sorted by name)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.jsonl"))
        if not files:
            raise ValueError(f"{path}: no record files (*.jsonl) in this directory")
        return [r for f in files for r in read_records_file(f)]
    if not path.exists():
        raise ValueError(f"{path}: no such file or directory")
    return read_records_file(path)


def latest_by_key(records: Iterable[Record]) -> list[Record]:
    """The last record of each key, in the order the keys first appeared."""
    first: dict[str, int] = {}
    latest: dict[str, Record] = {}
    for i, record in enumerate(records):
        first.setdefault(record["key"], i)
        latest[record["key"]] = record
    return sorted(latest.values(), key=lambda r: first[r["key"]])


def ok_keys(records: Iterable[Record]) -> set[str]:
    """Keys whose latest record among ``records`` is ``ok`` (the jobs a resumed run does not run again)."""
    return {r["key"] for r in latest_by_key(records) if r["status"] == "ok"}


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def git_state(repo: Path) -> tuple[str | None, bool | None]:
    """(commit sha, whether tracked files differ from it) of the git checkout at ``repo``; (None, None) if none."""
    try:
        sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10)
        if sha.returncode != 0:
            return None, None
        status = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10)
        return sha.stdout.strip(), bool(status.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return None, None


def base_env() -> dict[str, Any]:
    """Provenance common to every job of a run (the job adds device, CUDA version and backends)."""
    sha, dirty = git_state(Path(__file__).resolve().parents[2])
    return {"hostname": socket.gethostname(), "platform": platform.platform(), "python": platform.python_version(),
            "torch": _version("torch"), "triton": _version("triton"), "timm": _version("timm"),
            "git_sha": sha, "git_dirty": dirty}


#: the split an old record (before ``val_``/``test_`` metrics) evaluated its unprefixed metrics on, by family
_LEGACY_SPLITS = {"vit": "test", "lm": "val"}


def legacy_split(record: Record) -> str | None:
    """The split of an old training record's unprefixed metrics (ViT: test; LM: val, with ``test_bpb`` beside
    it; LRA: its ``eval_split``), None for a record with split metrics or a measurement job."""
    metrics = record["metrics"]
    if any(name.startswith(("val_", "test_")) for name in metrics) and record["family"] != "lm":
        return None
    if record["family"] == "lra":
        return str(record["config"].get("hparams", {}).get("eval_split", "val"))
    if record["family"] == "lm" and "val_bpb" in metrics:
        return None
    return _LEGACY_SPLITS.get(record["family"])


#: the names an old training record's evaluation wrote unprefixed (its other metrics have no split)
LEGACY_EVAL_METRICS = frozenset({"accuracy", "accuracy_top5", "loss", "bpb", "ppl", "eval_tokens"})


def held_out_value(metrics: Mapping[str, Any], name: str, split: str, legacy: str | None) -> tuple[Any, str | None]:
    """(value, split it was measured on) of metric ``name`` on ``split`` in a record's ``metrics`` whose old
    unprefixed evaluation metrics were measured on ``legacy`` (``legacy_split``): ``<split>_<name>``; else an old
    record's unprefixed evaluation metric when it was measured on ``split``; else a metric without split
    (throughput, memory, a measurement job's metrics), split None. (None, split) when there is none."""
    if f"{split}_{name}" in metrics:
        return metrics[f"{split}_{name}"], split
    if name not in metrics:
        return None, split
    if legacy is not None and name in LEGACY_EVAL_METRICS:
        return (metrics[name], split) if legacy == split else (None, split)
    if f"val_{name}" in metrics or f"test_{name}" in metrics:
        return None, split
    return metrics[name], None


def split_metric(record: Record, name: str, split: str = "test") -> tuple[Any, str | None]:
    """``held_out_value`` of one record (its metrics and ``legacy_split``)."""
    return held_out_value(record["metrics"], name, split, legacy_split(record))

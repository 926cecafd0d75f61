"""The results store: record schema, stable keys, append + fsync, torn last lines, latest record per key."""
import errno
import json
import os

import pytest

from suite.run.records import (
    RECORD_FIELDS,
    RecordsWriteError,
    append_record,
    base_env,
    job_key,
    latest_by_key,
    make_record,
    ok_keys,
    read_records,
)

CONFIG = {"builder": "kernels", "metric": "fwd_ms", "direction": "min", "data": {"source": "random-normal"},
          "hparams": {"batch": 1, "modes": ["fwd"]}}


def record(key="k1", status="ok", **overrides):
    fields = dict(key=key, task="t", family="kernels", attention="ea", profile="smoke", seed=0, seq_len=64,
                  status=status, error=None, metrics={"fwd_ms": 1.5}, config=CONFIG,
                  data={"source": "random-normal", "substitute": False}, env={"device": "cpu"},
                  started_at="2025-01-01T00:00:00+00:00", wall_s=1.0)
    fields.update(overrides)
    return make_record(**fields)


def test_record_has_exactly_the_design_fields():
    assert list(record()) == list(RECORD_FIELDS)
    assert set(RECORD_FIELDS) == {"key", "task", "family", "attention", "profile", "seed", "seq_len", "status",
                                  "error", "metrics", "config", "data", "env", "started_at", "wall_s"}
    fields = dict(record())
    del fields["env"]
    with pytest.raises(ValueError, match="missing \\['env'\\]"):
        make_record(**fields)
    with pytest.raises(ValueError, match="unknown \\['extra'\\]"):
        make_record(**record(), extra=1)
    with pytest.raises(ValueError, match="status must be one of"):
        record(status="crashed")


def test_job_key_is_stable_and_changes_with_every_identity_field():
    key = job_key("t", "ea", "smoke", 0, 64, CONFIG)
    reordered = dict(reversed(list(CONFIG.items())))
    assert job_key("t", "ea", "smoke", 0, 64, reordered) == key
    assert len(key) == 16
    others = [job_key("u", "ea", "smoke", 0, 64, CONFIG), job_key("t", "ea:order=2", "smoke", 0, 64, CONFIG),
              job_key("t", "ea", "cpu", 0, 64, CONFIG), job_key("t", "ea", "smoke", 1, 64, CONFIG),
              job_key("t", "ea", "smoke", 0, 128, CONFIG),
              job_key("t", "ea", "smoke", 0, 64, {**CONFIG, "hparams": {"batch": 2, "modes": ["fwd"]}})]
    assert len({key, *others}) == 7


def test_append_then_read_round_trips_and_stores_nonfinite_metrics_as_null(tmp_path):
    append_record(tmp_path, record("a", metrics={"loss": float("nan"), "fwd_ms": 2.0}))
    append_record(tmp_path, record("b"))
    records = read_records(tmp_path)
    assert [r["key"] for r in records] == ["a", "b"]
    assert records[0]["metrics"] == {"loss": None, "fwd_ms": 2.0}
    assert (tmp_path / "records.jsonl").read_text().count("\n") == 2


def test_torn_last_line_is_skipped_on_read(tmp_path):
    path = tmp_path / "records.jsonl"
    append_record(path, record("a"))
    with open(path, "a") as f:
        f.write(json.dumps(record("b"))[:40])  # a crash in the middle of a write
    assert [r["key"] for r in read_records(path)] == ["a"]


@pytest.mark.parametrize("bad,why", [
    ('{"key": "b", "sta', "not a JSON record"),
    ('{"key": "b", "status": "ok"}', "not a complete result record (missing or wrong: task, family"),
    ('[1, 2]', "not a JSON object"),
    (json.dumps({**record("b"), "status": "crashed"}), "unknown status 'crashed'"),
    (json.dumps({**record("b"), "config": {}}), "its config names no metric and direction"),
])
def test_an_unusable_line_is_skipped_with_one_warning_naming_file_and_line(tmp_path, capsys, bad, why):
    path = tmp_path / "records.jsonl"
    append_record(path, record("a"))
    with open(path, "a") as f:
        f.write(bad + "\n")
    append_record(path, record("c"))
    assert [r["key"] for r in read_records(path)] == ["a", "c"]
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{path}:2: {why}" in err and "line skipped" in err


def test_an_unusable_line_read_again_after_an_append_is_warned_about_once(tmp_path, capsys):
    path = tmp_path / "records.jsonl"
    path.write_text('{"key": \n')
    assert read_records(path) == []  # a resumed run reads its records before its jobs ...
    append_record(path, record("a"))
    assert [r["key"] for r in read_records(path)] == ["a"]  # ... and again after appending to them
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{path}:1: not a JSON record" in err
    path.write_text('{"key": 1}\n')  # the line changed: a new warning
    assert read_records(path) == []
    assert f"{path}:1: not a complete result record" in capsys.readouterr().err


def test_a_line_that_is_not_utf8_is_skipped_naming_the_file(tmp_path, capsys):
    path = tmp_path / "records.jsonl"
    append_record(path, record("a"))
    with open(path, "ab") as f:
        f.write(b'{"key": "\xff\xfe"}\n')
    append_record(path, record("c"))
    assert [r["key"] for r in read_records(path)] == ["a", "c"]
    assert f"{path}:2: not UTF-8" in capsys.readouterr().err


def test_a_failed_append_leaves_the_file_as_it_was(tmp_path, monkeypatch):
    path = tmp_path / "records.jsonl"
    append_record(path, record("a"))
    before = path.read_bytes()
    real_fsync = os.fsync

    def full_disk(fd):  # the write reached the file, then the disk filled up
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(RecordsWriteError, match="No space left on device"):
        append_record(path, record("b"))
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert path.read_bytes() == before
    append_record(path, record("c"))
    assert [r["key"] for r in read_records(path)] == ["a", "c"]


def test_append_after_a_torn_tail_cuts_the_torn_record_off(tmp_path):
    path = tmp_path / "records.jsonl"
    append_record(path, record("a"))
    with open(path, "a") as f:
        f.write('{"key": "b", "status": "o')
    append_record(path, record("c"))
    assert [r["key"] for r in read_records(path)] == ["a", "c"]


def test_complete_but_unterminated_last_record_is_kept(tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_text(json.dumps(record("a")))  # cut just before its newline
    assert [r["key"] for r in read_records(path)] == ["a"]
    append_record(path, record("b"))
    assert [r["key"] for r in read_records(path)] == ["a", "b"]


def test_latest_record_per_key_wins_and_only_ok_keys_are_done(tmp_path):
    append_record(tmp_path, record("a", status="timeout", error="slow"))
    append_record(tmp_path, record("b"))
    append_record(tmp_path, record("a"))
    append_record(tmp_path, record("c", status="oom", error="big"))
    latest = latest_by_key(read_records(tmp_path))
    assert [(r["key"], r["status"]) for r in latest] == [("a", "ok"), ("b", "ok"), ("c", "oom")]
    assert ok_keys(read_records(tmp_path)) == {"a", "b"}
    assert ok_keys([]) == set()


def test_reading_a_missing_path_or_empty_directory_says_so(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        read_records(tmp_path / "nope.jsonl")
    with pytest.raises(ValueError, match="no record files"):
        read_records(tmp_path)


def test_base_env_names_versions_host_and_git_state():
    env = base_env()
    for field in ("hostname", "python", "torch", "triton", "git_sha", "git_dirty"):
        assert field in env
    assert env["torch"]

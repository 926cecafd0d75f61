"""Declared hyperparameters at the command line (`list --hparams`, `--set`) and what a record's env claims."""
import json

import pytest
import torch

from suite.cli import main
from suite.families import lra
from suite.run.job import JobRequest, JobSpec, run_job


def _table_rows(text: str) -> dict[str, str]:
    """The body rows of rich tables, by the text of their first cell."""
    return {line.split("│")[1].strip(): line for line in text.splitlines() if line.startswith("│")}


def test_list_hparams_of_a_family_prints_every_declared_name_type_and_default(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "250")  # one line per row
    assert main(["list", "--family", "lra", "--hparams"]) == 0
    out = capsys.readouterr().out
    assert "builder lra:" in out and "builder vit" not in out and "builder kernels" not in out
    rows = _table_rows(out)
    assert set(rows) == {p.name for p in lra.HPARAMS}
    for p in lra.HPARAMS:
        cells = [cell.strip() for cell in rows[p.name].split("│")[1:-1]]
        assert cells[1:3] == [p.expected(), "-" if p.default is None else str(p.default)], p.name
    assert [c.strip() for c in rows["pool"].split("│")[2:4]] == ["one of cls, mean", "cls"]


def test_list_hparams_of_an_unknown_family_exits_2_in_one_line(capsys):
    assert main(["list", "--family", "nope", "--hparams"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "error: unknown family 'nope'; valid families: kernels, lm, lra, vit\n"


def _planned_key(capsys, *sets: str) -> str:
    argv = ["run", "kernels-op", "--plan", "--format", "json", "--seq-len", "64", "--attn", "softmax"]
    assert main(argv + [arg for s in sets for arg in ("--set", s)]) == 0
    (job,) = json.loads(capsys.readouterr().out)["jobs"]
    return job["key"]


def test_a_set_override_changes_the_job_key_and_the_same_override_gives_the_same_key(capsys):
    plain = _planned_key(capsys)
    seven = _planned_key(capsys, "repeats=7")
    assert seven != plain
    assert _planned_key(capsys, "repeats=7") == seven  # the key is a function of the resolved config
    assert _planned_key(capsys, "repeats=8") not in (plain, seven)
    assert _planned_key(capsys, "repeats=7", "batch_size=3") not in (plain, seven)


def test_a_record_on_a_machine_without_cuda_claims_no_cuda_version_but_keeps_the_torch_build(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", "12.4")  # a CUDA build of torch on a machine without CUDA
    config = {"builder": "test-tiny", "metric": "accuracy", "direction": "max", "data": {"source": "tiny-random"},
              "hparams": {"batch_size": 8, "steps": 1}}
    import tiny_jobs  # noqa: F401  (registers the test-tiny builder)

    outcome = run_job(JobRequest(JobSpec("tiny", "test", "softmax", "smoke", 0, 8, config, "k"), "cpu"))
    assert outcome.status == "ok", outcome.error
    assert outcome.env["cuda"] is None  # the record's env is this (runner: {**base_env, **outcome env})
    assert outcome.env["torch_cuda_build"] == "12.4"


@pytest.mark.parametrize("value,new", [("token", "cls"), ("avg", "mean")])
def test_an_old_pool_value_in_set_names_the_new_value(capsys, value, new):
    assert main(["run", "vit-cifar10", "--plan", "--set", f"pool={value}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"'{value}' was renamed '{new}'" in err

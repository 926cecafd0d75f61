"""The command line: every misuse exits 2 with one line, --help is complete, list/run/compare/report/data work."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from suite.cli import main
from suite.harness.records import read_records
from tiny_jobs import write_tiny_task

RUN_SUITE = Path(__file__).resolve().parents[1] / "run_suite.py"
COMMON_OPTIONS = ("--attn", "--profile", "--seeds", "--seq-len", "--out", "--data-root", "--device", "--job-timeout",
                  "--resume")


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A task root with test tasks (one whose data set is missing, one broken), a run with records, a bad file."""
    monkeypatch.setenv("EA_SUITE_PLUGINS", "tiny_jobs")
    monkeypatch.setenv("COLUMNS", "250")
    write_tiny_task(tmp_path / "tasks", name="tiny-nodata", smoke='{steps: 1, inject: {"8": missing}}')
    monkeypatch.setenv("EA_SUITE_TASKS", str(tmp_path / "tasks"))
    run = tmp_path / "run"
    run.mkdir()
    (run / "records.jsonl").write_text(
        '{"key": "k", "task": "tiny", "family": "test", "attention": "softmax", "profile": "smoke", "seed": 0, '
        '"seq_len": 8, "status": "ok", "error": null, "metrics": {"accuracy": 0.5}, "config": {"metric": "accuracy", '
        '"direction": "max"}, "data": {"source": "x", "substitute": false}, "env": {}, "started_at": "t", "wall_s": 1}\n')
    (tmp_path / "bad.jsonl").write_text('{"key": "a", "status": "ok"}\n{"key": \n{"key": "b", "status": "ok"}\n')
    monkeypatch.chdir(tmp_path)
    return tmp_path


MISUSES = [
    ([], "the following arguments are required: COMMAND"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["run"], "the following arguments are required: task"),
    (["run", "kernels-noncasual"], "unknown task 'kernels-noncasual' (did you mean 'kernels-noncausal'?); valid tasks:"),
    (["run", "kernels-op", "--attn", "ea,nope"], "unknown attention 'nope'"),
    (["run", "kernels-op", "--attn", "ea:ordr=2"], "has no option 'ordr'"),
    (["run", "kernels-op", "--profile", "huge"], "invalid choice: 'huge'"),
    (["run", "kernels-op", "--seq-len", "0,64"], "sequence lengths must be positive"),
    (["run", "kernels-op", "--seq-len", "1k"], "expected positive integers"),
    (["run", "kernels-op", "--seeds", "0"], "expected a positive integer"),
    (["run", "kernels-op", "--job-timeout", "-1"], "expected a positive number of seconds"),
    (["run", "kernels-op", "--device", "tpu"], "unknown device 'tpu'"),
    (["run", "kernels-op", "--data-root", "no/such/dir"], "--data-root no/such/dir: no such directory"),
    (["run", "tiny-nodata"], "tiny data set not found"),
    (["suite", "--resume"], "--resume needs --out DIR"),
    (["suite", "--families", "vision"], "unknown family 'vision'"),
    (["suite", "--tasks", "kernels-op,nope"], "unknown task 'nope'"),
    (["suite", "--tasks", "tiny-nodata", "--out", "run"], "already holds 1 records; pass --resume"),
    (["list", "--family", ","], "expected a comma-separated list"),
    (["compare"], "the following arguments are required: RUN"),
    (["compare", "no-such-run"], "no-such-run: no such file or directory"),
    (["compare", "run", "--metric", "nope"], "no record has metric 'nope'; metrics in these runs: accuracy"),
    (["compare", "run", "--format", "xml"], "invalid choice: 'xml'"),
    (["compare", "bad.jsonl"], "bad.jsonl:2: not a JSON record"),
    (["report", "no-such-run"], "no-such-run: not a run directory"),
    (["data"], "the following arguments are required: ACTION"),
    (["data", "generate", "lra-nope", "--out", "x"], "invalid choice: 'lra-nope'"),
    (["data", "generate", "lra-listops"], "the following arguments are required: --out"),
    (["data", "generate", "lra-listops", "--out", "lo", "--min-length", "90", "--max-length", "10"], "lra-listops"),
]
if not torch.cuda.is_available():
    MISUSES.append((["run", "kernels-op", "--device", "cuda"], "torch sees no CUDA device"))


@pytest.mark.parametrize("argv,message", MISUSES, ids=[" ".join(a) or "(nothing)" for a, _ in MISUSES])
def test_every_misuse_exits_2_with_a_one_line_message(workdir, capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert message in err and "Traceback" not in err


def test_a_broken_task_file_is_a_usage_error_naming_file_and_field(workdir, capsys):
    (workdir / "tasks" / "test" / "broken.yaml").write_text("name: broken\nfamily: test\n")
    assert main(["list"]) == 2
    err = capsys.readouterr().err
    assert "broken.yaml: field 'description'" in err and err.count("\n") == 1


def test_the_real_process_exits_2_with_one_line_on_stderr():
    result = subprocess.run([sys.executable, str(RUN_SUITE), "run", "no-such-task"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith("error: unknown task 'no-such-task'") and result.stderr.count("\n") == 1


HELP = [[], ["list"], ["run"], ["suite"], ["compare"], ["report"], ["bench"], ["data"], ["data", "generate"],
        ["data", "generate", "lra-listops"], ["data", "generate", "lra-pathfinder"]]


@pytest.mark.parametrize("argv", HELP, ids=[" ".join(a) or "(top)" for a in HELP])
def test_help_of_every_command_exits_0_and_describes_it(capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: run_suite.py")
    if argv in (["run"], ["suite"]):
        assert all(option in out for option in COMMON_OPTIONS)
    if not argv:
        assert all(command in out for command in ("list", "run", "suite", "compare", "report", "bench", "data"))


def test_list_prints_every_task_with_family_lengths_and_data_source(workdir, capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("kernels-noncausal", "kernels-causal", "kernels-decode", "kernels-op", "tiny-nodata"):
        assert name in out
    assert "random-normal" in out and "tiny-random" in out and "1024,2048,4096" in out


def test_data_generate_writes_listops_in_the_lra_layout(tmp_path, capsys):
    out = tmp_path / "listops-1000"
    assert main(["data", "generate", "lra-listops", "--out", str(out), "--num-train", "2", "--num-val", "1",
                 "--num-test", "1", "--min-length", "10", "--max-length", "60"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["basic_test.tsv", "basic_train.tsv", "basic_val.tsv"]
    assert (out / "basic_train.tsv").read_text().startswith("Source\tTarget")


def test_run_a_kernels_task_then_compare_and_report_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    out = tmp_path / "run"
    code = main(["run", "kernels-op", "--attn", "ea,softmax", "--seq-len", "32,64", "--out", str(out)])
    assert code == 0, capsys.readouterr().out
    records = read_records(out)
    assert sorted((r["attention"], r["seq_len"]) for r in records) == [
        ("ea", 32), ("ea", 64), ("softmax", 32), ("softmax", 64)]
    for r in records:
        assert r["status"] == "ok" and r["family"] == "kernels" and r["data"] == {"source": "random-normal",
                                                                                   "substitute": False}
        assert r["metrics"]["fwd_ms"] > 0 and r["metrics"]["fwdbwd_ms"] > 0
        assert r["metrics"]["check_error"] <= 1e-4 and r["env"]["backends"][r["attention"]]
    capsys.readouterr()
    assert main(["compare", str(out), "--format", "markdown"]) == 0
    table = capsys.readouterr().out
    assert "kernels-op · fwd_ms ↓" in table and "scaling against L" in table
    assert main(["report", str(out)]) == 0
    assert (out / "report.md").exists() and (out / "plots" / "kernels-op-vs-L.png").exists()

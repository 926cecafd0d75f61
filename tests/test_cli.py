"""The command line: every misuse exits 2 with one line, --help is complete, list/run/compare/report/data work."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny_jobs import write_tiny_task

from suite.cli import main
from suite.run.records import read_records

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
        '"direction": "max"}, "data": {"source": "x", "substitute": false}, "env": {}, "started_at": "t", '
        '"wall_s": 1}\n')
    (tmp_path / "empty.jsonl").write_text("")
    good = (run / "records.jsonl").read_text()
    (tmp_path / "bad.jsonl").write_bytes(b'{"key": "a", "status": "ok"}\n{"key": \n' + good.encode() + b"\xff\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


MISUSES = [
    ([], "the following arguments are required: COMMAND"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["run"], "the following arguments are required: task"),
    (["run", "kernels-noncasual"],
     "unknown task 'kernels-noncasual' (did you mean 'kernels-noncausal'?); valid tasks:"),
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
    (["compare", "empty.jsonl"], "empty.jsonl: no records"),
    (["report", "no-such-run"], "no-such-run: not a run directory"),
    (["data"], "the following arguments are required: ACTION"),
    (["data", "generate", "lra-nope", "--out", "x"], "invalid choice: 'lra-nope'"),
    (["data", "generate", "lra-listops"], "the following arguments are required: --out"),
    (["data", "generate", "lra-listops", "--out", "lo", "--min-length", "90", "--max-length", "10"], "lra-listops"),
    (["run", "kernels-op", "--attn", "ea:order=3"], "order must be a non-negative even integer"),
    (["run", "kernels-op", "--attn", "ea:order=-2"], "order must be a non-negative even integer"),
    (["run", "kernels-op", "--attn", "ea:order=abc"], "option order='abc' must be an integer"),
    (["run", "kernels-op", "--attn", "ea:order=2.0"], "option order=2.0 must be an integer"),
    (["run", "kernels-op", "--attn", "ea:backend=nosuch"], "unknown backend 'nosuch' for ea"),
    (["run", "kernels-op", "--attn", "softmax:backend=../../x"], "unknown backend '../../x' for softmax"),
    (["run", "kernels-op", "--attn", "ea:order=2,order=4"], "option 'order' is given twice"),
    (["run", "kernels-op", "--seeds", "100000000"], "the plan has"),
    (["run", "kernels-op", "--out", ""], "expected a directory, got an empty string"),
    (["run", "kernels-op", "--set", "repeatz=3"], "did you mean 'repeats'?"),
    (["run", "kernels-op", "--set", "repeats=-1"], "expected an integer >= 1"),
    (["run", "kernels-op", "--set", "repeats"], "expected key=value"),
    (["run", "kernels-op", "--set", "lr=1e-3"], "unknown hyperparameter 'lr'"),
    (["list", "--family", "nosuch"], "unknown family 'nosuch'"),
]
if not torch.cuda.is_available():
    MISUSES.append((["run", "kernels-op", "--device", "cuda"], "torch sees no CUDA device"))


@pytest.mark.parametrize("argv,message", MISUSES, ids=[" ".join(a) or "(nothing)" for a, _ in MISUSES])
def test_every_misuse_exits_2_with_a_one_line_message(workdir, capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert message in err and "Traceback" not in err


READERS = {  # command reading bad.jsonl (or a run whose records.jsonl is it) -> (file it names, what it prints)
    "compare": (["compare", "bad.jsonl"], "bad.jsonl", "tiny"),
    "compare csv": (["compare", "--format", "csv", "bad.jsonl"], "bad.jsonl", "tiny"),
    "report": (["report", "badrun"], "badrun/records.jsonl", "wrote badrun/report.md"),
    "run --resume": (["run", "kernels-op", "--attn", "softmax", "--seq-len", "16", "--out", "badrun", "--resume"],
                     "badrun/records.jsonl", "kernels-op"),
}


@pytest.mark.parametrize("reader", list(READERS))
def test_readers_skip_unusable_record_lines_with_one_warning_each_and_go_on(workdir, capsys, reader):
    command, named, printed = READERS[reader]
    (workdir / "badrun").mkdir()
    (workdir / "badrun" / "records.jsonl").write_bytes((workdir / "bad.jsonl").read_bytes())
    assert main(command) == 0
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 3, captured.err
    assert f"{named}:1: not a complete result record" in warnings[0]
    assert f"{named}:2: not a JSON record" in warnings[1] and f"{named}:4: not UTF-8" in warnings[2]
    assert printed in captured.out and "Traceback" not in captured.err


TINY_TASK_LINES = {
    "typo'd hyperparameter": ("  cpu: {steps: 4}", "  cpu: {stepz: 4}",
                              "unknown hyperparameter 'stepz' for builder 'test-tiny' (did you mean 'steps'?)"),
    "infinite number": ("lr: 0.01", "lr: .inf", "'.inf' is not a finite number"),
    "duplicate key": ("seq_len: [8]", "seq_len: [8]\nseq_len: [16]", "the key 'seq_len' is given twice"),
    "renamed key": ("batch_size: 8", "batch: 8", "'batch' was renamed 'batch_size'"),
    "bad default attention": ("attentions: [softmax]", "attentions: ['ea:order=3']",
                              "order must be a non-negative even integer"),
}


@pytest.mark.parametrize("case", list(TINY_TASK_LINES))
@pytest.mark.parametrize("command", [["list"], ["run", "tiny"]])
def test_a_bad_task_file_stops_every_command_before_any_job_in_one_line(workdir, capsys, case, command):
    old, new, message = TINY_TASK_LINES[case]
    path = workdir / "tasks" / "test" / "tiny.yaml"
    text = (workdir / "tasks" / "test" / "tiny-nodata.yaml").read_text().replace("tiny-nodata", "tiny")
    assert old in text
    path.write_text(text.replace(old, new))
    code = main([*command, "--out", "never"] if command[0] == "run" else command)
    err = capsys.readouterr().err
    if case == "bad default attention" and command == ["list"]:
        assert code == 0  # listing shows the task; planning its jobs refuses the spec
        return
    assert code == 2 and err.count("\n") == 1 and message in err and "Traceback" not in err, err
    assert not (workdir / "never").exists()


@pytest.mark.parametrize("content,message", [(b"name: tiny\n# caf\xe9\n", "not UTF-8 text"),
                                             (b"x: " + b"[" * 20000 + b"]" * 20000 + b"\n", "nested too deeply")])
def test_an_unreadable_task_file_is_one_line_in_every_command(workdir, capsys, content, message):
    (workdir / "tasks" / "test" / "tiny.yaml").write_bytes(content)
    for command in (["list"], ["run", "tiny"], ["suite", "--tasks", "tiny"]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err and "Traceback" not in err, err


def test_a_multi_option_attention_spec_is_one_attention(workdir, capsys):
    assert main(["run", "kernels-op", "--attn", "ea:order=2,qk_norm=false", "--seq-len", "16", "--out", "multi"]) == 0
    (record,) = read_records(workdir / "multi")
    assert record["attention"] == "ea:order=2,qk_norm=False"


@pytest.mark.parametrize("attn,planned", [
    ("ea:order=2,qk_norm=false", ["ea:order=2,qk_norm=False"]),
    ("ea:order=2,qk_norm=false;softmax", ["ea:order=2,qk_norm=False", "softmax"]),
    ("ea:order=2,qk_norm=false,softmax", ["ea:order=2,qk_norm=False", "softmax"]),
])
def test_a_multi_option_attention_spec_is_one_attention_in_a_suite_too(workdir, capsys, attn, planned):
    assert main(["suite", "--tasks", "tiny-nodata", "--attn", attn, "--plan", "--format", "json", "--device",
                 "cpu"]) == 0
    jobs = json.loads(capsys.readouterr().out)["jobs"]
    assert [job["attention"] for job in jobs] == planned


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


# -- settings: --download, artifacts, --lm-eval-tasks, --set --------------------------------------------------

ENV_PROBE = '''
import os
from suite.run.builders import Workload, register_builder

@register_builder("test-env-probe", [])
def build_probe(ctx):
    seen = {name: value for name, value in os.environ.items() if name.startswith("EA_SUITE_")
            and name not in ("EA_SUITE_PLUGINS", "EA_SUITE_TASKS")}
    return Workload(measure=lambda: {"probe": 1.0},
               data_info={"source": "env-probe", "substitute": False, "env": seen, "download": ctx.download,
                          "artifacts_dir": str(ctx.artifacts_dir), "data_root": str(ctx.data_root)})
'''
PROBE_TASK = """\
name: env-probe
family: test
description: reports the settings its job receives
builder: test-env-probe
data: {source: env-probe}
metric: {name: probe, direction: max}
seq_len: [8]
attentions: [softmax]
profiles: {smoke: {}, cpu: {}, full: {}}
"""


@pytest.fixture
def probe(workdir, monkeypatch):
    """The workdir with a test-env-probe builder (a plugin module) and its task ``env-probe``."""
    (workdir / "env_probe.py").write_text(ENV_PROBE)
    (workdir / "tasks" / "test" / "env-probe.yaml").write_text(PROBE_TASK)
    monkeypatch.syspath_prepend(str(workdir))
    monkeypatch.setenv("EA_SUITE_PLUGINS", "tiny_jobs,env_probe")
    return workdir


@pytest.mark.parametrize("command", ["run", "suite"])
def test_help_of_run_and_suite_documents_the_lm_options_and_the_checkpoint_folder(capsys, command):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--lm-eval-tasks T,U" in out and "lambada_openai,hellaswag" in out and "'none' skips lm-eval" in out
    assert "--download" in out and "nothing is downloaded without it" in out
    assert "OUT/artifacts/<job>/checkpoint/" in out and "--set KEY=VALUE" in out


@pytest.mark.parametrize("flags,download", [([], False), (["--download"], True)])
def test_builders_get_their_settings_in_the_build_context_not_the_environment(probe, flags, download):
    assert main(["run", "env-probe", "--out", "probe-run", *flags]) == 0
    (record,) = read_records(probe / "probe-run")
    assert record["data"]["download"] is download and record["env"]["download"] is download
    assert record["data"]["env"] == {}  # the runner sets no EA_SUITE_* variable for the job
    artifacts = Path(record["data"]["artifacts_dir"])
    assert artifacts.parent == (probe / "probe-run" / "artifacts").resolve()
    assert artifacts.name.startswith("env-probe_softmax_L8_s0_")


def test_lm_eval_tasks_go_into_the_config_and_key_of_lm_jobs_only(workdir):
    from suite.run.pool.plan import plan_jobs
    from suite.tasks import load_tasks, select_tasks

    tasks = select_tasks(load_tasks(), ["lm-kjv", "kernels-op"])
    default = {j.task: j for j in plan_jobs(tasks, "smoke", ["softmax"])}
    chosen = {j.task: j for j in plan_jobs(tasks, "smoke", ["softmax"],
                                           overrides={"lm_eval_tasks": ["suite_heldout_cloze"]})}
    assert default["lm-kjv"].config["hparams"]["lm_eval_tasks"] == ["suite_heldout_ppl"]  # the task file's
    assert chosen["lm-kjv"].config["hparams"]["lm_eval_tasks"] == ["suite_heldout_cloze"]
    assert chosen["lm-kjv"].key != default["lm-kjv"].key
    assert chosen["kernels-op"] == default["kernels-op"]
    none = {j.task: j for j in plan_jobs(tasks, "smoke", ["softmax"], overrides={"lm_eval_tasks": []})}
    assert none["lm-kjv"].config["hparams"]["lm_eval_tasks"] == []


def test_lm_eval_tasks_on_tasks_without_lm_eval_is_a_usage_error(workdir, capsys):
    assert main(["run", "kernels-op", "--lm-eval-tasks", "suite_heldout_ppl"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--set lm_eval_tasks: unknown hyperparameter 'lm_eval_tasks'" in err


def test_an_unknown_lm_eval_task_is_refused_before_any_training(workdir, capsys, monkeypatch):
    import lm_eval.tasks

    class KnownTasks:  # stands in for lm-eval's index of its ~14k standard tasks (slow to build)
        def __init__(self, **kwargs):
            self.all_tasks = ["lambada_openai", "hellaswag", "suite_heldout_ppl"]

    monkeypatch.setattr(lm_eval.tasks, "TaskManager", KnownTasks)
    assert main(["run", "lm-kjv", "--lm-eval-tasks", "suite_heldout_ppl,lambada_opena", "--out", "x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown lm-eval task(s) lambada_opena (did you mean lambada_openai?)" in err
    assert not (workdir / "x").exists()


def test_lm_eval_tasks_option_reaches_the_lm_builder_and_the_record(tmp_path, capsys, monkeypatch):
    out = tmp_path / "lm"
    code = main(["run", "lm-kjv", "--attn", "softmax", "--lm-eval-tasks", "suite_heldout_cloze", "--out", str(out)])
    assert code == 0, capsys.readouterr().out
    (record,) = read_records(out)
    assert record["status"] == "ok" and record["config"]["hparams"]["lm_eval_tasks"] == ["suite_heldout_cloze"]
    lm_eval_metrics = [name for name in record["metrics"] if name.startswith("lm_eval.")]
    assert lm_eval_metrics and all(name.startswith("lm_eval.suite_heldout_cloze.") for name in lm_eval_metrics)
    (folder,) = (out / "artifacts").glob("lm-kjv_softmax_L32_s0_*")
    assert (folder / "checkpoint" / "model.pt").exists()


def test_the_tools_are_commands_of_the_cli(capsys, tmp_path):
    """The static Hopper profile, the approximation table and the checkpoint evaluation are run_suite.py commands."""
    assert main(["approx", "--length", "16"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("| q, k scale (RMS)") and "| t=6 " in out
    assert main(["hopper-profile"]) == 2  # the tests run under TRITON_INTERPRET=1: nothing real to compile
    assert "unset TRITON_INTERPRET" in capsys.readouterr().err
    assert main(["eval-checkpoint", str(tmp_path / "no-such-checkpoint"), "--tasks", "none"]) == 2
    assert capsys.readouterr().err.count("\n") == 1

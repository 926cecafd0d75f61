"""gpu-check: never empty-handed (faults, kills, signals, a spent budget), its plan and estimate, verdicts that can
fail, and its run on tiny CPU shapes."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from suite import gpu_check
from suite.cli import main
from suite.gpu_check import plan as plan_mod
from suite.gpu_check import report, rows, runner
from suite.gpu_check.plan import TINY, RowSpec, Shapes, timing_id
from suite.gpu_check.targets import TARGETS, evaluate_targets

ROOT = Path(__file__).resolve().parents[1]


# -- the command -----------------------------------------------------------------------------------------

@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_gpu_check_without_cuda_refuses_in_one_line(capsys, tmp_path):
    assert main(["gpu-check", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs CUDA" in err and "--tiny --device cpu" in err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("argv, words", [
    (["--device", "cpu"], "only with --tiny"),
    (["--device", "tpu", "--tiny"], "--device must be"),
    (["--device", "cuda:x", "--tiny"], "--device must be"),
    (["--tiny", "--device", "cpu", "--budget", "0"], "positive number of seconds"),
    (["--tiny", "--device", "cpu", "--budget", "nan"], "positive number of seconds"),
    (["--tiny", "--device", "cpu", "--card", "H100"], "--card applies to --plan only"),
    (["--tiny", "--device", "cpu", "--budget", "0.5"], "over the budget"),
])
def test_gpu_check_bad_options_exit_2_in_one_line_before_any_row(capsys, tmp_path, argv, words):
    assert main(["gpu-check", "--out", str(tmp_path / "out")] + argv) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("where", ["under a file", "read-only"])
def test_an_unusable_out_is_refused_before_the_first_row(capsys, tmp_path, where):
    if where == "under a file":
        (tmp_path / "file").write_text("x")
        out = tmp_path / "file" / "gpu"
    else:
        if os.geteuid() == 0:
            pytest.skip("root writes into a read-only folder")
        out = tmp_path / "ro"
        out.mkdir()
        out.chmod(0o500)
    assert main(["gpu-check", "--tiny", "--device", "cpu", "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert "--out" in captured.err and captured.err.count("\n") == 1
    assert "[  1/" not in captured.out  # no row ran


@pytest.mark.slow
def test_gpu_check_tiny_on_cpu_runs_every_step_and_writes_the_report(capsys, tmp_path):
    assert main(["gpu-check", "--tiny", "--device", "cpu", "--out", str(tmp_path)]) == 0
    folder = tmp_path / "cpu"
    header, got, end = report.read(folder)
    assert "gpu-check" in header["command"] and "--tiny" in header["command"]
    assert end["status"] == "complete"
    assert [p["id"] for p in header["plan"]] == list(got)  # every planned row recorded, in plan order
    checks = [r for r in got.values() if r["step"] in ("screen", "checks")]
    assert {r["what"] for r in checks} == {f"ea {c}" for c in plan_mod.EA_CASES}
    assert all(r["status"] == "ok" and r["max_rel_error"] <= r["tolerance"] for r in checks), checks
    # the baselines need CUDA: listed, labelled as skipped, never silently absent
    baselines = [r for r in got.values() if r["step"] == "baseline_checks"]
    assert {r["id"] for r in baselines} == {f"baseline/{k}" for k in plan_mod.BASELINES}
    assert all(r["status"].startswith("skipped: needs CUDA") for r in baselines)
    assert got["bandwidth/copy"]["gb_per_s"] > 0
    for L in TINY.time_lengths:
        for key, mode in [("ea", "fwd"), ("ea", "fwdbwd"), ("sdpa", "fwd"), ("sdpa", "fwdbwd")]:
            assert got[timing_id(key, mode, L, "float32")]["status"] == "ok", (key, mode, L)
    for key in ("ea", "softmax"):
        decode = got[timing_id(key, "decode", TINY.longest, "float32")]
        assert decode["status"] == "ok" and decode["state_bytes"] > 0
    for name in ("README.md", "checks.csv", "timings.csv", "targets.csv"):
        assert (folder / name).stat().st_size > 0
    readme = (folder / "README.md").read_text()
    assert "**Status: complete**" in readme and "## Targets" in readme and "skipped: needs CUDA" in readme
    out = capsys.readouterr().out
    assert "estimated" in out and "README.md" in out and all(rule in out for rule in TARGETS.values())
    assert "baselines importable here: fla no, mamba_ssm no" in out


def test_gpu_check_runs_with_only_the_gpu_boxs_packages(tmp_path):
    """The GPU box has no lm-eval, submitit, fla, mamba-ssm, psutil or tabulate: gpu-check must not need them."""
    blocker = tmp_path / "sitecustomize.py"
    blocker.write_text(textwrap.dedent("""
        import sys
        NAMES = {"lm_eval", "submitit", "fla", "mamba_ssm", "psutil", "tabulate", "sklearn", "timm"}
        class _Absent:  # every finder sees these packages as not installed
            def __init__(self, inner):
                self.inner = inner
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in NAMES:
                    return None
                return self.inner.find_spec(name, path, target)
        sys.meta_path[:] = [_Absent(f) if hasattr(f, "find_spec") else f for f in sys.meta_path]
    """))
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # fast; .ci/box runs the interpreter
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(ROOT)])
    proc = subprocess.run([sys.executable, "run_suite.py", "gpu-check", "--tiny", "--device", "cpu", "--out",
                           str(tmp_path / "out")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    _, got, end = report.read(tmp_path / "out" / "cpu")
    assert end["status"] == "complete"
    errors = [r for r in got.values() if r["status"].startswith("error")]
    assert not errors, errors


# -- the plan and its estimate ---------------------------------------------------------------------------

def test_the_plan_runs_the_headline_rows_first_and_fits_eight_minutes_on_an_h100():
    card = plan_mod.card_for("NVIDIA H100 80GB HBM3")
    assert card.name == "NVIDIA H100 SXM"
    plan = gpu_check.plan_rows(Shapes(), "cuda", card, {"fla": True, "mamba_ssm": True})
    steps = [r.step for r in plan]
    assert steps[0] == "environment"
    order = [plan_mod.STEPS.index(s) for s in steps]
    assert order == sorted(order)  # sections in run order, never interleaved
    headline = [r for r in plan if r.step == "headline"]
    assert [(r.kwargs["key"], r.kwargs["L"]) for r in headline[:3]] == [("ea", 16384), ("sdpa-flash", 16384),
                                                                         ("sdpa-cudnn", 16384)]
    assert {(r.kwargs["key"], r.kwargs["mode"], r.kwargs["L"]) for r in headline} >= {
        ("ea", "fwdbwd", 4096), ("ea", "fwdbwd", 65536), ("ea", "decode", 65536), ("softmax", "decode", 65536)}
    # every EA timing rests on the check of its own shape, which runs before it
    position = {r.id: i for i, r in enumerate(plan)}
    for r in plan:
        for need in r.requires:
            assert position[need] < position[r.id], (r.id, need)
    assert all(r.requires for r in plan if r.call == "timing" and r.kwargs["key"] == "ea"
               and r.kwargs["mode"] != "decode")
    assert gpu_check.total_estimate(plan) <= 8 * 60
    assert len({r.id for r in plan}) == len(plan)


def test_plan_prints_the_estimate_for_a_named_card_without_a_gpu(capsys, tmp_path):
    assert main(["gpu-check", "--plan", "--card", "H200", "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "NVIDIA H200" in out and "estimated" in out and "headline" in out
    assert not (tmp_path / "out").exists()


def test_an_unknown_card_is_estimated_with_slow_figures():
    assert plan_mod.card_for("Some Future GPU") is plan_mod.UNKNOWN_CARD
    assert plan_mod.card_for("NVIDIA H100 PCIe").mem_gb_s < plan_mod.card_for("NVIDIA H100 80GB HBM3").mem_gb_s


# -- never empty-handed: faults in the worker, kills, signals, the budget ----------------------------------

def _spec(i, call, **kw):
    return RowSpec(f"fake/{i}", "checks", {"what": f"fake {i}"}, f"gpu_check_fakes:{call}", kw,
                   estimate_s=0.1, timeout_s=kw.pop("_timeout", None) or 20)


def _header(plan):
    return {"command": "test", "card": "cpu", "cost_card": "cpu", "device_kind": "cpu", "shapes": TINY.to_dict(),
            "plan": [{"id": r.id, "step": r.step, "estimate_s": r.estimate_s} for r in plan], "estimate_s": 1}


def _run(plan, folder, budget=600.0):
    folder.mkdir(parents=True, exist_ok=True)
    return runner.run_plan(plan, folder, _header(plan), "cpu", TINY, "torch", budget, progress=lambda _: None,
                           worker_start_s=10)


def test_a_lost_cuda_context_a_killed_or_exiting_worker_and_a_hang_each_cost_one_row(tmp_path):
    plan = [_spec(0, "ok"), _spec(1, "illegal_address"), _spec(2, "ok"), _spec(3, "kill_own_process"),
            _spec(4, "ok"), _spec(5, "exit_own_process"), _spec(6, "ok"),
            RowSpec("fake/7", "checks", {"what": "hang"}, "gpu_check_fakes:hang", {}, 0.1, timeout_s=3),
            _spec(8, "out_of_memory"), _spec(9, "ok")]
    result = _run(plan, tmp_path)
    got = report.read(tmp_path)[1]
    assert list(got) == [r.id for r in plan]  # every row is in the record
    status = {k: r["status"] for k, r in got.items()}
    assert "illegal memory access" in status["fake/1"] and "fresh process" in status["fake/1"]
    assert "SIGKILL" in status["fake/3"] and "exit code 7" in status["fake/5"]
    assert "no result after" in status["fake/7"]
    assert status["fake/8"] == "error: out of memory"
    assert all(status[f"fake/{i}"] == "ok" for i in (0, 2, 4, 6, 9))
    pids = [got[f"fake/{i}"]["pid"] for i in (0, 2, 4, 6)]
    assert len(set(pids)) == 4  # a fresh worker after each fault
    assert got["fake/9"]["pid"] == got["fake/8"].get("pid", got["fake/9"]["pid"])  # an OOM keeps the worker
    assert result.status == "complete" and result.exit_code is None
    readme = (tmp_path / "README.md").read_text()
    assert "**Status: complete**" in readme and "illegal memory access" in readme


def test_the_report_is_on_disk_after_every_row(tmp_path, monkeypatch):
    seen = []
    real_render = report.render

    def render(folder, header, rows_, status):
        real_render(folder, header, rows_, status)
        seen.append((len(report.read(folder)[1]), (folder / "README.md").read_text()))

    monkeypatch.setattr(report, "render", render)
    _run([_spec(i, "ok") for i in range(3)], tmp_path)
    assert [n for n, _ in seen] == [0, 1, 2, 3, 3]
    assert "**Status: running" in seen[1][1] and "1 of 3 rows recorded" in seen[1][1]


def test_sigterm_mid_run_leaves_a_readable_labelled_report_and_exits_143(tmp_path):
    script = textwrap.dedent(f"""
        import sys
        sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / 'tests')!r}]
        from pathlib import Path
        from suite.gpu_check import runner
        from suite.gpu_check.plan import TINY, RowSpec
        plan = [RowSpec(f"fake/{{i}}", "checks", {{"what": "slow"}}, "gpu_check_fakes:slow", {{"seconds": 0.4}},
                        0.4, timeout_s=30) for i in range(40)]
        header = {{"command": "t", "card": "cpu", "cost_card": "cpu", "device_kind": "cpu",
                  "shapes": TINY.to_dict(), "plan": [{{"id": r.id, "step": r.step, "estimate_s": 0.4}} for r in plan]}}
        result = runner.run_plan(plan, Path({str(tmp_path)!r}), header, "cpu", TINY, "torch", 600,
                                 progress=lambda line: print(line, flush=True))
        sys.exit(result.exit_code or 0)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(report.read(tmp_path)[1]) < 3:
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err[-2000:]
    header, got, end = report.read(tmp_path)
    assert end["status"] == "interrupted by SIGTERM"
    assert 3 <= len(got) < 40
    statuses = [r["status"] for r in got.values()]
    assert statuses[-1] in ("ok", "interrupted by SIGTERM") and set(statuses[:-1]) == {"ok"}
    assert "**Status: interrupted by SIGTERM**" in (tmp_path / "README.md").read_text()
    time.sleep(0.5)
    leftovers = subprocess.run(["pgrep", "-f", "gpu-check-worker|multiprocessing.spawn"], capture_output=True,
                               text=True).stdout.split()
    assert str(proc.pid) not in leftovers


def test_a_baseline_the_worker_cannot_import_is_skipped_with_the_import_error(tmp_path):
    plan = [RowSpec("environment", "environment", {"what": "environment"}, "gpu_check_fakes:environment_without_fla"),
            RowSpec("time/fla-retention/fwd/L32/float32", "timings", {"attention": "fla"}, "gpu_check_fakes:ok",
                    {"key": "fla-retention", "mode": "fwd", "L": 32}),
            RowSpec("time/mamba-scan/fwd/L32/float32", "timings", {"attention": "mamba"}, "gpu_check_fakes:ok",
                    {"key": "mamba-scan", "mode": "fwd", "L": 32})]
    _run(plan, tmp_path)
    got = report.read(tmp_path)[1]
    assert got["time/fla-retention/fwd/L32/float32"]["status"] == (
        "skipped: fla not importable here: ModuleNotFoundError: No module named 'fla'")
    assert got["time/mamba-scan/fwd/L32/float32"]["status"] == "ok"


def test_past_its_budget_the_rest_is_recorded_as_skipped(tmp_path):
    plan = [_spec(0, "slow", seconds=0.5)] + [_spec(i, "ok") for i in range(1, 4)]
    result = _run(plan, tmp_path, budget=0.2)
    got = report.read(tmp_path)[1]
    assert got["fake/0"]["status"] == "ok"
    assert all(got[f"fake/{i}"]["status"].startswith("skipped: time budget") for i in range(1, 4))
    assert result.status == "complete up to the time budget"


def test_resume_keeps_the_measured_rows_and_runs_the_rest(tmp_path):
    folder = tmp_path / "cpu"
    plan = [_spec(0, "ok"), _spec(1, "exit_own_process"), _spec(2, "ok")]
    _run(plan, folder)
    first = report.read(folder)[1]
    kept_folder, previous, note = runner.prepare_folder(tmp_path, "cpu", resume=True)
    assert set(previous) == {"fake/0", "fake/2"} and "resuming" in note
    plan[1] = _spec(1, "ok")
    runner.run_plan(plan, kept_folder, _header(plan), "cpu", TINY, "torch", 600, progress=lambda _: None,
                    previous=previous)
    again = report.read(folder)[1]
    assert again["fake/1"]["status"] == "ok" and again["fake/0"]["pid"] == first["fake/0"]["pid"]
    # a run without --resume moves the earlier files aside, never deletes them
    _, previous, note = runner.prepare_folder(tmp_path, "cpu", resume=False)
    assert not previous and "moved" in note
    assert len(list(folder.glob("previous-*/gpu_check.jsonl"))) == 1 and not (folder / "gpu_check.jsonl").exists()


def test_a_row_whose_clean_up_fails_is_still_recorded(monkeypatch):
    ctx = rows.Context("cuda:0", TINY, "torch")
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: (_ for _ in ()).throw(RuntimeError("CUDA error: busy")))
    fields, poisoned = rows.run_row(ctx, {"call": "gpu_check_fakes:ok", "kwargs": {}})
    assert fields["status"] == "ok" and not poisoned


def test_a_torn_last_line_is_skipped_when_the_report_is_read(tmp_path):
    report.append(tmp_path, {"kind": "row", "id": "a", "status": "ok"})
    with open(tmp_path / report.JSONL, "a") as f:
        f.write('{"kind": "row", "id": "b", "sta')
    assert list(report.read(tmp_path)[1]) == ["a"]


# -- verdicts that can fail ----------------------------------------------------------------------------------

SH = Shapes(time_lengths=(2048, 4096, 8192, 16384), batch=1, heads=1, time_dim=1)


def _rows(ea_ms=1.0, sdpa_ms=10.0, check="ok", ea_status="ok", decode=(1.0, 2.0), state=(10, 10_000)):
    got = {"bandwidth/copy": {"id": "bandwidth/copy", "status": "ok", "gb_per_s": 6e-3}}
    dt = SH.time_dtype
    for L in SH.time_lengths:
        for case in ("causal", "causal inference"):
            cid = plan_mod.ea_check_id(case, L, 1, dt)
            got[cid] = {"id": cid, "status": check}
        need = [plan_mod.ea_check_id("causal", L, 1, dt)]
        got[timing_id("ea", "fwdbwd", L, dt)] = {"id": "ea", "status": ea_status, "ms": ea_ms, "requires": need,
                                                 "io_bytes": 4000, "peak_mem_bytes": 7000}
        got[timing_id("ea", "fwd", L, dt)] = {"id": "ea-fwd", "status": ea_status, "ms": 1.0, "gb_per_s": 4e-3,
                                              "requires": [plan_mod.ea_check_id("causal inference", L, 1, dt)]}
        for key in ("sdpa-flash", "sdpa-cudnn"):
            got[timing_id(key, "fwdbwd", L, dt)] = {"id": key, "status": "ok", "ms": sdpa_ms}
        got[timing_id("fla-retention", "fwdbwd", L, dt)] = {"id": "ret", "status": "ok", "ms": 0.5}
    for key, ms, size in (("ea", decode[0], state[0]), ("softmax", decode[1], state[1])):
        got[timing_id(key, "decode", SH.longest, dt)] = {"id": key, "status": "ok", "ms": ms, "state_bytes": size}
    return got


def _verdicts(got):
    return {r["target"]: r["status"] for r in evaluate_targets(got, SH)}


def test_each_target_can_come_out_met():
    v = _verdicts(_rows())
    assert v["ea_beats_sdpa_from_2k"] == v["ea_8x_sdpa_at_16k"] == "met"
    assert v["ea_fwd_bandwidth"] == "met"  # 4e-3 of 6e-3 GB/s: 67%
    assert v["ea_memory_longest"] == "met"  # (4 + 7) / 8 = 1.375
    assert v["ea_decode_vs_kv_cache"] == v["ea_state_vs_kv_cache"] == "met"
    assert v["ea_vs_chunk_retention"] == "missed"  # 0.5 ms against EA's 1 ms


def test_each_target_can_come_out_missed():
    v = _verdicts(_rows(ea_ms=20.0, decode=(3.0, 2.0), state=(500, 10_000)))
    assert v["ea_beats_sdpa_from_2k"] == v["ea_8x_sdpa_at_16k"] == "missed"
    assert v["ea_decode_vs_kv_cache"] == v["ea_state_vs_kv_cache"] == "missed"
    got = _rows()
    for row in got.values():
        if row.get("id") == "ea-fwd":
            row["gb_per_s"] = 1e-3
    assert _verdicts(got)["ea_fwd_bandwidth"] == "missed"


def test_a_fast_but_wrong_kernel_never_meets_a_target():
    v = _verdicts(_rows(ea_ms=0.001, check="FAIL"))  # fastest ever, but its checks failed
    for key in ("ea_beats_sdpa_from_2k", "ea_8x_sdpa_at_16k", "ea_vs_chunk_retention", "ea_fwd_bandwidth",
                "ea_memory_longest"):
        assert v[key] == "invalid", key
    v = _verdicts(_rows(ea_ms=0.001, ea_status="FAIL: check error 0.5 > 0.03"))  # its own check on the shape
    assert v["ea_beats_sdpa_from_2k"] == "invalid"


def test_targets_without_their_rows_are_not_measured():
    v = _verdicts({})
    assert set(v.values()) == {"not measured"}


def test_the_faster_sdpa_backend_is_the_one_ea_must_beat():
    got = _rows(ea_ms=1.0, sdpa_ms=10.0)
    got[timing_id("sdpa-cudnn", "fwdbwd", 16384, SH.time_dtype)]["ms"] = 5.0
    rows_ = evaluate_targets(got, SH)
    eight = next(r for r in rows_ if r["target"] == "ea_8x_sdpa_at_16k")
    assert eight["status"] == "missed" and "sdpa-cudnn" in eight["detail"] and "5.00x" in eight["detail"]


def test_card_slug_names_the_results_folder():
    assert gpu_check.card_slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"
    assert gpu_check.card_slug("") == "unknown"


def test_json_lines_of_a_run_are_each_valid_json(tmp_path):
    _run([_spec(0, "ok")], tmp_path)
    for line in (tmp_path / report.JSONL).read_text().splitlines():
        json.loads(line)

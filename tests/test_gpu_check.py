"""gpu-check: refuses without CUDA, runs end to end on tiny CPU shapes, judges the targets from its timings."""
import json

import pytest
import torch

from suite.cli import main
from suite.harness import gpu_check


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_gpu_check_without_cuda_refuses_in_one_line(capsys, tmp_path):
    assert main(["gpu-check", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs CUDA" in err and "--tiny --device cpu" in err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("argv, words", [
    (["--device", "cpu"], "only with --tiny"),
    (["--device", "tpu", "--tiny"], "--device must be"),
    (["--tiny", "--device", "cpu", "--budget", "0"], "--budget must be positive"),
])
def test_gpu_check_bad_options_exit_2(capsys, tmp_path, argv, words):
    assert main(["gpu-check", "--out", str(tmp_path)] + argv) == 2
    assert words in capsys.readouterr().err


def test_gpu_check_tiny_on_cpu_runs_every_step_and_writes_the_report(capsys, tmp_path):
    assert main(["gpu-check", "--tiny", "--device", "cpu", "--out", str(tmp_path)]) == 0
    folder = tmp_path / "cpu"
    data = json.loads((folder / "gpu_check.json").read_text())
    steps = data["steps"]
    assert "gpu-check" in data["command"] and "--tiny" in data["command"]
    checks = steps["ea_checks"]
    assert {r["what"] for r in checks} == {f"ea {c}" for c in gpu_check.EA_CASES} | {"ea decode step"}
    assert all(r["status"] == "ok" for r in checks), [r for r in checks if r["status"] != "ok"]
    assert all(r["max_rel_error"] <= r["tolerance"] for r in checks)
    # the baselines need CUDA: listed, labelled as skipped, never silently absent
    assert {r["what"] for r in steps["baseline_checks"]} == set(gpu_check.BASELINES)
    assert all(r["status"].startswith("skipped: needs CUDA") for r in steps["baseline_checks"])
    assert steps["bandwidth"][0]["gb_per_s"] > 0
    timed = {(r["attention"], r["mode"], r["L"]) for r in steps["timings"] if r["status"] == "ok"}
    for L in gpu_check.TINY.time_lengths:
        assert {("ea", "fwd", L), ("ea", "fwdbwd", L), ("softmax (SDPA)", "fwdbwd", L)} <= timed
    assert {r["target"] for r in steps["targets"]} == set(gpu_check.TARGETS)
    for name in ("README.md", "checks.csv", "timings.csv"):
        assert (folder / name).stat().st_size > 0
    readme = (folder / "README.md").read_text()
    assert "## Targets" in readme and "skipped: needs CUDA" in readme
    out = capsys.readouterr().out
    assert "README.md" in out and all(rule in out for rule in gpu_check.TARGETS.values())


def test_gpu_check_past_its_budget_records_the_rest_as_skipped(tmp_path):
    report = gpu_check.run_gpu_check("cpu", gpu_check.TINY, "test", budget_s=1e-9, progress=lambda _: None)
    rows = report.steps["ea_checks"] + report.steps["timings"]
    assert rows and all(r["status"] == "skipped: time budget" for r in rows)
    assert all(r["status"] == "not measured" for r in report.steps["targets"])


def _timing(attention, mode, L, ms, **extra):
    return {"attention": attention, "mode": mode, "L": L, "ms": ms, "status": "ok", **extra}


def test_targets_are_met_or_missed_from_the_measured_ratios():
    shapes = gpu_check.Shapes(time_lengths=(1024, 2048, 4096, 8192, 16384), batch=1, heads=1, time_dim=1)
    tensor = 1000
    rows = []
    for L in shapes.time_lengths:
        rows += [_timing("ea", "fwdbwd", L, 1.0, io_bytes=4 * tensor, peak_mem_bytes=7 * tensor),
                 _timing("softmax (SDPA flash)", "fwdbwd", L, 10.0 if L >= 16384 else 2.0),
                 _timing("fla chunk_retention", "fwdbwd", L, 0.9 if L == 8192 else 1.5),
                 _timing("ea", "fwd", L, 1.0, io_bytes=4 * tensor)]
    rows += [_timing("ea", "decode", 1024, 1.0), _timing("ea", "decode", 16384, 1.1)]
    # 4000 bytes in 1 ms = 4e-3 GB/s; a copy at 6e-3 GB/s makes that 67%
    verdicts = {r["target"]: r for r in gpu_check.evaluate_targets(rows, 6e-3, shapes)}
    assert verdicts["ea_beats_flash_from_2k"]["status"] == "met"
    assert verdicts["ea_8x_flash_at_16k"]["status"] == "met"
    assert verdicts["ea_vs_chunk_retention"]["status"] == "missed"
    assert "L=8192: 0.90x" in verdicts["ea_vs_chunk_retention"]["detail"]
    assert verdicts["ea_fwd_bandwidth"]["status"] == "met"
    assert verdicts["ea_memory_64k"]["status"] == "met"  # (4 + 7) / 8 = 1.375
    assert verdicts["ea_decode_flat"]["status"] == "met"
    slower = [dict(r, ms=3.0) if r["attention"] == "ea" and r["mode"] == "fwdbwd" and r["L"] == 2048 else r
              for r in rows]
    verdicts = {r["target"]: r for r in gpu_check.evaluate_targets(slower, None, shapes)}
    assert verdicts["ea_beats_flash_from_2k"]["status"] == "missed"
    assert verdicts["ea_fwd_bandwidth"]["status"] == "not measured"  # no copy bandwidth, no share


def test_card_slug_names_the_results_folder():
    assert gpu_check.card_slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"
    assert gpu_check.card_slug("") == "unknown"

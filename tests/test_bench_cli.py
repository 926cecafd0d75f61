"""``run_suite.py bench``: multi-option specs, every point checked then timed with its spread, results saved beside
the table, and every bad value refused before the first point (exit 2, one line)."""
import json

import pandas as pd
import pytest

from suite.cli import main
from suite.cli.options import split_specs

TINY = ["bench", "--lengths", "16,32", "--heads", "1", "--head-dim", "8", "--repeats", "2", "--check-rows", "4"]


@pytest.mark.parametrize("text,specs", [
    ("ea,softmax", ["ea", "softmax"]),
    ("ea:order=2,qk_norm=false,softmax", ["ea:order=2,qk_norm=false", "softmax"]),
    ("ea:order=2,qk_norm=false;softmax", ["ea:order=2,qk_norm=false", "softmax"]),
    ("softmax;ea:order=2;linear:chunk_size=32,qkv_bias=true", ["softmax", "ea:order=2",
                                                               "linear:chunk_size=32,qkv_bias=true"]),
])
def test_spec_lists_keep_multi_option_specs_whole(text, specs):
    assert split_specs(text) == specs


def test_bench_saves_csv_json_and_markdown_with_spread_speedup_and_load(tmp_path, capsys):
    out = tmp_path / "b"
    assert main([*TINY, "--attn", "ea:order=2,qk_norm=false;softmax", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert str(out / "bench.md") in printed and "× softmax" in printed
    rows = pd.read_csv(out / "bench.csv")
    assert len(rows) == 2 * 2 * 2  # attentions x lengths x modes
    assert set(rows["status"]) == {"ok"}
    assert (rows["min_ms"] <= rows["ms"]).all() and (rows["ms"] <= rows["max_ms"]).all()
    assert (rows["repeats"] == 2).all() and (rows["check_error"] < 1e-4).all()
    ea = rows[rows["attention"] == "ea:order=2,qk_norm=False"]
    soft = rows[rows["attention"] == "softmax"].set_index(["L", "mode"])["ms"]
    for _, row in ea.iterrows():
        assert row["speedup"] == pytest.approx(soft[(row["L"], row["mode"])] / row["ms"])
    meta = json.loads((out / "bench.json").read_text())
    assert meta["baseline"] == "softmax" and "load_before" in meta and meta["machine"]["device"] == "cpu"
    assert "run_suite.py" in meta["command"]
    markdown = (out / "bench.md").read_text()
    assert "no slower than softmax from L" in markdown and "(min-max)" in markdown
    # the fused CPU kernel's one-time build (or why it did not run) is reported apart from the timings
    assert "EA's fused CPU kernel" in meta["ea_cpu_kernel"] and meta["ea_cpu_kernel"] in markdown


@pytest.mark.parametrize("extra,message", [
    (["--batch", "0"], "expected a positive integer"),
    (["--heads", "-1"], "expected a positive integer"),
    (["--head-dim", "0"], "expected a positive integer"),
    (["--repeats", "0"], "expected a positive integer"),
    (["--csv", "missing/dir/x.csv"], "does not exist"),
    (["--baseline", "linear"], "--baseline linear is not one of --attn"),
    (["--mode", "fwd,nope"], "unknown mode nope"),
    (["--mode", "decode", "--no-causal"], "decode needs causal"),
    (["--attn", "ea:order=3"], "--attn ea:order=3"),
    (["--lengths", "0"], "sequence lengths must be positive"),
])
def test_bad_bench_values_exit_2_before_any_point_runs(tmp_path, capsys, extra, message):
    assert main([*TINY, "--out", str(tmp_path / "b"), *extra]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and message in captured.err, captured.err
    assert "L=16" not in captured.out  # nothing was measured

"""compare and report on hand-made records: the numbers, deltas, substitute marks, scaling and plots."""
import io

import pandas as pd
import pytest

from suite.cli import main
from suite.harness.compare import load_runs, metric_stats, pivot_table, render, scaling_frame
from suite.harness.records import append_record, make_record


def add(out, task, attention, seed, seq_len, metrics, *, status="ok", metric="accuracy", direction="max",
        substitute=False, source="src"):
    append_record(out, make_record(
        key=f"{task}-{attention}-{seed}-{seq_len}", task=task, family="demo", attention=attention, profile="smoke",
        seed=seed, seq_len=seq_len, status=status, error=None if status == "ok" else "boom", metrics=metrics,
        config={"builder": "b", "metric": metric, "direction": direction, "data": {"source": source}, "hparams": {}},
        data={"source": source, "substitute": substitute}, env={"device": "cpu", "device_name": "test cpu"},
        started_at="2025-01-01T00:00:00+00:00", wall_s=1.0))


def make_run(out, ea_accuracy):
    for seed, (ea, sm) in enumerate(zip(ea_accuracy, [0.8, 0.8, 0.8])):
        add(out, "cls", "ea", seed, 64, {"accuracy": ea}, substitute=True, source="fake-images")
        add(out, "cls", "softmax", seed, 64, {"accuracy": sm}, substitute=True, source="fake-images")
    for L in (256, 512, 1024):
        add(out, "kern", "softmax", 0, L, {"fwd_ms": (L / 256) ** 2, "peak_mem_bytes": 1000 * L * L},
            metric="fwd_ms", direction="min")
        add(out, "kern", "ea", 0, L, {"fwd_ms": 2 * L / 256, "peak_mem_bytes": 1000 * 512 * L},
            metric="fwd_ms", direction="min")
    add(out, "kern", "ea", 0, 2048, {}, status="oom", metric="fwd_ms", direction="min")
    return out


@pytest.fixture
def runs(tmp_path):
    return make_run(tmp_path / "A", [0.5, 0.6, 0.7]), make_run(tmp_path / "B", [0.75, 0.85, 0.95])


def test_stats_are_mean_std_and_count_over_seeds_of_the_main_metric(runs):
    stats = metric_stats(load_runs([runs[0]])).set_index(["task", "seq_len", "attention"])
    ea = stats.loc[("cls", 64, "ea")]
    assert (ea["metric"], ea["n"]) == ("accuracy", 3)
    assert ea["mean"] == pytest.approx(0.6) and ea["std"] == pytest.approx(0.1)
    assert stats.loc[("cls", 64, "softmax"), "std"] == pytest.approx(0.0)
    assert stats.loc[("kern", 512, "ea"), "mean"] == pytest.approx(4.0)
    oom = stats.loc[("kern", 2048, "ea")]
    assert oom["n"] == 0 and oom["statuses"] == "oom"


def test_pivot_has_tasks_and_lengths_as_rows_and_attentions_as_columns(runs):
    table = pivot_table(metric_stats(load_runs([runs[0]])))
    assert list(table.columns) == ["softmax", "ea"]  # the reference first
    assert table.loc[("cls † · accuracy ↑", 64), "softmax"] == "0.8 ± 0 (n=3)"
    assert table.loc[("cls † · accuracy ↑", 64), "ea"] == "0.6 ± 0.1 (n=3)"
    assert table.loc[("kern · fwd_ms ↓", 512), "softmax"] == "4 (n=1)"
    assert table.loc[("kern · fwd_ms ↓", 2048), "ea"] == "oom"
    assert table.loc[("kern · fwd_ms ↓", 2048), "softmax"] == "-"


def test_two_runs_get_a_delta_marked_where_it_exceeds_the_seed_spread(runs):
    table = pivot_table(metric_stats(load_runs(runs)))
    assert list(table.columns) == ["softmax [A]", "softmax [B]", "softmax [Δ]", "ea [A]", "ea [B]", "ea [Δ]"]
    row = table.loc[("cls † · accuracy ↑", 64)]
    assert row["ea [B]"] == "0.85 ± 0.1 (n=3)"
    assert row["ea [Δ]"] == "+0.25*"  # 0.25 > 0.1 + 0.1
    assert row["softmax [Δ]"] == "+0"
    assert table.loc[("kern · fwd_ms ↓", 256), "ea [Δ]"] == "+0"  # one seed: never marked


def test_another_metric_can_be_chosen(runs):
    stats = metric_stats(load_runs([runs[0]]), "peak_mem_bytes")
    assert set(stats.loc[stats["n"] > 0, "task"]) == {"kern"}
    assert stats.set_index(["seq_len", "attention"]).loc[(1024, "softmax"), "mean"] == 1000 * 1024 * 1024


def test_scaling_reports_loglog_slope_and_crossover_against_softmax(runs):
    scaling = scaling_frame(load_runs([runs[0]])).set_index(["task", "metric", "attention"])
    assert scaling.loc[("kern", "fwd_ms", "softmax"), "slope"] == pytest.approx(2.0)
    assert scaling.loc[("kern", "fwd_ms", "ea"), "slope"] == pytest.approx(1.0)
    assert scaling.loc[("kern", "fwd_ms", "ea"), "crossover"] == pytest.approx(512.0)
    assert scaling.loc[("kern", "peak_mem_bytes", "ea"), "crossover_text"] == "512"
    assert ("cls", "accuracy", "ea") not in scaling.index  # one length: no slope


def test_markdown_and_csv_mark_substitute_rows_and_carry_the_numbers(runs):
    frame = load_runs(runs)
    markdown = render(frame, fmt="markdown")
    assert "cls † · accuracy ↑" in markdown and "† substitute data" in markdown and "cls: fake-images" in markdown
    assert "| ea [Δ]" in markdown and "scaling against L" in markdown
    csv = pd.read_csv(io.StringIO(render(frame, fmt="csv")))
    row = csv[(csv["run"] == "B") & (csv["task"] == "cls") & (csv["attention"] == "ea")].iloc[0]
    assert row["mean"] == pytest.approx(0.85) and row["n"] == 3 and bool(row["substitute"])


def test_compare_command_prints_the_table(runs, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["compare", str(runs[0]), str(runs[1] / "records.jsonl"), "--format", "markdown"]) == 0
    out = capsys.readouterr().out
    assert "+0.25*" in out and "0.6 ± 0.1 (n=3)" in out
    assert main(["compare", str(runs[0])]) == 0
    assert "0.6 ± 0.1 (n=3)" in capsys.readouterr().out


def test_report_writes_markdown_tables_and_plots(runs, capsys):
    assert main(["report", str(runs[0])]) == 0
    report = (runs[0] / "report.md").read_text()
    assert "cls † · accuracy ↑" in report and "## Scaling against L" in report
    assert "## Jobs that did not finish ok" in report and "oom" in report
    assert "devices: test cpu" in report
    plots = sorted(p.name for p in (runs[0] / "plots").glob("*.png"))
    assert plots == ["cls-accuracy.png", "kern-vs-L.png"]
    for name in plots:
        assert f"](plots/{name})" in report
        assert (runs[0] / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

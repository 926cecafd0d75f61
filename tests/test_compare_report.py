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


# -- compare --reference lra ---------------------------------------------------------------------------------

def make_lra_run(out):
    for seed, accuracy in enumerate([0.30, 0.32]):
        add(out, "lra-listops", "ea", seed, 500, {"accuracy": accuracy})
        add(out, "lra-listops", "softmax", seed, 500, {"accuracy": 0.35})
        add(out, "lra-image", "ea", seed, 1024, {"accuracy": 0.40}, substitute=True, source="digits-gray")
        add(out, "lra-pathx", "ea", seed, 4096, {"accuracy": 0.50})
    add(out, "kern", "ea", 0, 256, {"fwd_ms": 1.0}, metric="fwd_ms", direction="min")
    return out


@pytest.fixture
def lra_run(tmp_path):
    return make_lra_run(tmp_path / "lra")


def rich_text(frame, **kwargs):
    from rich.console import Console

    buffer = io.StringIO()
    render(frame, console=Console(file=buffer, width=400), **kwargs)
    return buffer.getvalue()


def test_published_lra_rows_are_the_papers_numbers():
    from suite.harness.published_lra import PUBLISHED_LRA

    tasks = ("lra-listops", "lra-text", "lra-retrieval", "lra-image", "lra-pathfinder", "lra-pathx")
    rows = {r.model: [r.accuracy_percent[t] for t in tasks] for r in PUBLISHED_LRA}
    assert rows == {"Transformer": [36.37, 64.27, 57.46, 42.44, 71.40, None],
                    "Linear Trans.": [16.13, 65.90, 53.09, 42.34, 75.30, None],
                    "Performer": [18.01, 65.40, 53.82, 42.77, 77.05, None],
                    "S4 (v2, S4-LegS)": [59.60, 86.82, 90.90, 88.65, 94.20, 96.35],
                    "Mega": [63.14, 90.43, 91.25, 90.44, 96.01, 97.98]}
    assert all(r.source and r.label.startswith("published: ") for r in PUBLISHED_LRA)


def test_reference_lra_puts_labelled_published_columns_beside_the_measured_rows(lra_run):
    frame = load_runs([lra_run])
    markdown = render(frame, fmt="markdown", reference="lra")
    lra_part = markdown[markdown.index("### LRA accuracy: measured"):]
    header = lra_part.splitlines()[2]
    for label in ("published: Transformer (LRA Table 1)", "published: Linear Trans. (LRA Table 1)",
                  "published: Performer (LRA Table 1)", "published: S4 (v2, S4-LegS) (S4 Table 10)",
                  "published: Mega (Mega Table 2)"):
        assert label in header
    listops = next(line for line in lra_part.splitlines() if line.startswith("| lra-listops"))
    cells = [c.strip() for c in listops.strip("|").split("|")]
    assert cells == ["lra-listops · accuracy ↑", "500", "0.35 ± 0 (n=2)", "0.31 ± 0.014 (n=2)",
                     "0.3637", "0.1613", "0.1801", "0.5960", "0.6314"]
    pathx = next(line for line in lra_part.splitlines() if line.startswith("| lra-pathx"))
    assert pathx.count("FAIL") == 3 and "0.9635" in pathx and "0.9798" in pathx
    assert "NOT re-run" in lra_part and "arXiv:2011.04006" in lra_part and "arXiv:2111.00396" in lra_part
    assert "| kern" not in lra_part  # only LRA tasks sit beside the published numbers
    rich = rich_text(frame, reference="lra")
    assert "published: Transformer (LRA Table 1)" in rich and "0.3637" in rich and "arXiv:2209.10655" in rich


def test_reference_lra_adds_published_rows_to_the_csv(lra_run):
    csv = pd.read_csv(io.StringIO(render(load_runs([lra_run]), fmt="csv", reference="lra")))
    published = csv[csv["published"]].set_index(["task", "attention"])
    assert published.loc[("lra-listops", "Transformer (LRA Table 1)"), "mean"] == pytest.approx(0.3637)
    assert published.loc[("lra-image", "Mega (Mega Table 2)"), "mean"] == pytest.approx(0.9044)
    assert published.loc[("lra-pathx", "Performer (LRA Table 1)"), "statuses"] == "FAIL"
    assert set(published["run"]) == {"published"} and "arXiv:2011.04006" in published["source"].iloc[0]
    assert set(published.index.get_level_values("task")) == {"lra-listops", "lra-image", "lra-pathx"}


def test_reference_lra_does_not_change_the_measured_numbers(lra_run):
    frame = load_runs([lra_run])
    plain, with_reference = render(frame, fmt="markdown"), render(frame, fmt="markdown", reference="lra")
    assert with_reference.startswith(plain)
    measured_plain = pd.read_csv(io.StringIO(render(frame, fmt="csv")))
    measured = pd.read_csv(io.StringIO(render(frame, fmt="csv", reference="lra")))
    measured = measured[~measured["published"]].drop(columns="published").reset_index(drop=True)
    pd.testing.assert_frame_equal(measured, measured_plain, check_dtype=False)
    lra_part = with_reference[with_reference.index("### LRA accuracy"):]
    main_part = with_reference[:with_reference.index("### LRA accuracy")]
    assert "0.31 ± 0.014 (n=2)" in main_part and "0.31 ± 0.014 (n=2)" in lra_part


def test_reference_lra_keeps_the_substitute_marker(lra_run):
    markdown = render(load_runs([lra_run]), fmt="markdown", reference="lra")
    lra_part = markdown[markdown.index("### LRA accuracy"):]
    assert "| lra-image † · accuracy ↑" in lra_part
    assert "† substitute data" in lra_part and "lra-image: digits-gray" in lra_part
    assert "not comparable with the published numbers" in lra_part


def test_reference_lra_without_lra_tasks_says_so_in_one_line(runs, capsys, monkeypatch):
    from suite.harness.compare import NO_LRA_TASKS

    monkeypatch.setenv("COLUMNS", "200")
    assert main(["compare", str(runs[0]), "--reference", "lra", "--format", "markdown"]) == 0
    out = capsys.readouterr().out
    assert out.count(NO_LRA_TASKS) == 1 and "published:" not in out and "0.6 ± 0.1 (n=3)" in out
    assert main(["compare", str(runs[0]), "--reference", "lra"]) == 0
    assert "no LRA task" in capsys.readouterr().out
    assert main(["compare", str(runs[0]), "--reference", "lra", "--format", "csv"]) == 0
    captured = capsys.readouterr()
    assert captured.err == NO_LRA_TASKS + "\n" and not pd.read_csv(io.StringIO(captured.out))["published"].any()


def test_report_of_a_run_with_lra_tasks_shows_the_published_results(lra_run, capsys):
    assert main(["report", str(lra_run)]) == 0
    report = (lra_run / "report.md").read_text()
    assert "## LRA: measured beside published results (not re-run)" in report
    assert "published: Mega (Mega Table 2)" in report and "0.6314" in report

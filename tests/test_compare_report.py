"""compare and report on hand-made records: the statistics (Student t intervals, paired and Welch differences),
the tables (one per task, pruned columns, units, probes, †), CSV = markdown columns, scaling, LRA reference,
plots and learning curves, and report over several runs."""
import io
import json
import math

import pandas as pd
import pytest

from suite.analysis.compare import render
from suite.analysis.frames import load_runs, metric_stats, scaling_frame
from suite.analysis.stats import student_t_quantile, welch_difference
from suite.analysis.tables import CSV_FIELDS, table_columns, task_tables
from suite.analysis.units import format_pct, format_value
from suite.cli import main
from suite.run.records import append_record, make_record

T95_DF2 = 4.302652729911275  # Student t, 97.5th percentile, 2 degrees of freedom (tables; scipy.stats.t.ppf)
T95_DF4 = 2.7764451051977987


def add(out, task, attention, seed, seq_len, metrics, *, status="ok", metric="accuracy", direction="max",
        substitute=False, source="src", family="demo"):
    key = f"{task}-{attention}-{seed}-{seq_len}"
    append_record(out, make_record(
        key=key, task=task, family=family, attention=attention, profile="smoke",
        seed=seed, seq_len=seq_len, status=status, error=None if status == "ok" else "boom", metrics=metrics,
        config={"builder": "b", "metric": metric, "direction": direction, "data": {"source": source}, "hparams": {}},
        data={"source": source, "substitute": substitute}, env={"device": "cpu", "device_name": "test cpu"},
        started_at="2025-01-01T00:00:00+00:00", wall_s=1.0))
    return key


def make_run(out, ea_accuracy):
    for seed, (ea, sm) in enumerate(zip(ea_accuracy, [0.8, 0.8, 0.8])):
        add(out, "cls", "ea", seed, 64, {"accuracy": ea, "train_tokens_per_s": 12345.0 + seed,
                                         "peak_mem_bytes": 5.177e6}, substitute=True, source="fake-images")
        add(out, "cls", "softmax", seed, 64, {"accuracy": sm}, substitute=True, source="fake-images")
    for L in (256, 512, 1024):
        add(out, "kern", "softmax", 0, L, {"fwd_ms": (L / 256) ** 2, "peak_mem_bytes": 1000 * L * L},
            metric="fwd_ms", direction="min", family="kernels")
        add(out, "kern", "ea", 0, L, {"fwd_ms": 2 * L / 256, "peak_mem_bytes": 1000 * 512 * L},
            metric="fwd_ms", direction="min", family="kernels")
    add(out, "kern", "ea", 0, 2048, {}, status="oom", metric="fwd_ms", direction="min", family="kernels")
    return out


@pytest.fixture
def runs(tmp_path):
    return make_run(tmp_path / "A", [0.5, 0.6, 0.7]), make_run(tmp_path / "B", [0.75, 0.85, 0.95])


def tables_of(stats, **kwargs):
    """Task tables by heading, without the heading's count of comparisons (``· 3 comparisons, Holm``)."""
    return {heading.split(" · ")[0] + "".join(f" · {part}" for part in heading.split(" · ")[1:]
                                               if "comparison" not in part): table
            for heading, table in task_tables(stats, **kwargs)}


def md_rows(text, heading):
    """The rows of the markdown table under ``heading`` as {column: cell} dicts."""
    lines = text[text.index(heading):].splitlines()[2:]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = []
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(header, (c.strip() for c in line.strip("|").split("|")))))
    return rows


# -- statistics -----------------------------------------------------------------------------------------------

def test_student_t_quantiles_match_the_tables():
    assert student_t_quantile(0.975, 1) == pytest.approx(12.706204736174694, rel=1e-9)
    assert student_t_quantile(0.975, 2) == pytest.approx(T95_DF2, rel=1e-9)
    assert student_t_quantile(0.975, 4) == pytest.approx(T95_DF4, rel=1e-9)
    assert student_t_quantile(0.975, 10) == pytest.approx(2.2281388519649385, rel=1e-9)
    assert student_t_quantile(0.975, 1e6) == pytest.approx(1.959966, rel=1e-6)
    stats = pytest.importorskip("scipy.stats")
    for df in (3, 4.37, 17.2, 60):  # Welch's degrees of freedom are not whole
        assert student_t_quantile(0.975, df) == pytest.approx(stats.t.ppf(0.975, df), rel=1e-8)


def test_stats_are_mean_std_count_and_a_student_t_interval_over_seeds(runs):
    stats = metric_stats(load_runs([runs[0]])).set_index(["task", "seq_len", "attention"])
    ea = stats.loc[("cls", 64, "ea")]
    assert (ea["metric"], ea["n"], ea["direction"]) == ("accuracy", 3, "max")
    assert ea["mean"] == pytest.approx(0.6) and ea["std"] == pytest.approx(0.1)
    assert ea["ci95"] == pytest.approx(T95_DF2 * 0.1 / math.sqrt(3))  # = 0.2484
    assert stats.loc[("cls", 64, "softmax"), "ci95"] == 0.0  # equal values: rounding noise is no spread
    one = stats.loc[("kern", 512, "ea")]
    assert one["mean"] == pytest.approx(4.0) and one["n"] == 1 and math.isnan(one["ci95"])  # n = 1: no interval
    oom = stats.loc[("kern", 2048, "ea")]
    assert oom["n"] == 0 and oom["statuses"] == "oom" and oom["failed"] == "1 oom"


def test_the_baseline_difference_is_paired_by_seed_over_the_seeds_both_finished(tmp_path):
    run = tmp_path / "paired"
    for seed, (sm, ea) in enumerate([(0.80, 0.83), (0.70, 0.72), (0.90, 0.925)]):
        add(run, "cls", "softmax", seed, 64, {"accuracy": sm})
        add(run, "cls", "ea", seed, 64, {"accuracy": ea})
    add(run, "cls", "ea", 3, 64, {"accuracy": 0.10})  # no softmax seed 3: in ea's mean, not in the pairs
    add(run, "cls", "linear", 0, 64, {"accuracy": 0.5})
    stats = metric_stats(load_runs([run])).set_index("attention")
    ea = stats.loc["ea"]
    assert ea["n"] == 4 and ea["mean"] == pytest.approx((0.83 + 0.72 + 0.925 + 0.10) / 4)
    # by hand: differences 0.03, 0.02, 0.025 -> mean 0.025, sd 0.005, t(2) * 0.005 / sqrt(3)
    assert ea["delta_n"] == 3 and ea["delta"] == pytest.approx(0.025)
    assert ea["delta_ci95"] == pytest.approx(T95_DF2 * 0.005 / math.sqrt(3))  # 0.0124: the CI excludes 0
    assert ea["delta_pct"] == pytest.approx(100 * 0.025 / 0.80)  # of softmax's mean over the same seeds
    assert ea["delta_mark"] == "better" and ea["baseline"] == "softmax"
    # unpaired, the same numbers would not be told apart: Welch's interval is far wider than the difference
    diff, half, _ = welch_difference([0.80, 0.70, 0.90], [0.83, 0.72, 0.925])
    assert diff == pytest.approx(0.025) and half > 0.2
    linear = stats.loc["linear"]  # one pair: one seed is never compared with one seed of the baseline
    assert linear["delta_n"] == 1 and math.isnan(linear["delta"]) and linear["delta_mark"] == ""
    assert linear["delta_note"] == "one seed: not compared"
    table = tables_of(metric_stats(load_runs([run])))["cls · accuracy ↑"]
    assert table.loc[("64", "ea"), "Δ vs softmax ± 95% CI (seeds)"] == "+0.025 ± 0.012 * better"
    assert table.loc[("64", "ea"), "Δ% vs softmax"] == "+3.1%"
    assert table.loc[("64", "linear"), "Δ vs softmax ± 95% CI (seeds)"] == "one seed: not compared"
    assert table.loc[("64", "softmax"), "Δ vs softmax ± 95% CI (seeds)"] == ""


def test_one_table_per_task_with_only_the_columns_that_have_values(runs):
    tables = tables_of(metric_stats(load_runs([runs[0]])))
    assert list(tables) == ["cls † · accuracy ↑", "kern · fwd_ms ↓"]
    cls = tables["cls † · accuracy ↑"]
    assert list(cls.index) == [("64", "softmax"), ("64", "ea")]  # the baseline first
    assert list(cls.columns) == ["n", "mean ± 95% CI", "Δ vs softmax ± 95% CI (seeds)", "Δ% vs softmax",
                                 "MDE"]  # no run columns, no seeds + test set column (no per-example outcomes)
    assert cls.loc[("64", "softmax"), "mean ± 95% CI"] == "0.8000 (no CI: zero variance)"
    assert cls.loc[("64", "ea"), "mean ± 95% CI"] == "0.60 ± 0.25"
    assert cls.loc[("64", "ea"), "Δ vs softmax ± 95% CI (seeds)"] == "-0.20 ± 0.25"
    assert cls.loc[("64", "ea"), "Δ% vs softmax"] == "-25.0%"
    # by hand: differences -0.3, -0.2, -0.1: se 0.1 / sqrt(3); MDE = (t(0.975, 2) + t(0.80, 2)) x se
    assert cls.loc[("64", "ea"), "MDE"] == format_value("accuracy", (T95_DF2 + 1.0606601717798212) * 0.1 / math.sqrt(3),
                                                         like=0.6)
    kern = tables["kern · fwd_ms ↓"]
    assert kern.loc[("512", "softmax"), "mean ± 95% CI"] == "4.00 ms (no CI: n = 1)"
    assert kern.loc[("512", "ea"), "Δ vs softmax ± 95% CI (seeds)"] == "one seed: not compared"
    assert kern.loc[("2048", "ea"), "mean ± 95% CI"] == "oom" and kern.loc[("2048", "ea"), "n"] == "0"
    only_ea = metric_stats(load_runs([runs[0]]), baseline="linear")  # no linear rows: no Δ columns at all
    assert list(tables_of(only_ea, baseline="linear")["kern · fwd_ms ↓"].columns) == ["n", "mean ± 95% CI"]


def test_numbers_carry_their_units_and_sensible_digits():
    assert format_value("peak_mem_bytes", 5.177e6) == "5.18 MB"
    assert format_value("peak_mem_bytes", 1.2345e9, 2.1e7) == "1.234 ± 0.021 GB"
    assert format_value("state_bytes", 384.0) == "384 B"
    assert format_value("train_tokens_per_s", 12345.0) == "12.3k tok/s"
    assert format_value("train_tokens_per_s", 73630.0, 6000.0) == "73.6k ± 6.0k tok/s"
    assert format_value("infer_samples_per_s", 2.5e6) == "2.50M samples/s"
    assert format_value("train_tokens_per_s", 12345.0, unit=False) == "12.3k"
    assert format_value("fwd_ms", 4.1234) == "4.12 ms" and format_value("fwd_ms", 0.041234) == "0.0412 ms"
    assert format_value("fwd_ms", 4.1234, 0.0512) == "4.123 ± 0.051 ms"
    assert format_value("params", 72138) == "72.1k"
    assert format_value("accuracy", 0.8297, 0.0352) == "0.830 ± 0.035"
    assert format_value("accuracy", 0.8297) == "0.8297"
    assert format_value("accuracy", -0.0187, 0.0076, signed=True) == "-0.0187 ± 0.0076"
    assert format_value("bpb", -0.2002, signed=True, like=3.397) == "-0.200"
    assert format_value("accuracy", math.nan) == "-"
    assert [format_pct(p) for p in (6.2274, -114.3, 0.0333, math.nan)] == ["+6.2%", "-114%", "+0.033%", "-"]


def test_a_metric_measured_at_a_length_or_on_a_split_keeps_its_unit_and_direction():
    from suite.analysis.units import metric_direction

    assert format_value("state_bytes_L32768", 67108864.0) == "67.1 MB"
    assert format_value("prefill_ms_L8192", 41.234) == "41.2 ms"
    assert metric_direction("state_bytes_L32768") == metric_direction("decode_ms_per_token_L1024") == "min"
    assert metric_direction("test_bpb") == metric_direction("val_loss") == "min"
    assert metric_direction("lm_eval.suite_heldout_ppl.bits_per_byte") == "min"
    assert metric_direction("lm_eval.suite_heldout_cloze.acc") == "max"
    assert metric_direction("eval_tokens") is None and metric_direction("seq_L") is None


def test_another_metric_is_tabulated_in_its_unit(runs):
    stats = metric_stats(load_runs([runs[0]]), "peak_mem_bytes")
    assert set(stats.loc[stats["n"] > 0, "task"]) == {"cls", "kern"}
    cells = stats.set_index(["task", "seq_len", "attention"])
    assert cells.loc[("kern", 1024, "softmax"), "mean"] == 1000 * 1024 * 1024
    tables = tables_of(stats)
    assert tables["kern · peak_mem_bytes ↓"].loc[("1024", "softmax"), "mean ± 95% CI"] == "1.05 GB (no CI: n = 1)"
    assert tables["cls † · peak_mem_bytes ↓"].loc[("64", "ea"), "mean ± 95% CI"] == "5.18 MB (no CI: zero variance)"
    tokens = tables_of(metric_stats(load_runs([runs[0]]), "train_tokens_per_s"))
    assert list(tokens) == ["cls † · train_tokens_per_s ↑"]  # a task without the metric has no table
    assert tokens["cls † · train_tokens_per_s ↑"].loc[("64", "ea"), "mean ± 95% CI"] == "12.35k ± 0.0025k tok/s"


# -- two runs -------------------------------------------------------------------------------------------------

def test_two_runs_get_the_run_to_run_difference_by_welchs_t(runs):
    stats = metric_stats(load_runs(runs)).set_index(["run", "task", "seq_len", "attention"])
    ea = stats.loc[("B", "cls", 64, "ea")]
    # by hand: 0.85 - 0.6 = 0.25; se = sqrt(0.1^2/3 + 0.1^2/3); Welch df = 4
    assert ea["vs_run"] == "A" and ea["run_delta"] == pytest.approx(0.25)
    assert ea["run_delta_ci95"] == pytest.approx(T95_DF4 * math.sqrt(0.02 / 3))  # 0.2267 < 0.25: unadjusted, it
    assert ea["run_delta_pct"] == pytest.approx(100 * 0.25 / 0.6)  # excludes 0, but the table holds 3 comparisons:
    # Holm by hand: p = 0.0376 (B vs A, ea: Welch t 3.06, df 4), 0.074 (A: ea - softmax, t -3.46, df 2), 0.478 (B)
    # -> sorted, x3, x2, x1 -> 0.113, 0.148, 0.48: nothing holds at 5% (softmax B vs A: zero variance, no test)
    p = [ea["run_delta_p"], stats.loc[("A", "cls", 64, "ea"), "delta_p"], ea["delta_p"]]
    assert p == pytest.approx([0.03759, 0.07418, 0.47777], abs=1e-4)
    assert ea["comparisons"] == 3 and ea["run_delta_p_holm"] == pytest.approx(3 * p[0])
    assert stats.loc[("A", "cls", 64, "ea"), "delta_p_holm"] == pytest.approx(2 * p[1])
    assert ea["delta_p_holm"] == pytest.approx(p[2]) and ea["run_delta_mark"] == ""
    assert math.isnan(stats.loc[("A", "cls", 64, "ea"), "run_delta"])  # the first run is the reference
    assert stats.loc[("B", "kern", 256, "ea"), "run_delta_mark"] == ""  # one seed each: no interval
    _, half, df = welch_difference([1.0, 2.0, 4.0], [3.0, 3.5])
    v1, v2 = (7 / 3) / 3, 0.125 / 2  # variances of the means
    assert df == pytest.approx((v1 + v2) ** 2 / (v1 ** 2 / 2 + v2 ** 2 / 1))
    assert half == pytest.approx(student_t_quantile(0.975, df) * math.sqrt(v1 + v2))
    cls = tables_of(metric_stats(load_runs(runs)))["cls † · accuracy ↑"]
    assert list(cls.index) == [("64", "softmax", "A"), ("64", "softmax", "B"), ("64", "ea", "A"), ("64", "ea", "B")]
    assert list(cls.columns) == ["n", "mean ± 95% CI", "Δ vs softmax ± 95% CI (seeds)", "Δ% vs softmax", "MDE",
                                 "Δ vs A ± 95% CI (Welch)", "Δ% vs A"]
    assert cls.loc[("64", "ea", "B"), "Δ vs A ± 95% CI (Welch)"] == "+0.25 ± 0.23"  # unmarked after Holm
    assert cls.loc[("64", "ea", "B"), "Δ% vs A"] == "+41.7%"
    assert cls.loc[("64", "softmax", "B"), "Δ vs A ± 95% CI (Welch)"] == "+0 (no CI)"
    assert cls.loc[("64", "ea", "A"), "Δ vs A ± 95% CI (Welch)"] == ""


def test_csv_and_markdown_carry_the_same_columns(runs):
    frame = load_runs(runs)
    markdown = render(frame, fmt="markdown")
    csv = pd.read_csv(io.StringIO(render(frame, fmt="csv")))
    ids = {header: key for key, header in table_columns("softmax", "A").items()}
    rows = md_rows(markdown, "#### cls † · accuracy ↑")
    for column in rows[0]:
        for field in CSV_FIELDS[ids.get(column, column)]:
            assert field in csv.columns, (column, field)
    cells = {(r["attention"], r["run"]): r for r in rows}
    for row in csv[csv["task"] == "cls"].itertuples():
        md = cells[(row.attention, row.run)]
        assert md["n"] == str(row.n)
        expected = (f"{format_value('accuracy', row.mean)} (no CI: {row.ci_note})" if isinstance(row.ci_note, str)
                    else format_value("accuracy", row.mean, row.ci95))
        assert md["mean ± 95% CI"] == expected
        if isinstance(row.run_delta_mark, str):
            assert md["Δ vs A ± 95% CI (Welch)"].endswith(row.run_delta_mark)
    b_ea = csv[(csv["run"] == "B") & (csv["task"] == "cls") & (csv["attention"] == "ea")].iloc[0]
    assert b_ea["mean"] == pytest.approx(0.85) and b_ea["n"] == 3 and bool(b_ea["substitute"])
    assert b_ea["run_delta"] == pytest.approx(0.25) and pd.isna(b_ea["run_delta_mark"])  # Holm: not marked
    assert b_ea["comparisons"] == 3 and b_ea["run_delta_p_holm"] == pytest.approx(3 * b_ea["run_delta_p"], rel=1e-4)
    assert b_ea["delta"] == pytest.approx(0.05) and b_ea["delta_n"] == 3


def test_markdown_marks_substitute_rows_and_says_what_the_interval_is(runs):
    markdown = render(load_runs(runs), fmt="markdown")
    assert "#### cls † · accuracy ↑" in markdown and "† substitute data" in markdown and "cls: fake-images" in markdown
    assert "Student t, n - 1 degrees of freedom" in markdown and "Welch's t" in markdown and "paired t" in markdown
    assert "scaling against L" in markdown and "(x 512)" in markdown
    assert max(len(line) for line in markdown.splitlines() if line.startswith("|")) < 200


def test_real_and_substitute_data_are_different_configurations_in_their_own_tables(tmp_path):
    add(tmp_path / "real", "cls", "ea", 0, 64, {"accuracy": 0.5})
    add(tmp_path / "stand-in", "cls", "ea", 0, 64, {"accuracy": 0.4}, substitute=True, source="fake")
    tables = tables_of(metric_stats(load_runs([tmp_path / "real", tmp_path / "stand-in"])))
    assert list(tables) == ["cls · smoke, source=src · accuracy ↑", "cls † · smoke, source=fake · accuracy ↑"]
    assert list(tables["cls † · smoke, source=fake · accuracy ↑"].index) == [("64", "ea", "stand-in")]


# -- probes and --baseline ------------------------------------------------------------------------------------

def make_probe_run(out):
    for seed in range(2):
        add(out, "cls", "softmax", seed, 64, {"accuracy": 0.8 + seed / 100})
        add(out, "cls", "ea", seed, 64, {"accuracy": 0.7 + seed / 100})
        add(out, "cls", "probe:cnn", seed, 64, {"accuracy": 0.9})
        add(out, "cls", "probe:bow", seed, 64, {"accuracy": 0.3})
    return out


def test_probes_are_labelled_listed_after_the_attentions_and_never_the_baseline(tmp_path, capsys, monkeypatch):
    run = make_probe_run(tmp_path / "probes")
    frame = load_runs([run])
    assert set(frame.loc[frame["attention"].str.startswith("probe:"), "kind"]) == {"probe"}
    table = tables_of(metric_stats(frame))["cls · accuracy ↑"]
    assert [a for _, a in table.index] == ["softmax", "ea", "probe:bow (probe)", "probe:cnn (probe)"]
    assert table.loc[("64", "probe:cnn (probe)"), "Δ vs softmax ± 95% CI (seeds)"].startswith("+0.095")
    markdown = render(frame, fmt="markdown")
    assert "learnability probes" in markdown and "never the baseline" in markdown
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["compare", str(run), "--baseline", "probe:cnn"]) == 2
    err = capsys.readouterr().err
    assert err == "error: --baseline probe:cnn: is a probe, not an attention; attentions present: softmax, ea\n"
    only_probes = tmp_path / "no-softmax"
    add(only_probes, "cls", "probe:cnn", 0, 64, {"accuracy": 0.9})
    add(only_probes, "cls", "ea", 0, 64, {"accuracy": 0.7})
    text = render(load_runs([only_probes]), fmt="markdown")
    assert "Δ vs" not in text.split("- mean")[0]  # the default baseline is absent: no Δ column, and a note says so
    assert "no Δ column: these records hold no softmax rows" in text and "attentions present: ea" in text


def test_baseline_option_chooses_the_reference_and_refuses_an_absent_one(runs, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["compare", str(runs[0]), "--baseline", "ea", "--format", "markdown"]) == 0
    out = capsys.readouterr().out
    rows = {r["attention"]: r for r in md_rows(out, "#### cls † · accuracy ↑")}
    assert list(rows) == ["ea", "softmax"]  # the baseline first
    assert rows["softmax"]["Δ vs ea ± 95% CI (seeds)"] == "+0.20 ± 0.25" and rows["softmax"]["Δ% vs ea"] == "+33.3%"
    assert "(x <= 256)" in out or "than ea" in out  # the scaling table's crossovers are against the baseline too
    assert main(["compare", str(runs[0]), "--baseline", "nope"]) == 2
    err = capsys.readouterr().err
    assert err == "error: --baseline nope: is not an attention of these runs; attentions present: softmax, ea\n"
    assert main(["report", str(runs[0]), "--baseline", "nope"]) == 2
    assert "attentions present: softmax, ea" in capsys.readouterr().err


def test_compare_command_prints_the_tables(runs, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["compare", str(runs[0]), str(runs[1] / "records.jsonl"), "--format", "markdown"]) == 0
    out = capsys.readouterr().out
    assert "+0.25 ± 0.23" in out and "0.60 ± 0.25" in out
    assert main(["compare", str(runs[0])]) == 0
    out = capsys.readouterr().out
    assert "cls † · accuracy ↑" in out and "0.60 ± 0.25" in out and "95% confidence interval" in out


def test_scaling_reports_loglog_slope_and_crossover_against_the_baseline(runs):
    scaling = scaling_frame(load_runs([runs[0]])).set_index(["task", "metric", "attention"])
    assert scaling.loc[("kern", "fwd_ms", "softmax"), "slope"] == pytest.approx(2.0)
    assert scaling.loc[("kern", "fwd_ms", "ea"), "slope"] == pytest.approx(1.0)
    assert scaling.loc[("kern", "fwd_ms", "ea"), "crossover"] == pytest.approx(512.0)
    assert scaling.loc[("kern", "peak_mem_bytes", "ea"), "crossover_text"] == "512"
    assert ("cls", "accuracy", "ea") not in scaling.index  # one length: no slope
    against_ea = scaling_frame(load_runs([runs[0]]), baseline="ea").set_index(["task", "metric", "attention"])
    assert against_ea.loc[("kern", "fwd_ms", "softmax"), "crossover_text"] == "<= 256"


# -- report ---------------------------------------------------------------------------------------------------

def test_report_writes_markdown_tables_and_plots(runs, capsys):
    assert main(["report", str(runs[0])]) == 0
    report = (runs[0] / "report.md").read_text()
    assert "### cls † · accuracy ↑" in report and "## Scaling against L" in report
    assert "## Jobs that did not finish ok" in report and "oom" in report
    assert "devices: test cpu" in report and "Learning curves" not in report  # no curves/ folder: no curve plots
    cost = md_rows(report, "### demo: cls †")  # the family's one task goes into the heading
    assert cost[1]["attention"] == "ea" and cost[1]["train tok/s"] == "12.35k ± 0.0025k"
    assert cost[1]["peak memory"] == "5.18 ± 0 MB" and "fwd" not in cost[1]  # only the columns with values
    kernels = md_rows(report, "### kernels: kern")
    assert kernels[0]["peak memory"] == "65.5 MB" and "fwd" not in kernels[0]  # fwd_ms is kern's main metric
    plots = sorted(p.name for p in (runs[0] / "plots").glob("*.png"))
    assert plots == ["cls-accuracy.png", "kern-vs-L.png"]
    for name in plots:
        assert f"](plots/{name})" in report
        assert (runs[0] / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def write_curves(run, *, skip_seed=None):
    """Curves of the cls jobs of ``make_run`` (3 seeds x ea, softmax), one of a job without a record, one broken."""
    folder = run / "curves"
    folder.mkdir()
    for attention in ("ea", "softmax"):
        for seed in range(3):
            if seed == skip_seed:
                continue
            key = f"cls-{attention}-{seed}-64"
            train = [{"step": s, "tokens": 640 * s, "loss": 2.3 / s + 0.1 * seed} for s in range(1, 21)]
            evals = [{"step": s, "tokens": 640 * s, "accuracy": 0.1 + 0.03 * s + 0.01 * seed, "loss": 1.0 / s}
                     for s in (5, 10, 20)]
            curve = {"key": key, "task": "cls", "attention": attention, "profile": "smoke", "seed": seed,
                     "seq_len": 64, "metric": "accuracy", "train": train, "eval": evals}
            (folder / f"cls_{attention}_L64_s{seed}_{key}.json").write_text(json.dumps(curve))
    (folder / "orphan.json").write_text(json.dumps({"key": "no-such-record", "train": [], "eval": []}))
    (folder / "torn.json").write_text('{"key": "cls-ea-0-64", "train": [')


def test_seed_band_is_the_mean_and_min_max_over_seeds_on_a_common_grid():
    import numpy as np

    from suite.analysis.plots import seed_band

    x, mean, low, high = seed_band([(np.array([0.0, 2.0]), np.array([0.0, 2.0])),
                                    (np.array([0.0, 1.0, 2.0]), np.array([2.0, 2.0, 2.0]))])
    assert list(x) == [0.0, 1.0, 2.0] and list(mean) == [1.0, 1.5, 2.0]
    assert list(low) == [0.0, 1.0, 2.0] and list(high) == [2.0, 2.0, 2.0]


def test_report_draws_the_learning_curves_and_links_them(runs, capsys):
    write_curves(runs[0])
    assert main(["report", str(runs[0])]) == 0
    captured = capsys.readouterr()
    assert captured.err.count("warning: ") == 1 and "torn.json: not a readable curve" in captured.err
    report = (runs[0] / "report.md").read_text()
    assert "## Learning curves" in report and "band: min-max over seeds" in report
    assert "](plots/cls-L64-curves.png)" in report
    png = runs[0] / "plots" / "cls-L64-curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "kern-L" not in report  # no curve, no figure


def test_load_curves_matches_latest_records_by_key_and_leaves_out_failed_jobs(runs, capsys):
    from suite.analysis.plots import CURVES_DIR, load_curves
    from suite.run.pool.rundir import CURVES_DIR as RUNNER_CURVES_DIR
    from suite.run.records import read_records

    assert CURVES_DIR == RUNNER_CURVES_DIR  # report reads where the runner writes

    write_curves(runs[0])
    add(runs[0], "cls", "ea", 2, 64, {}, status="diverged")  # the latest record of that key did not finish ok
    curves = load_curves(runs[0], "A", read_records(runs[0]))
    assert sorted((c["attention"], c["seed"]) for c in curves) == [
        ("ea", 0), ("ea", 1), ("softmax", 0), ("softmax", 1), ("softmax", 2)]
    assert all(c["metric"] == "accuracy" and c["run"] == "A" and c["substitute"] for c in curves)
    assert load_curves(runs[1], "B", read_records(runs[1])) == []  # no curves/ folder


def test_report_of_two_runs_overlays_them_and_compares_run_to_run(runs, tmp_path, capsys):
    write_curves(runs[0])
    write_curves(runs[1], skip_seed=2)
    out = tmp_path / "both"
    assert main(["report", str(runs[0]), str(runs[1]), "--out", str(out)]) == 0
    assert capsys.readouterr().out == f"wrote {out / 'report.md'}\n"
    report = (out / "report.md").read_text()
    assert report.startswith("# Report: A vs B") and "### A (" in report and "### B (" in report
    rows = md_rows(report, "### cls † · accuracy ↑")
    assert rows[3]["run"] == "B" and rows[3]["Δ vs A ± 95% CI (Welch)"] == "+0.25 ± 0.23"  # Holm over 3
    assert "line style per run (A: -, B: --)" in report
    for name in ("cls-L64-curves.png", "cls-accuracy.png", "kern-vs-L.png"):
        assert f"](plots/{name})" in report and (out / "plots" / name).exists()
    assert not (runs[0] / "report.md").exists()  # the runs themselves are left alone
    failed = md_rows(report, "## Jobs that did not finish ok")
    assert [(r["run"], r["status"]) for r in failed] == [("A", "oom"), ("B", "oom")]


@pytest.mark.parametrize("argv,message", [
    (["report", "{A}", "{B}"], "a report of 2 runs needs --out DIR"),
    (["report", "{A}", "{A}", "--out", "{tmp}/x"], "A: given twice"),
    (["report", "{A}", "{tmp}/nope"], "nope: not a run directory"),
    (["report", "{A}", "--out", "{A}/records.jsonl"], "records.jsonl: not a directory"),
    (["report", "{tmp}/empty"], "no record files"),
])
def test_report_misuse_is_one_usage_line(runs, tmp_path, capsys, argv, message):
    (tmp_path / "empty").mkdir()
    paths = {"A": str(runs[0]), "B": str(runs[1]), "tmp": str(tmp_path)}
    assert main([a.format(**paths) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err


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
    from suite.analysis.published import PUBLISHED_LRA

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
    # rewritten for the interval cells: mean ± 95% CI (t with 1 df: 12.71 * 0.01414 / sqrt(2) = 0.127)
    assert cells == ["lra-listops · accuracy ↑", "500", "0.3500 ± 0 (n=2)", "0.31 ± 0.13 (n=2)",
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
    assert "0.31 ± 0.13" in main_part and "0.31 ± 0.13 (n=2)" in lra_part


def test_reference_lra_keeps_the_substitute_marker(lra_run):
    markdown = render(load_runs([lra_run]), fmt="markdown", reference="lra")
    lra_part = markdown[markdown.index("### LRA accuracy"):]
    assert "| lra-image † · accuracy ↑" in lra_part
    assert "† substitute data" in lra_part and "lra-image: digits-gray" in lra_part
    assert "not comparable with the published numbers" in lra_part


def test_reference_lra_without_lra_tasks_says_so_in_one_line(runs, capsys, monkeypatch):
    from suite.analysis.compare import NO_LRA_TASKS

    monkeypatch.setenv("COLUMNS", "200")
    assert main(["compare", str(runs[0]), "--reference", "lra", "--format", "markdown"]) == 0
    out = capsys.readouterr().out
    assert out.count(NO_LRA_TASKS) == 1 and "published:" not in out and "0.60 ± 0.25" in out
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

"""Comparisons a reviewer accepts: grouping and pairing by configuration, missing metrics counted, degenerate
intervals unmarked, Holm-adjusted marks, the seeds-plus-test-set interval on per-example outcomes (against
statsmodels and scipy), the test split by default, and the QK-norm control line."""
import math

import numpy as np
import pytest

from suite.analysis.compare import render
from suite.analysis.controls import equivalence, qk_norm_lines
from suite.analysis.frames import load_runs, metric_stats
from suite.analysis.paired import cluster_variance, combined_difference, holm, mcnemar_exact, min_detectable
from suite.run.records import append_record, encode_examples, fingerprint, make_record


def add(out, attention, seed, metrics, *, profile="cpu", hparams=None, task="cls", examples=None, family="demo",
        status="ok", source="src"):
    config = {"builder": "b", "metric": "accuracy", "direction": "max", "data": {"source": source},
              "hparams": dict(hparams or {"lr": 0.001})}
    key = f"{task}-{attention}-{seed}-{profile}-{sorted(config['hparams'].items())}"
    append_record(out, make_record(
        key=key, task=task, family=family, attention=attention, profile=profile, seed=seed, seq_len=64,
        status=status, error=None, metrics=metrics, config=config, data={"source": source, "substitute": False},
        env={"device": "cpu"}, started_at="2026-01-01T00:00:00+00:00", wall_s=1.0, examples=examples))


# -- configurations -------------------------------------------------------------------------------------------

def test_two_profiles_and_two_set_variants_stay_four_groups_never_averaged_or_paired_across(tmp_path):
    run = tmp_path / "mixed"
    variants = {("cpu", 0.001): 0.50, ("cpu", 0.002): 0.60, ("full", 0.001): 0.70, ("full", 0.002): 0.80}
    for (profile, lr), level in variants.items():
        for seed in range(2):
            add(run, "softmax", seed, {"test_accuracy": level + seed / 100}, profile=profile, hparams={"lr": lr})
            add(run, "ea", seed, {"test_accuracy": level + 0.05 + seed / 50}, profile=profile, hparams={"lr": lr})
    frame = load_runs([run])
    assert frame["config"].nunique() == 4
    assert sorted(set(frame["config_label"])) == ["cpu, lr=0.001", "cpu, lr=0.002", "full, lr=0.001",
                                                  "full, lr=0.002"]
    stats = metric_stats(frame)
    ea = stats[stats["attention"] == "ea"].set_index("config_label")
    assert len(ea) == 4 and set(ea["n"]) == {2}  # one row per configuration, two seeds each, nothing pooled
    for (profile, lr), level in variants.items():
        row = ea.loc[f"{profile}, lr={lr}"]
        assert row["mean"] == pytest.approx(level + 0.05 + 0.01)  # its own seeds only
        assert row["delta"] == pytest.approx(0.05 + 0.005)  # paired with its own configuration's softmax
    text = render(frame, fmt="markdown")
    for label in ("cpu, lr=0.001", "cpu, lr=0.002", "full, lr=0.001", "full, lr=0.002"):
        assert f"#### cls · {label} · accuracy ↑ (test) · 1 comparison, Holm" in text


def test_an_ok_record_without_its_metric_is_counted_not_dropped(tmp_path):
    run = tmp_path / "missing"
    for seed in range(3):
        add(run, "softmax", seed, {"test_accuracy": 0.8 + seed / 100})
    add(run, "ea", 0, {"test_accuracy": 0.7})
    add(run, "ea", 1, {"test_accuracy": 0.72})
    add(run, "ea", 2, {"train_loss": 1.0})  # ok, but no accuracy
    add(run, "ea", 3, {"test_accuracy": None})  # ok, accuracy not finite (stored as null)
    row = metric_stats(load_runs([run])).set_index("attention").loc["ea"]
    assert row["n"] == 2 and row["missing"] == 2 and row["failed"] == "2 ok without a value"
    text = render(load_runs([run]), fmt="markdown")
    assert "| 2 (+2 ok without a value)" in text


def test_degenerate_intervals_get_no_mark_and_say_why(tmp_path):
    run = tmp_path / "flat"
    for seed in range(3):
        add(run, "softmax", seed, {"test_accuracy": 0.8})
        add(run, "ea", seed, {"test_accuracy": 0.9})  # the same difference at every seed: zero variance
    row = metric_stats(load_runs([run])).set_index("attention").loc["ea"]
    assert row["delta"] == pytest.approx(0.1) and row["delta_mark"] == "" and row["comparisons"] == 0
    assert row["delta_note"] == "zero variance: no interval, no mark" and row["ci_note"] == "zero variance"
    text = render(load_runs([run]), fmt="markdown")
    assert "0.9000 (no CI: zero variance)" in text and "+0.1000 (no CI)" in text and "* better" not in text


def test_a_record_of_another_split_is_not_read_as_test(tmp_path):
    run = tmp_path / "splits"
    for seed in range(2):
        add(run, "softmax", seed, {"val_accuracy": 0.9, "test_accuracy": 0.8 + seed / 100})
    # an old LRA record that evaluated its val split: its unprefixed accuracy is not a test accuracy
    add(run, "ea", 0, {"accuracy": 0.5}, family="lra", hparams={"lr": 0.001, "eval_split": "val"})
    frame = load_runs([run])
    test = metric_stats(frame).set_index(["attention", "config"])
    assert set(test["split"]) == {"test", ""}
    val = metric_stats(frame, split="val").set_index("attention")
    assert val.loc["softmax", "mean"] == pytest.approx(0.9) and val.loc["softmax", "split"] == "val"
    ea_test = test.xs("ea", level="attention").iloc[0]
    assert ea_test["n"] == 0 and ea_test["missing"] == 1  # no test value: counted missing, never mixed in


# -- Holm, the example-level comparison, MDE -------------------------------------------------------------------

def test_holm_matches_a_hand_worked_example_and_statsmodels():
    # by hand: sorted p 0.010, 0.020, 0.030, 0.040 (m = 4) -> 0.04, 0.06, 0.06 (max with the previous), 0.04 -> 0.06
    p = [0.030, 0.010, 0.040, 0.020]
    assert holm(p) == pytest.approx([0.06, 0.04, 0.06, 0.06])
    assert holm([0.5, math.nan, 0.01]) == pytest.approx([0.5, math.nan, 0.02], nan_ok=True)  # NaN: not counted
    multitest = pytest.importorskip("statsmodels.stats.multitest")
    rng = np.random.default_rng(1)
    for _ in range(5):
        values = list(rng.uniform(0, 0.2, size=7))
        assert holm(values) == pytest.approx(list(multitest.multipletests(values, method="holm")[1]))


def test_cluster_robust_variance_and_mcnemar_match_statsmodels():
    sm = pytest.importorskip("statsmodels.api")
    tables = pytest.importorskip("statsmodels.stats.contingency_tables")
    rng = np.random.default_rng(0)
    values, groups = rng.normal(size=60), rng.integers(0, 9, size=60)
    clustered = sm.OLS(values, np.ones(60)).fit(cov_type="cluster", cov_kwds={"groups": groups})
    assert cluster_variance(values, groups)[0] == pytest.approx(clustered.bse[0] ** 2, rel=1e-10)
    assert cluster_variance(values)[0] == pytest.approx(sm.OLS(values, np.ones(60)).fit().bse[0] ** 2, rel=1e-10)
    a, b = rng.random(300) < 0.72, rng.random(300) < 0.65
    only_a, only_b, p = mcnemar_exact(a, b)
    table = [[int((a & b).sum()), only_a], [only_b, int((~a & ~b).sum())]]
    assert p == pytest.approx(tables.mcnemar(table, exact=True).pvalue, rel=1e-12)


def test_the_combined_interval_adds_the_test_sets_error_to_the_seeds():
    from scipy import stats

    rng = np.random.default_rng(2)
    a = (rng.random((4, 500)) < 0.8).astype(float)
    b = (rng.random((4, 500)) < 0.75).astype(float)
    diff = combined_difference(a, b)
    per_seed = (a - b).mean(axis=1)
    seed_var = per_seed.var(ddof=1) / 4
    example_var = (a - b).mean(axis=0).var(ddof=1) / 500
    assert diff.delta == pytest.approx(per_seed.mean())
    assert diff.se == pytest.approx(math.sqrt(seed_var + example_var))
    assert diff.half == pytest.approx(stats.t.ppf(0.975, 3) * diff.se)
    assert diff.p == pytest.approx(2 * stats.t.sf(abs(diff.delta) / diff.se, 3))
    # wider than the seed-only interval, which leaves the test set's sampling error out
    assert diff.half > stats.t.ppf(0.975, 3) * math.sqrt(seed_var)
    # clusters: examples sharing a source widen the interval (here: ten copies of each example)
    copies = np.repeat(np.arange(50), 10)
    a2, b2 = a[:, copies], b[:, copies]
    assert combined_difference(a2, b2, copies).se > combined_difference(a2, b2).se
    assert min_detectable(diff.se, 3) == pytest.approx((stats.t.ppf(0.975, 3) + stats.t.ppf(0.8, 3)) * diff.se)


def test_compare_pairs_per_example_outcomes_on_the_same_examples_only(tmp_path):
    run = tmp_path / "examples"
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 400)
    clusters = np.arange(400) // 8
    outcomes = {}
    for seed in range(3):
        for attention, rate in (("softmax", 0.7), ("ea", 0.8)):
            correct = rng.random(400) < rate
            outcomes[attention, seed] = correct
            examples = encode_examples("test", "correct", correct, fingerprint(labels), clusters)
            add(run, attention, seed, {"test_accuracy": float(correct.mean())}, examples=dict(examples))
    row = metric_stats(load_runs([run])).set_index("attention").loc["ea"]
    expected = combined_difference(np.stack([outcomes["ea", s] for s in range(3)]),
                                   np.stack([outcomes["softmax", s] for s in range(3)]), clusters)
    assert row["combined_delta"] == pytest.approx(expected.delta) == pytest.approx(row["delta"])
    assert row["combined_ci95"] == pytest.approx(expected.half) and row["examples_n"] == 400
    assert row["clusters_n"] == 50 and row["mde"] == pytest.approx(expected.mde)
    text = render(load_runs([run]), fmt="markdown")
    assert "Δ vs softmax ± 95% CI (seeds + test set)" in text and "MDE" in text
    other = tmp_path / "other-examples"  # a baseline evaluated on other examples: no example-level pairing
    for seed in range(3):
        for attention, prints in (("softmax", fingerprint(labels)), ("ea", fingerprint(labels[::-1]))):
            examples = encode_examples("test", "correct", outcomes[attention, seed], prints)
            add(other, attention, seed, {"test_accuracy": 0.5 + seed / 100}, examples=dict(examples))
    row = metric_stats(load_runs([other])).set_index("attention").loc["ea"]
    assert math.isnan(row["combined_delta"]) and math.isfinite(row["delta"])


# -- the QK-norm control --------------------------------------------------------------------------------------

def _control_run(out, ea, softmax, softmax_qk):
    for seed in range(3):
        add(out, "ea", seed, {"test_accuracy": ea + seed / 1000})
        add(out, "softmax", seed, {"test_accuracy": softmax + seed / 500})
        add(out, "softmax:qk_norm=true", seed, {"test_accuracy": softmax_qk + seed / 400})


@pytest.mark.parametrize("levels, verdict", [
    ((0.80, 0.70, 0.69), "EA's difference survives the QK-norm control"),
    ((0.80, 0.70, 0.80), "EA's difference does not survive the QK-norm control"),
    ((0.80, 0.80, 0.70), "no difference to control for"),
])
def test_the_report_says_whether_eas_difference_survives_the_qk_norm_control(tmp_path, levels, verdict):
    run = tmp_path / "control"
    _control_run(run, *levels)
    (line,) = qk_norm_lines(load_runs([run]))
    assert line.startswith("cls (cpu, L 64; accuracy on test): EA - softmax ") and verdict in line
    assert "QK-norm control" in render(load_runs([run]), fmt="markdown")


def test_matching_within_a_margin_holds_fails_or_cannot_be_decided():
    assert equivalence(0.002, 0.005, 0.01) == "holds"
    assert equivalence(0.05, 0.02, 0.01) == "fails" and equivalence(-0.05, 0.02, 0.01) == "fails"
    assert equivalence(0.0, 0.03, 0.01) == "cannot be decided"
    assert equivalence(math.nan, 0.01, 0.01) == "cannot be decided"


def test_one_seed_of_an_accuracy_shows_the_wilson_interval_over_its_test_examples(tmp_path):
    proportion = pytest.importorskip("statsmodels.stats.proportion")
    run = tmp_path / "probe"
    append_record(run, make_record(
        key="p", task="cls", family="lra", attention="probe:bow", profile="cpu", seed=0, seq_len=64, status="ok",
        error=None, metrics={"test_accuracy": 139 / 246}, env={}, started_at="", wall_s=1.0,
        config={"metric": "accuracy", "direction": "max", "data": {"source": "s"}, "hparams": {}},
        data={"source": "s", "substitute": False, "test_examples": 246}))
    row = metric_stats(load_runs([run])).iloc[0]
    low, high = proportion.proportion_confint(139, 246, method="wilson")
    assert (row["wilson_low"], row["wilson_high"], row["wilson_n"]) == (pytest.approx(low), pytest.approx(high), 246)
    assert low > 0.5  # 56.5% of 246 excludes chance
    assert "0.5650 [0.5026, 0.6255] (1 seed; Wilson, 246 examples)" in render(load_runs([run]), fmt="markdown")

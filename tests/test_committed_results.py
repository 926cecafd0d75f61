"""Every committed comparison is what compare prints from its folder's records today (results/generated.yaml)."""
from pathlib import Path

from suite.cli import main
from suite.run.records import append_record, make_record

ROOT = Path(__file__).resolve().parents[1]


def test_every_committed_compare_table_regenerates_from_its_records(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["regenerate", "--check"]) == 0, capsys.readouterr().err
    assert "match their records" in capsys.readouterr().out


def test_a_stale_table_fails_the_check_and_names_the_file(tmp_path, monkeypatch, capsys):
    results = tmp_path / "results"
    (results / "run").mkdir(parents=True)
    for seed in range(2):
        append_record(results / "run", make_record(
            key=f"k{seed}", task="t", family="demo", attention="ea", profile="cpu", seed=seed, seq_len=8, status="ok",
            error=None, metrics={"test_accuracy": 0.5 + seed / 10}, env={}, started_at="", wall_s=1.0,
            config={"metric": "accuracy", "direction": "max", "data": {"source": "s"}, "hparams": {}},
            data={"source": "s", "substitute": False}))
    (results / "run" / "compare.md").write_text("typed by hand\n")
    (results / "generated.yaml").write_text("generated:\n  - {file: results/run/compare.md, compare: [results/run]}\n")
    monkeypatch.chdir(tmp_path)
    assert main(["regenerate", "--check"]) == 1
    assert "out of date (run `python run_suite.py regenerate`): results/run/compare.md" in capsys.readouterr().err
    assert main(["regenerate"]) == 0 and main(["regenerate", "--check"]) == 0
    assert (results / "run" / "compare.md").read_text().startswith("### main metric by task")

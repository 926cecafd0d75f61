"""Every task's ``full`` profile (what a GPU night runs) runs end to end on the CPU before any GPU sees it:
``suite --profile full --rehearse`` keeps each task's model shape, data pipeline (DataLoader workers
included), augmentation, optimizer, evaluation and record, cutting only steps, batches and examples (the
record's ``config.overrides`` says which), at the profile's shortest L. A task whose data is neither embedded
nor generated is ``skipped`` with instructions; every other one must finish ``ok``."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
#: tasks that need a data set no package carries and no generator makes (they must skip, saying why)
NEEDS_DATA = {"vit-cifar10", "vit-cifar100", "vit-imagenet", "lm-enwik8", "lm-wikitext103", "lm-tinystories"}


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    out = tmp_path_factory.mktemp("rehearsal") / "run"
    result = subprocess.run([sys.executable, str(ROOT / "run_suite.py"), "suite", "--profile", "full", "--rehearse",
                             "--attn", "ea", "--device", "cpu", "--out", str(out)],
                            capture_output=True, text=True, timeout=2400, cwd=out.parent)
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    return result, {r["task"]: r for r in records}


def test_every_full_profile_with_embedded_or_generated_data_runs_end_to_end(rehearsal):
    result, records = rehearsal
    failed = {task: r["error"] for task, r in records.items() if r["status"] not in ("ok", "skipped")}
    assert not failed, failed
    ok = {task for task, r in records.items() if r["status"] == "ok"}
    assert ok == set(records) - NEEDS_DATA, result.stdout[-3000:]
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]


def test_tasks_without_their_data_are_skipped_with_instructions(rehearsal):
    _, records = rehearsal
    for task in NEEDS_DATA & set(records):
        assert records[task]["status"] == "skipped" and records[task]["error"]


def test_the_record_shows_the_rehearsal_overrides_and_the_full_profile(rehearsal):
    _, records = rehearsal
    for record in records.values():
        if record["status"] != "ok":
            continue
        assert record["profile"] == "full"
        overrides = record["config"]["overrides"]
        assert overrides and all(record["config"]["hparams"][k] == v for k, v in overrides.items())
    vit = records["vit-fashion-mnist"]
    assert vit["config"]["hparams"]["augment"] == "deit" and vit["config"]["hparams"]["model"] == "vit_tiny"
    assert vit["config"]["overrides"]["steps"] == 2 and vit["metrics"]["train_steps"] == 2

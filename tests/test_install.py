"""A non-editable ``pip install .`` into a fresh virtual environment works from any folder: the task files (the
top-level tasks/ folder, linked into the package as suite/tasks/files) and the LM family's lm-eval tasks ship
inside the package, and the ``ea-suite`` console command lists the tasks and
runs a smoke job.

The fresh venv reuses the already-installed dependencies (torch alone is gigabytes), pip and setuptools through a
``.pth`` line naming this environment's site-packages, so nothing is downloaded; the ``.pth`` files there (the
editable install of this checkout among them) are not processed that way, so the suite it imports is the one pip
just installed, which the test checks.
"""
import json
import os
import shutil
import subprocess
import sysconfig
import venv
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(python, ea-suite command, a working folder outside the checkout) of a fresh venv with the suite installed."""
    base = tmp_path_factory.mktemp("install")
    env_dir = base / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "deps-from-test-env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    environ = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "EA_SUITE_PLUGINS", "EA_SUITE_TASKS")}
    # a copy of the package sources: pip builds in the source tree, and this keeps the checkout free of build/
    # (and a stale build/ there from reaching the wheel)
    source = base / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "run_suite.py", "suite", "tasks"):
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy2
        copy(ROOT / name, source / name, **({"ignore": shutil.ignore_patterns("__pycache__")}
                                            if (ROOT / name).is_dir() else {}))
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", str(source)],
                   check=True, env=environ, cwd=base, timeout=600)
    work = base / "elsewhere"
    work.mkdir()
    return python, env_dir / "bin" / "ea-suite", work, environ


def test_the_installed_package_is_not_the_checkout(installed):
    python, _, work, environ = installed
    where = subprocess.run([str(python), "-c", "import suite; print(suite.__file__)"], capture_output=True, text=True,
                           check=True, cwd=work, env=environ).stdout.strip()
    assert ROOT not in Path(where).parents and "site-packages" in where


def test_console_command_lists_the_tasks_from_another_folder(installed):
    _, command, work, environ = installed
    out = subprocess.run([str(command), "list"], capture_output=True, text=True, cwd=work, env=environ, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    for task in ("lra-listops", "vit-fashion-mnist", "lm-kjv", "kernels-op"):
        assert task in out.stdout


def test_console_command_runs_a_smoke_job_and_records_it(installed):
    _, command, work, environ = installed
    out = subprocess.run([str(command), "run", "kernels-op", "--attn", "softmax", "--seq-len", "32", "--out", "run"],
                         capture_output=True, text=True, cwd=work, env=environ, timeout=600)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    (record,) = [json.loads(line) for line in (work / "run" / "records.jsonl").read_text().splitlines()]
    assert record["status"] == "ok" and record["task"] == "kernels-op" and record["metrics"]["fwd_ms"] > 0


def test_the_lm_familys_local_lm_eval_tasks_are_installed(installed):
    python, _, work, environ = installed
    code = ("from suite.families.lm.lm_eval_run import TASK_DIR, LOCAL_TASKS; "
            "print(sorted(p.name for p in TASK_DIR.iterdir()))")
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True, cwd=work, env=environ)
    names = out.stdout
    assert "heldout.py" in names and all(f"{task}.yaml" in names for task in
                                         ("suite_heldout_ppl", "suite_heldout_cloze", "suite_heldout_cloze_gen"))

"""The same loop under torchrun: 2 CPU processes with gloo and DistributedDataParallel, rank 0 records."""
import socket
import subprocess
import sys
from pathlib import Path

from tiny_jobs import plugin_env, write_tiny_task

from suite.run.records import read_records

RUN_SUITE = Path(__file__).resolve().parents[1] / "run_suite.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_with_two_gloo_processes_trains_one_ddp_job_and_records_it_once(tmp_path):
    write_tiny_task(tmp_path / "tasks", smoke="{steps: 4}")
    out = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(free_port()), str(RUN_SUITE), "run", "tiny", "--device", "cpu", "--out", str(out)]
    result = subprocess.run(command, env=plugin_env(tmp_path / "tasks"), cwd=tmp_path, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    [record] = read_records(out)
    assert record["status"] == "ok", record["error"]
    metrics = record["metrics"]
    assert metrics["world_size"] == 2
    assert metrics["ddp_param_max_diff"] == 0.0  # gradients were averaged: the replicas stayed identical
    assert metrics["train_steps"] == 4 and metrics["train_samples_per_s"] > 0 and 0 <= metrics["test_accuracy"] <= 1

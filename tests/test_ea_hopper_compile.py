"""Every EA kernel compiles for Hopper (sm_90) to PTX and a cubin, for every dtype and block size the launcher
can pick. The interpreter lets through what the GPU compiler rejects (dot shapes under 16, bf16 paths, layouts);
this catches it without a GPU. The compiles run in a subprocess without TRITON_INTERPRET."""
import json
import os
import subprocess
import sys

import pytest

from suite.attention.ea.hopper_compile import variants


@pytest.fixture(scope="module")
def compile_results():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-m", "suite.attention.ea.hopper_compile", "--json"],
                          capture_output=True, text=True, env=env, timeout=1500)
    assert proc.stdout.strip(), proc.stderr[-3000:]
    return {(r["variant"], r["dtype"], r["order"], r["block_d"]): r for r in json.loads(proc.stdout)}


def _id(spec):
    return f"{spec['variant']}-{spec['dtype']}-t{spec['order']}-bd{spec['block_d']}"


@pytest.mark.parametrize("spec", variants(), ids=_id)
def test_kernel_compiles_for_hopper(compile_results, spec):
    result = compile_results[(spec["variant"], spec["dtype"], spec["order"], spec["block_d"])]
    assert result["ok"], result["error"]
    assert result["cubin_bytes"] > 0


def test_compile_covers_every_launch_block_size_and_dtype():
    from suite.attention.ea.triton_ops import LAUNCH_BLOCK_DS

    covered = {(s["dtype"], s["block_d"]) for s in variants() if s["variant"] == "fwd_causal"}
    assert covered == {(d, bd) for d in ("fp32", "fp16", "bf16") for bd in LAUNCH_BLOCK_DS}

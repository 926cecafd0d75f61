"""Static GPU profile of the EA kernels (docs/kernels.md): every kernel binary the launcher can launch compiles
for Hopper (sm_90) without a GPU, with no register spill and at least 25% theoretical occupancy on an H100.

The interpreter lets through what the GPU compiler rejects or makes slow (dot shapes under 16, bf16 paths,
layouts, register spills); this catches it. The compiles run in a subprocess without TRITON_INTERPRET; the
launches are recorded from the real launcher (hopper_compile.record_launches), not listed by hand."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from suite.attention.ea.hopper_compile import DTYPES, LAUNCH_DIMS, LAUNCH_ORDERS, MIN_OCCUPANCY, occupancy_sm90, passes
from suite.attention.ea.triton_ops import KERNEL_TENSORS, kernel_bytes_per_element

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "results" / "static" / "sm90.json"
#: every kernel variant the launcher launches (non-causal fwd and dq take no mask: it is in the carries; "no-Z":
#: the forward without gradients, which writes no normaliser)
VARIANTS = {"chunk sums keys", "chunk sums keys +mask", "chunk sums queries",
            "fwd causal", "fwd causal +mask", "dq causal", "dq causal +mask", "dk/dv causal", "dk/dv causal +mask",
            "fwd non-causal", "dq non-causal", "dk/dv non-causal", "dk/dv non-causal +mask",
            "fwd causal no-Z", "fwd causal no-Z +mask", "fwd non-causal no-Z"}


@pytest.fixture(scope="module")
def profile():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "run_suite.py", "hopper-profile", "--json"], cwd=ROOT,
                          capture_output=True, text=True, env=env, timeout=1500)
    assert proc.stdout.strip(), proc.stderr[-3000:]
    return json.loads(proc.stdout)


def _describe(r):
    if not r["ok"]:
        return f"{r['variant']} {r['dtype']} t={r['order']}: {r['error']}"
    return (f"{r['variant']} {r['dtype']} t={r['order']} BLOCK_L={r['block_l']} BLOCK_C={r['block_c']}: "
            f"{r['regs']} regs, spills {r['spill_stores']}/{r['spill_loads']} B, stack {r['stack']} B, "
            f"occupancy {r['occupancy']:.1%}")


def test_every_launched_kernel_compiles_without_spills_at_25_percent_occupancy(profile):
    failures = [_describe(r) for r in profile if not passes(r)]
    assert not failures, "\n".join(failures)
    assert all(r["cubin_bytes"] > 0 and r["regs"] > 0 and r["occupancy"] >= MIN_OCCUPANCY for r in profile)


def test_profile_covers_every_kernel_dtype_order_and_head_dim(profile):
    for dtype in DTYPES:
        for order in LAUNCH_ORDERS:
            rows = [r for r in profile if r["dtype"] == dtype and r["order"] == order]
            assert {r["variant"] for r in rows} == VARIANTS, (dtype, order)
            for variant in VARIANTS:
                dims = set().union(*(r["dims"] for r in rows if r["variant"] == variant))
                assert dims == set(LAUNCH_DIMS), (dtype, order, variant)


def test_bytes_moved_per_element_match_what_each_kernel_must_read_and_write(profile):
    """Counted from each kernel's TTIR, against the launcher's own table (triton_ops.KERNEL_TENSORS, which the
    bandwidth figures of gpu-check use): q, k, v, o, g, dq, dk, dv in the input dtype, Z in fp32 (never in an
    inference forward), keep 1 byte per row and channel block, and once per chunk and channel the 2(t+1) fp32
    sums (carries in, chunk sums out). At t = 0, a_0(q) = 1, so no kernel reads q."""
    s_of = {"fp32": 4, "bf16": 2, "fp16": 2}
    assert {r["variant"].replace(" +mask", "") for r in profile} == set(KERNEL_TENSORS)
    for r in profile:
        read, write = kernel_bytes_per_element(r["variant"], s_of[r["dtype"]], r["order"])
        keep = 1 / r["block_c"] if r["variant"].endswith("+mask") else 0.0
        assert r["read_per_elt"] == pytest.approx(read + keep), _describe(r)
        assert r["write_per_elt"] == pytest.approx(write), _describe(r)
        assert r["carry_per_channel"] == 2 * (r["order"] + 1) * 4, _describe(r)  # the fp32 sums in or out


def test_committed_static_profile_is_the_current_launch_set_and_passes(profile):
    committed = json.loads(COMMITTED.read_text())
    assert committed["command"].startswith("python run_suite.py hopper-profile")
    key = lambda r: (r["variant"], r["dtype"], r["order"], r["block_l"], r["block_c"], r["num_warps"])  # noqa: E731
    launchable = {key(r) for r in profile}
    assert launchable <= {key(r) for r in committed["results"]}
    for r in committed["results"]:
        assert passes(r), _describe(r)
    assert (COMMITTED.parent / "sm90.md").read_text().count("\n| ") > len(launchable)


@pytest.mark.parametrize("regs, warps, smem, occupancy", [
    (255, 4, 0, 0.125),     # the old causal kernels: 2 blocks of 4 warps
    (128, 4, 0, 0.25),      # 4096 registers per warp: 4 warps per sub-partition
    (129, 4, 0, 0.1875),    # 136 x 32 rounds to 4352: 3 warps per sub-partition
    (96, 4, 0, 0.3125),     # 5 warps per sub-partition, 20 per SM, 5 blocks
    (64, 4, 0, 0.5),
    (32, 4, 0, 1.0),
    (32, 1, 0, 0.5),        # 32 blocks per SM at most
    (32, 4, 100 * 1024, 0.125),  # shared memory: 2 blocks of 101 KB in 228 KB
    (256, 4, 0, 0.0),       # more than 255 registers cannot launch
])
def test_sm90_occupancy_follows_the_occupancy_calculator(regs, warps, smem, occupancy):
    assert occupancy_sm90(regs, warps, smem)["occupancy"] == occupancy

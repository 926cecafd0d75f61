"""Compile every EA kernel for Hopper (sm_90) without a GPU: PTX and a cubin per launch configuration.

``python -m suite.attention.ea.hopper_compile [--json]`` compiles each kernel variant for every dtype and block
size the launcher can pick (triton_ops.LAUNCH_*), and for other orders. It must run without TRITON_INTERPRET
(interpreted kernels cannot be compiled); the tests start it in a subprocess for that reason.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor

HOPPER = ("cuda", 90, 32)
DTYPES = ("fp32", "fp16", "bf16")
# pointer arguments that carry the input dtype; Z, the carries and OUT are fp32 and KEEP is int8
INPUT_DTYPE_ARGS = {"Q", "K", "V", "O", "G", "DQ", "DK", "DV", "X", "Y", "W"}
FP32_ARGS = {"Z", "CARRY", "OUT"}

KERNEL_FLAGS = {
    "chunk_sums_keys": ("_ea_chunk_sums_kernel", dict(MODE=0, HAS_KEEP=True)),
    "chunk_sums_queries": ("_ea_chunk_sums_kernel", dict(MODE=1, HAS_KEEP=False)),
    "fwd_causal": ("_ea_fwd_kernel", dict(CAUSAL=True, HAS_KEEP=True, COMPUTE_DQ=False)),
    "dq_causal": ("_ea_fwd_kernel", dict(CAUSAL=True, HAS_KEEP=True, COMPUTE_DQ=True)),
    "dkdv_causal": ("_ea_bwd_dkdv_kernel", dict(CAUSAL=True, HAS_KEEP=True)),
    "fwd_noncausal": ("_ea_fwd_kernel", dict(CAUSAL=False, HAS_KEEP=False, COMPUTE_DQ=False)),
    "dq_noncausal": ("_ea_fwd_kernel", dict(CAUSAL=False, HAS_KEEP=True, COMPUTE_DQ=True)),
    "dkdv_noncausal": ("_ea_bwd_dkdv_kernel", dict(CAUSAL=False, HAS_KEEP=False)),
}


def variants() -> list[dict]:
    """(kernel variant, dtype, order, BLOCK_D) combinations: every launch config at order 6, plus other orders."""
    from suite.attention.ea.triton_ops import LAUNCH_BLOCK_DS

    out = [dict(variant=v, dtype=d, order=6, block_d=bd)
           for v, d, bd in itertools.product(list(KERNEL_FLAGS)[:5], DTYPES, LAUNCH_BLOCK_DS)]
    out += [dict(variant=v, dtype="bf16", order=6, block_d=LAUNCH_BLOCK_DS[-1]) for v in list(KERNEL_FLAGS)[5:]]
    out += [dict(variant=v, dtype="bf16", order=o, block_d=LAUNCH_BLOCK_DS[-1])
            for v in ("fwd_causal", "dkdv_causal") for o in (0, 2, 8)]
    return out


def compile_variant(spec: dict) -> dict:
    """Compile one variant; returns spec plus ok, error and the PTX/cubin sizes."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from suite.attention.ea import triton_kernels
    from suite.attention.ea.triton_ops import LAUNCH_BLOCK_L, LAUNCH_NUM_WARPS

    name, flags = KERNEL_FLAGS[spec["variant"]]
    fn = getattr(triton_kernels, name)
    constexprs = dict(flags, ORDER=spec["order"], T1P=triton.next_power_of_2(spec["order"] + 1),
                      BLOCK_L=LAUNCH_BLOCK_L, BLOCK_D=spec["block_d"])
    signature = {}
    for arg in fn.arg_names:
        if arg in constexprs:
            signature[arg] = "constexpr"
        elif arg in INPUT_DTYPE_ARGS:
            signature[arg] = "*" + spec["dtype"]
        elif arg in FP32_ARGS:
            signature[arg] = "*fp32"
        elif arg == "KEEP":
            signature[arg] = "*i8"
        else:
            signature[arg] = "i32"
    try:
        compiled = triton.compile(ASTSource(fn=fn, signature=signature, constexprs=constexprs),
                                  target=GPUTarget(*HOPPER), options={"num_warps": LAUNCH_NUM_WARPS})
        ptx, cubin = compiled.asm.get("ptx", ""), compiled.asm.get("cubin", b"")
        ok = ".target sm_90" in ptx and len(cubin) > 0
        return dict(spec, ok=ok, error="" if ok else "no sm_90 PTX or empty cubin",
                    ptx_bytes=len(ptx), cubin_bytes=len(cubin))
    except Exception as err:  # report every failure, not just the first
        return dict(spec, ok=False, error=f"{type(err).__name__}: {err}"[:2000], ptx_bytes=0, cubin_bytes=0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON list instead of a table")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        print("error: unset TRITON_INTERPRET: interpreted kernels cannot be compiled", file=sys.stderr)
        return 2
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = list(pool.map(compile_variant, variants()))
    if args.json:
        print(json.dumps(results))
    else:
        for r in results:
            status = "ok " if r["ok"] else "FAIL"
            print(f"{status} {r['variant']:<20} {r['dtype']:<5} order={r['order']} BLOCK_D={r['block_d']:<3} "
                  f"cubin={r['cubin_bytes']} {r['error']}")
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())

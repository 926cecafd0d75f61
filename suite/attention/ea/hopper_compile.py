"""Compile every EA kernel the launcher can pick for Hopper (sm_90) without a GPU, and profile its resources.

    python run_suite.py hopper-profile                  # compile check: one line per kernel, ok or FAIL
    python run_suite.py hopper-profile --resources      # the static profile table (docs/kernels.md)
    python run_suite.py hopper-profile --resources --out results/static   # writes sm90.md, sm90.json
    python run_suite.py hopper-profile --resources --dims 64 --orders 8,12 --out DIR --name wide

What is compiled is what the launcher launches: the op (``triton_ops.EATritonFunction``, forward and backward,
causal and not, with and without a key padding mask, with initial and final state) runs on CPU tensors of a
representative training shape with ``triton_ops._launch`` patched to record each launch instead of running it.
Each recorded launch is specialised by Triton's own JIT rules (pointer alignment, integers divisible by 16 or
equal to 1) and compiled for sm_90, once per distinct binary. ``--generic`` compiles without that
specialisation instead (what the first version of this tool did).

Per kernel the profile reports, read from the compiled kernel: registers and the spill stack (cuobjdump
-res-usage on the cubin), spill stores and loads (ptxas -v, which Triton runs), shared memory (static from the
cubin, dynamic from Triton's metadata), the cubin size, and the bytes of global loads and stores inside the L
loop per element of [B, L, H, D] (counted from the kernel's TTIR). The theoretical occupancy on an H100 follows
NVIDIA's occupancy calculator (cuda_occupancy.h) for compute capability 9.0; see ``occupancy_sm90``.

It must run without TRITON_INTERPRET (interpreted kernels cannot be compiled); the tests start it in a subprocess.
The command is ``suite.cli.tools``; this module is the library it calls.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import tempfile
from concurrent.futures import ProcessPoolExecutor

HOPPER = ("cuda", 90, 32)
H100_SMS = 132
DTYPES = ("fp32", "bf16", "fp16")
LAUNCH_DIMS = (16, 32, 64, 128)
LAUNCH_ORDERS = (0, 2, 4, 6)
#: the representative shape the launches are recorded on: B, L and the model width C = H*D
SHAPE_B, SHAPE_L, SHAPE_C = 4, 4096, 1024
#: the acceptance thresholds of the static profile (tests/test_ea_hopper_compile.py)
MIN_OCCUPANCY = 0.25

# -- theoretical occupancy, compute capability 9.0 ------------------------------------------------------
# Per SM: 65536 registers in 4 sub-partitions, 64 warps, 32 blocks, 228 KB shared memory (227 KB per block),
# 1 KB of shared memory reserved by the driver per block. Registers are allocated per warp in units of 256
# (so per thread in units of 8), at most 255 per thread; shared memory in units of 128 bytes.
SM90 = dict(regs_per_sm=65536, sub_partitions=4, reg_unit=256, max_regs_per_thread=255, max_warps=64,
            max_blocks=32, smem_per_sm=228 * 1024, smem_per_block=227 * 1024, smem_reserved=1024, smem_unit=128,
            warp_size=32)


def _round_up(x: int, unit: int) -> int:
    return -(-x // unit) * unit


def occupancy_sm90(regs: int, num_warps: int, smem_bytes: int) -> dict:
    """Blocks and warps per SM and the occupancy (active warps / 64) of a kernel on sm_90.

    ``smem_bytes`` is the static plus dynamic shared memory of one block (the reserved 1 KB is added here).
    Mirrors cudaOccMaxActiveBlocksPerMultiprocessor: the register limit counts whole warps per sub-partition.
    """
    p = SM90
    by_warps = p["max_warps"] // num_warps
    if regs > p["max_regs_per_thread"]:
        by_regs = 0
    elif regs == 0:
        by_regs = p["max_blocks"]
    else:
        regs_per_warp = _round_up(regs * p["warp_size"], p["reg_unit"])
        warps_per_sub = (p["regs_per_sm"] // p["sub_partitions"]) // regs_per_warp
        by_regs = warps_per_sub * p["sub_partitions"] // num_warps
    smem = _round_up(smem_bytes + p["smem_reserved"], p["smem_unit"])
    by_smem = 0 if smem > p["smem_per_block"] + p["smem_reserved"] else p["smem_per_sm"] // smem
    blocks = min(by_warps, by_regs, by_smem, p["max_blocks"])
    limits = dict(warps=by_warps, registers=by_regs, shared=by_smem, blocks=p["max_blocks"])
    return dict(blocks_per_sm=blocks, warps_per_sm=blocks * num_warps,
                occupancy=blocks * num_warps / p["max_warps"],
                limited_by=sorted(k for k, v in limits.items() if v == blocks))


# -- recording what the launcher launches --------------------------------------------------------------

def _variant_name(kernel: str, constexprs: dict) -> str:
    if kernel == "_ea_chunk_sums_kernel":
        name = "chunk sums keys" if constexprs["MODE"] == 0 else "chunk sums queries"
    elif kernel == "_ea_fwd_kernel":
        name = ("dq " if constexprs["COMPUTE_DQ"] else "fwd ") + ("causal" if constexprs["CAUSAL"] else "non-causal")
        if not constexprs["COMPUTE_DQ"] and not constexprs.get("STORE_Z", True):
            name += " no-Z"
    elif kernel == "_ea_bwd_dkdv_kernel":
        name = "dk/dv " + ("causal" if constexprs["CAUSAL"] else "non-causal")
    else:
        name = kernel
    return name + (" +mask" if constexprs.get("HAS_KEEP") else "")


def scenarios(dims=LAUNCH_DIMS, orders=LAUNCH_ORDERS, dtypes=DTYPES) -> list[dict]:
    """Every way the op is called that changes which kernels run: causal or not, masked or not, with state, and
    training (forward and backward) or inference (a forward without gradients, which writes no Z)."""
    out = []
    for D in dims:
        for order in orders:
            for dtype in dtypes:
                for causal in (True, False):
                    for masked in (False, True):
                        for inference in (False, True):
                            out.append(dict(D=D, order=order, dtype=dtype, causal=causal, masked=masked,
                                            state=causal and masked, inference=inference))
    return out


def record_launches(scenario: dict, generic: bool = False) -> list[dict]:
    """Run the op forward (and backward, unless an inference scenario) for one scenario with kernel launches
    recorded, not run.

    Returns one spec per launch: the kernel, its specialised signature, constexprs and attributes, and the
    compile options, exactly as Triton's JIT would build them on an H100 (picklable, for compile_spec).
    """
    import torch
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature

    from suite.attention.ea import triton_ops

    D, order = scenario["D"], scenario["order"]
    H = max(1, SHAPE_C // D)
    B, L = SHAPE_B, SHAPE_L
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[scenario["dtype"]]
    backend = make_backend(GPUTarget(*HOPPER))
    binders = {}
    specs = []

    def record(kernel, grid, args, num_warps, **constexprs):
        kwargs = dict(constexprs, num_warps=num_warps, debug=False)
        if generic:
            sig = {}
            for name, arg in zip(kernel.arg_names, args):
                if isinstance(arg, torch.Tensor):
                    sig[name] = "*" + {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16",
                                       torch.int8: "i8"}[arg.dtype]
                else:
                    sig[name] = "i32"
            sig.update({k: "constexpr" for k in constexprs})
            options = backend.parse_options(dict(num_warps=num_warps)).__dict__
            cexpr, attrs = dict(constexprs), {}
        else:
            if kernel not in binders:
                binders[kernel] = create_function_from_signature(kernel.signature, kernel.params, backend)
            bound, specialization, options = binders[kernel](*args, **kwargs)
            opts, sig, cexpr, attrs = kernel._pack_args(backend, kwargs, bound, specialization, options)
            options = opts.__dict__
        name = kernel.fn.__name__
        specs.append(dict(kernel=name, variant=_variant_name(name, constexprs), D=D, order=order,
                          dtype=scenario["dtype"], block_l=constexprs["BLOCK_L"], block_c=constexprs["BLOCK_C"],
                          num_warps=num_warps, signature=sig, constexprs=cexpr, attrs=attrs,
                          options={k: v for k, v in options.items() if _picklable(v)}, generic=generic))

    # CPU tensors that are never written or read (torch.empty touches no page); their allocations are 64-byte
    # aligned, as CUDA's are, so Triton specialises the pointers the same way
    training = not scenario.get("inference", False)
    q, k, v = (torch.empty(B, L, H, D, dtype=dtype, requires_grad=training) for _ in range(3))
    mask = torch.ones(B, L, dtype=torch.bool) if scenario["masked"] else None
    init = torch.zeros(B, H, 2, order + 1, D) if scenario["state"] else None
    splits = triton_ops.launch_config(B, L, H, D, q.device, sms=H100_SMS).num_splits
    saved = triton_ops._launch
    triton_ops._launch = record
    try:
        o, _ = triton_ops.ea_triton(q, k, v, order, scenario["causal"], mask, init,
                                    output_final_state=scenario["state"], num_splits=splits)
        if training:
            o.backward(torch.empty_like(o))
    finally:
        triton_ops._launch = saved
    return specs


def _picklable(value) -> bool:
    return isinstance(value, (bool, int, float, str, type(None))) or (
        isinstance(value, tuple) and all(_picklable(v) for v in value))


def spec_key(spec: dict) -> str:
    """Identity of the compiled binary (launches with equal keys share one)."""
    return json.dumps([spec["kernel"], spec["signature"], sorted((str(k), v) for k, v in spec["constexprs"].items()),
                       sorted((str(k), v) for k, v in spec["attrs"].items()), spec["options"]], sort_keys=True)


def launch_specs(dims=LAUNCH_DIMS, orders=LAUNCH_ORDERS, dtypes=DTYPES, generic: bool = False) -> list[dict]:
    """Distinct binaries over every scenario, each with the head dims ("dims") that launch it."""
    merged: dict[str, dict] = {}
    for sc in scenarios(dims, orders, dtypes):
        for spec in record_launches(sc, generic):
            D = spec.pop("D")
            merged.setdefault(spec_key(spec), dict(spec, dims=[]))["dims"].append(D)
    for spec in merged.values():
        spec["dims"] = sorted(set(spec["dims"]))
    return sorted(merged.values(), key=lambda s: (s["dtype"], s["order"], s["variant"]))


# -- compiling and measuring ---------------------------------------------------------------------------

_PTXAS_STACK = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_PTXAS_REGS = re.compile(r"Used (\d+) registers")
_RES_USAGE = re.compile(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)")
_TENSOR_PTR = re.compile(r"tensor<((?:\d+x)*)!tt\.ptr<(\w+)>>")
_SCALAR_PTR = re.compile(r":\s*!tt\.ptr<(\w+)>")
_BYTES = {"i1": 1, "i8": 1, "f16": 2, "bf16": 2, "f32": 4, "i32": 4, "f64": 8, "i64": 8}


def cubin_resources(cubin: bytes) -> dict:
    """REG, STACK, SHARED (static), LOCAL of the one kernel in a cubin, by cuobjdump -res-usage."""
    from triton import knobs

    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(cubin)
        path = f.name
    try:
        out = subprocess.run([knobs.nvidia.cuobjdump.path, "-res-usage", path], capture_output=True, text=True,
                             check=True).stdout
    finally:
        os.remove(path)
    m = _RES_USAGE.search(out)
    if m is None:
        raise RuntimeError(f"cuobjdump -res-usage printed no resource line:\n{out}")
    return dict(zip(("regs", "stack", "static_smem", "local"), map(int, m.groups())))


def loop_traffic(ttir: str, block_l: int, block_c: int) -> dict:
    """Global bytes loaded and stored per element of [B, L, C] inside the kernel's L loop (one tile of
    block_l x block_c per iteration, masked lanes counted), and per channel outside it (the carries)."""
    lines = [re.sub(r" loc\(.*$", "", line) for line in ttir.splitlines()]
    inside, loop_indent = False, None
    tile = {"load": 0, "store": 0}
    chunk = {"load": 0, "store": 0}
    for line in lines:
        indent = len(line) - len(line.lstrip())
        if "scf.for" in line and loop_indent is None:
            loop_indent, inside = indent, True
            continue
        if inside and loop_indent is not None and indent <= loop_indent and line.strip().startswith("}"):
            inside = False
            continue
        op = "load" if " tt.load " in line else "store" if line.strip().startswith("tt.store ") else None
        if op is None:
            continue
        m = _TENSOR_PTR.search(line.rsplit(" : ", 1)[-1])
        if m:
            numel = 1
            for d in filter(None, m.group(1).split("x")):
                numel *= int(d)
            nbytes = numel * _BYTES[m.group(2)]
        else:
            scalar = _SCALAR_PTR.search(line)
            assert scalar is not None, f"no pointer type in {line!r}"
            nbytes = _BYTES[scalar.group(1)]
        (tile if inside else chunk)[op] += nbytes
    per_elt = block_l * block_c
    return dict(read_per_elt=tile["load"] / per_elt, write_per_elt=tile["store"] / per_elt,
                carry_per_channel=(chunk["load"] + chunk["store"]) / block_c)


def compile_spec(spec: dict) -> dict:
    """Compile one recorded launch for sm_90; returns spec plus ok, error and the measured resources."""
    import triton
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from suite.attention.ea import triton_kernels

    fn = getattr(triton_kernels, spec["kernel"])
    knobs.compilation.always_compile = True  # ptxas must run to report spills
    knobs.nvidia.dump_ptxas_log = True
    out = {k: v for k, v in spec.items() if k not in ("signature", "constexprs", "attrs", "options")}
    log = io.StringIO()
    try:
        with contextlib.redirect_stdout(log):
            compiled = triton.compile(ASTSource(fn=fn, signature=spec["signature"], constexprs=spec["constexprs"],
                                                attrs=spec["attrs"]),
                                      target=GPUTarget(*HOPPER), options=spec["options"])
        ptx, cubin = compiled.asm.get("ptx", ""), compiled.asm.get("cubin", b"")
        if ".target sm_90" not in ptx or not cubin:
            raise RuntimeError("no sm_90 PTX or empty cubin")
        res = cubin_resources(cubin)
        ptxas = log.getvalue()
        stack = _PTXAS_STACK.search(ptxas)
        regs_log = _PTXAS_REGS.search(ptxas)
        if stack is None or regs_log is None:
            raise RuntimeError(f"no ptxas -v report captured:\n{ptxas[-2000:]}")
        if int(regs_log.group(1)) != res["regs"]:
            raise RuntimeError(f"ptxas says {regs_log.group(1)} registers, the cubin {res['regs']}")
        smem = res["static_smem"] + compiled.metadata.shared
        occ = occupancy_sm90(res["regs"], spec["num_warps"], smem)
        out.update(ok=True, error="", regs=res["regs"], stack=res["stack"], local=res["local"],
                   spill_stores=int(stack.group(2)), spill_loads=int(stack.group(3)),
                   static_smem=res["static_smem"], dynamic_smem=compiled.metadata.shared, smem=smem,
                   cubin_bytes=len(cubin), ptx_bytes=len(ptx), **occ,
                   **loop_traffic(compiled.asm["ttir"], spec["block_l"], spec["block_c"]))
    except Exception as err:  # report every failure, not just the first
        out.update(ok=False, error=f"{type(err).__name__}: {err}"[:2000])
    return out


def passes(r: dict) -> bool:
    """The acceptance rule: compiled, no spill, and at least MIN_OCCUPANCY theoretical occupancy on sm_90."""
    return bool(r["ok"]) and r["spill_stores"] == 0 and r["spill_loads"] == 0 and r["stack"] == 0 \
        and r["local"] == 0 and r["occupancy"] >= MIN_OCCUPANCY


def profile(dims=LAUNCH_DIMS, orders=LAUNCH_ORDERS, dtypes=DTYPES, generic: bool = False,
            jobs: int | None = None) -> list[dict]:
    specs = launch_specs(dims, orders, dtypes, generic)
    with ProcessPoolExecutor(max_workers=max(1, jobs or os.cpu_count() or 1)) as pool:
        return list(pool.map(compile_spec, specs))


# -- reports ---------------------------------------------------------------------------------------------

COLUMNS = ("kernel", "dtype", "t", "D", "BLOCK_L x BLOCK_C", "warps", "regs", "spill st/ld B", "stack B", "smem B",
           "blocks/SM", "occupancy", "cubin KB", "B/elt read", "B/elt write", "carry B/ch/chunk")


def table_rows(results: list[dict]) -> list[list[str]]:
    rows = []
    for r in results:
        if not r["ok"]:
            rows.append([r["variant"], r["dtype"], str(r["order"]), ",".join(map(str, r["dims"]))]
                        + ["FAIL: " + r["error"].splitlines()[0]] + [""] * (len(COLUMNS) - 5))
            continue
        rows.append([r["variant"], r["dtype"], str(r["order"]), ",".join(map(str, r["dims"])),
                     f"{r['block_l']} x {r['block_c']}", str(r["num_warps"]), str(r["regs"]),
                     f"{r['spill_stores']}/{r['spill_loads']}", str(r["stack"]), str(r["smem"]),
                     str(r["blocks_per_sm"]), f"{r['occupancy']:.1%}", f"{r['cubin_bytes'] / 1024:.0f}",
                     f"{r['read_per_elt']:.2f}", f"{r['write_per_elt']:.2f}", f"{r['carry_per_channel']:.0f}"])
    return rows


def markdown(results: list[dict], command: str) -> str:
    ok = sum(passes(r) for r in results)
    dims = ", ".join(map(str, sorted({d for r in results for d in r["dims"]})))
    orders = ", ".join(map(str, sorted({r["order"] for r in results})))
    dtypes = ", ".join(sorted({r["dtype"] for r in results}))
    how = "unspecialised" if results and results[0].get("generic") else "specialised as Triton's JIT does"
    import triton

    head = ["# Static sm_90 profile of the EA Triton kernels", "",
            f"Produced by `{command}` with Triton {triton.__version__} (no GPU: Triton compiles for sm_90 on the "
            "CPU).", "",
            f"Every distinct binary the launcher launches for D in {{{dims}}}, t in {{{orders}}} and {dtypes},"
            f" recorded on a [B={SHAPE_B}, L={SHAPE_L}, H*D={SHAPE_C}] launch with an H100's {H100_SMS} SMs"
            f" ({how}); D lists the head dims that launch the same binary.",
            "Registers and the spill stack from `cuobjdump -res-usage` on the cubin, spill stores/loads from"
            " `ptxas -v`; occupancy = active warps / 64 on an H100 (registers, warps, blocks and shared memory,"
            " as NVIDIA's occupancy calculator computes them for compute capability 9.0); B/elt = global bytes"
            " loaded/stored in the L loop per element of [B, L, H, D] (from the TTIR); carry = bytes per channel"
            " per L chunk outside the loop.", "",
            f"{ok} of {len(results)} binaries pass (no spill, occupancy >= {MIN_OCCUPANCY:.0%}).", ""]
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(results)]
    return "\n".join(head + lines) + "\n"


def write_reports(results: list[dict], out: str | os.PathLike, name: str, command: str) -> None:
    """``out/NAME.md`` (the table) and ``out/NAME.json`` (the command, the Triton version and every result)."""
    import triton

    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, name + ".md"), "w") as f:
        f.write(markdown(results, command))
    with open(os.path.join(out, name + ".json"), "w") as f:
        json.dump(dict(command=command, triton=triton.__version__, results=results), f, indent=1)
        f.write("\n")


def status_line(r: dict) -> str:
    """One binary's verdict: ok or FAIL with its registers, spills and occupancy."""
    status = "ok  " if passes(r) else "FAIL"
    return (f"{status} {r['variant']:<26} {r['dtype']:<5} t={r['order']} BLOCK_L={r['block_l']} regs={r.get('regs')} "
            f"spills={r.get('spill_stores')} occupancy={r.get('occupancy', 0):.0%} {r['error']}")

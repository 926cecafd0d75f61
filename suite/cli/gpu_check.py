"""``run_suite.py gpu-check``: a first GPU window in one command. Checks EA's kernels against the fp64 reference,
times EA against SDPA (flash and cuDNN), fla and mamba from L = 1k to 64k (bf16), decodes at 64k against a KV
cache, measures the copy bandwidth, sweeps EA's launch settings and says which targets are met, missed or invalid.

The most important rows run first (environment, an EA screen on the headline shapes, the headline timings), and
every row is appended to OUT/<card>/gpu_check.jsonl and the report (README.md, checks.csv, timings.csv,
targets.csv) re-rendered as soon as it completes: a kill, a timeout or a crash leaves a labelled partial report.
Rows run in a worker process; a crashed or hung worker, or a lost CUDA context, costs one row. Before it starts,
gpu-check prints its estimate for the card it sees (--plan prints the plan and stops) and refuses a plan over
--budget. Without CUDA it refuses in one line; --tiny --device cpu runs the same rows on tiny shapes (what the
tests do, so the command cannot rot)."""
from __future__ import annotations

import argparse
import importlib.util
import shlex
import sys
import time
from pathlib import Path

from suite.cli.options import positive_float
from suite.errors import UsageError

DEFAULT_BUDGET_S = 480.0


def add_parsers(sub) -> None:
    p = sub.add_parser("gpu-check", help="one command for a GPU: kernel checks, baselines, timings, targets",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("results/gpu"), metavar="DIR",
                   help="where OUT/<card>/ is written (default: results/gpu)")
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu with --tiny")
    p.add_argument("--tiny", action="store_true", help="tiny shapes (seconds); the only way to run it on a CPU")
    p.add_argument("--budget", type=lambda t: positive_float(t, "a positive number of seconds"), metavar="S",
                   default=None, help=f"seconds after which no new row starts (default: {DEFAULT_BUDGET_S:.0f}); a "
                                      "plan estimated over it is refused")
    p.add_argument("--plan", action="store_true", help="print the plan and its estimate, run nothing")
    p.add_argument("--card", metavar="NAME", help="with --plan: estimate for this card (e.g. 'H100', 'H200') "
                                                  "instead of the one present")
    p.add_argument("--resume", action="store_true",
                   help="keep the measured rows of the last gpu-check in OUT/<card>/ and run the rest")
    p.set_defaults(func=run)


def _device_and_card(args: argparse.Namespace) -> tuple[str, str]:
    device = str(args.device)
    if device == "cpu":
        if not args.tiny:
            raise UsageError("gpu-check on a CPU runs only with --tiny (its GPU shapes would take hours here)")
        return device, "cpu"
    if device != "cuda" and not (device.startswith("cuda:") and device[5:].isdigit()):
        raise UsageError(f"--device must be cuda, cuda:N or cpu, got {device!r}")
    if args.plan and args.card:
        return device, args.card
    import torch

    if not torch.cuda.is_available():
        if args.plan:
            raise UsageError("gpu-check --plan without CUDA needs --card NAME (e.g. --card H100) to estimate for")
        raise UsageError("gpu-check needs CUDA and torch sees none (torch.cuda.is_available() is False); "
                         "use --tiny --device cpu to run its rows on tiny CPU shapes")
    index = int(device[5:]) if ":" in device else torch.cuda.current_device()
    if index >= torch.cuda.device_count():
        raise UsageError(f"--device {device}: torch sees {torch.cuda.device_count()} CUDA device(s)")
    return f"cuda:{index}", torch.cuda.get_device_name(index)


def run(args: argparse.Namespace) -> int:
    from suite import gpu_check
    from suite.gpu_check import plan as plan_mod
    from suite.gpu_check import runner

    if args.card and not args.plan:
        raise UsageError("--card applies to --plan only (a run measures the card it has)")
    device, card_name = _device_and_card(args)
    device_kind = "cuda" if device.startswith("cuda") else "cpu"
    shapes = gpu_check.TINY if args.tiny else gpu_check.Shapes()
    card = plan_mod.card_for(card_name if device_kind == "cuda" else "cpu")
    importable = {m: importlib.util.find_spec(m) is not None for m in ("fla", "mamba_ssm")}
    backend = gpu_check.ea_backend(device)
    plan = gpu_check.plan_rows(shapes, device_kind, card, importable, backend)
    estimate = gpu_check.total_estimate(plan)
    budget = args.budget if args.budget is not None else DEFAULT_BUDGET_S
    print(f"gpu-check plan for {card_name} (cost model: {card.name}, {card.mem_gb_s:.0f} GB/s, "
          f"{card.bf16_tflops:.0f} TFLOP/s bf16): {len(plan)} rows, estimated {plan_mod.format_duration(estimate)}, "
          f"budget {plan_mod.format_duration(budget)}")
    for step, (n, seconds) in plan_mod.estimate_by_step(plan).items():
        print(f"  {step:16s} {n:4d} rows  {plan_mod.format_duration(seconds):>7s}")
    print("baselines importable here: " + ", ".join(f"{m} {'yes' if ok else 'no'}" for m, ok in importable.items()))
    if args.plan:
        return 0
    if estimate > budget:
        raise UsageError(f"the plan is estimated at {plan_mod.format_duration(estimate)}, over the budget of "
                         f"{plan_mod.format_duration(budget)}; pass --budget {int(estimate * 1.2)} to run it anyway")
    from suite.run.pool.rundir import ensure_out_dir

    ensure_out_dir(args.out, subdirs=())
    try:
        folder, previous, note = runner.prepare_folder(args.out, gpu_check.card_slug(card_name), args.resume)
    except OSError as err:
        raise UsageError(f"--out {args.out}: cannot write there ({err.strerror or err})") from None
    if note:
        print(note)
    command = "python run_suite.py " + shlex.join(sys.argv[1:] if sys.argv[1:2] == ["gpu-check"] else _argv(args))
    header = {"command": command, "card": card_name, "cost_card": card.name, "device": device,
              "device_kind": device_kind, "ea_backend": backend, "shapes": shapes.to_dict(),
              "plan": [{"id": r.id, "step": r.step, "estimate_s": r.estimate_s} for r in plan],
              "estimate_s": round(estimate, 1), "importable": importable,
              "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    result = runner.run_plan(plan, folder, header, device, shapes, backend, budget, previous=previous,
                             worker_start_s=max(60.0, 3 * card.worker_start_s))
    env = result.rows.get("environment", {})
    print("baselines imported by the worker: " + ", ".join(f"{m} {env.get(m, 'unknown')}" for m in ("fla",
                                                                                                    "mamba_ssm")))
    print(f"gpu-check on {card_name}: {result.status}; {folder}/README.md")
    for row in gpu_check.evaluate_targets(result.rows, shapes, device_kind):
        print(f"  {row['status']:12s} {row['rule']}  [{row['detail']}]")
    if result.exit_code is not None:
        return result.exit_code
    failed = [r for r in result.rows.values() if r.get("step") in ("screen", "checks", "baseline_checks")
              and str(r.get("status", "")).startswith(("FAIL", "error"))]
    if failed:
        print(f"{len(failed)} check(s) failed: " + "; ".join(f"{r['id']}: {r['status']}" for r in failed[:5]),
              file=sys.stderr)
        return 1
    return 0


def _argv(args: argparse.Namespace) -> list[str]:
    """The options as given, for the report's exact command when called as a function."""
    out = ["gpu-check", "--out", str(args.out), "--device", str(args.device)]
    if args.budget is not None:
        out += ["--budget", str(args.budget)]
    return out + (["--tiny"] if args.tiny else []) + (["--resume"] if args.resume else [])

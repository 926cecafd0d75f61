"""``run_suite.py gpu-check``: check EA's kernels and the GPU baselines against their references, time them against
SDPA-flash, fla and mamba from L = 1k to 64k (bf16), measure the card's copy bandwidth, and say which targets are
met. Writes OUT/<card>/{README.md, gpu_check.json, checks.csv, timings.csv}; made to finish in under 8 minutes
on an H100. Without CUDA it refuses in one line; ``--tiny --device cpu`` runs the same steps on tiny shapes
(what the tests do, so the script cannot rot)."""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from suite.errors import UsageError


def add_parser(sub) -> None:
    p = sub.add_parser("gpu-check", help="one command for a GPU: kernel checks, baselines, timings, targets",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("results/gpu"), metavar="DIR",
                   help="where OUT/<card>/ is written (default: results/gpu)")
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu with --tiny")
    p.add_argument("--tiny", action="store_true", help="tiny shapes (seconds); the only way to run it on a CPU")
    p.add_argument("--budget", type=float, default=450.0, metavar="S",
                   help="seconds after which the remaining rows are recorded as skipped (default: 450)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from suite.harness import gpu_check

    device = str(args.device)
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError("gpu-check needs CUDA and torch sees none (torch.cuda.is_available() is False); "
                             "use --tiny --device cpu to run its steps on tiny CPU shapes")
    elif device == "cpu":
        if not args.tiny:
            raise UsageError("gpu-check on a CPU runs only with --tiny (its GPU shapes would take hours here)")
    else:
        raise UsageError(f"--device must be cuda, cuda:N or cpu, got {device!r}")
    if args.budget <= 0:
        raise UsageError(f"--budget must be positive seconds, got {args.budget}")
    shapes = gpu_check.TINY if args.tiny else gpu_check.Shapes()
    command = "python run_suite.py " + shlex.join(sys.argv[1:] if sys.argv[1:2] == ["gpu-check"] else
                                                  ["gpu-check"] + [a for a in _argv(args)])
    report = gpu_check.run_gpu_check(device, shapes, command, budget_s=args.budget)
    folder = gpu_check.write_report(report, args.out)
    targets = report.steps.get("targets", [])
    print(f"gpu-check on {report.environment.get('card')}: {folder}/README.md")
    for row in targets:
        print(f"  {row['status']:12s} {row['rule']}  [{row['detail']}]")
    failed = [r for step in ("ea_checks", "baseline_checks") for r in report.steps.get(step, [])
              if r["status"] == "FAIL" or r["status"].startswith("error")]
    if failed:
        print(f"{len(failed)} check(s) failed: " + "; ".join(f"{r['what']} L={r['L']} {r['dtype']}: {r['status']}"
                                                           for r in failed[:5]), file=sys.stderr)
        return 1
    return 0


def _argv(args: argparse.Namespace) -> list[str]:
    """The options as given, for the report's exact command when called as a function."""
    out = ["--out", str(args.out), "--device", str(args.device), "--budget", str(args.budget)]
    return out + (["--tiny"] if args.tiny else [])

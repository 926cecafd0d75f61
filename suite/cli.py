"""``run_suite.py``: argument parsing and dispatch. User errors print one line and exit 2."""
from __future__ import annotations

import argparse
import sys

from suite.errors import UsageError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own usage errors: one line, exit 2
        raise UsageError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="run_suite.py", description="Element-wise attention benchmark suite.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    from suite.harness import bench

    p = sub.add_parser("bench", help="time attentions against sequence length (fwd, fwd+bwd, decode)",
                       description=bench.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    bench.add_bench_arguments(p)
    p.set_defaults(func=bench.run_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return int(args.func(args) or 0)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130

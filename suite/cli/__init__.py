"""``run_suite.py`` / ``ea-suite``: argument parsing and dispatch. User errors print one line and exit 2.

Subcommands: ``list``, ``run``, ``probe``, ``suite`` (``cli.run``), ``compare``, ``report``, ``regenerate``
(``cli.results``), ``bench`` (``cli.bench``), ``data generate`` (``cli.data``), ``gpu-check`` (``cli.gpu_check``),
``hopper-profile``, ``approx``, ``eval-checkpoint`` (``cli.tools``). Every module registers its commands the same
way: ``add_parsers(sub)``.

Exit codes: 0 every job ok; 1 some job failed (oom, diverged, timeout, error) or the run stopped because a
record could not be written; 2 bad usage (unknown task or attention, bad option, bad task file, missing data,
an unusable --out); 130 interrupted by Ctrl-C, 143 by SIGTERM, 129 by SIGHUP (every finished job recorded).
"""
from __future__ import annotations

import argparse
import sys

from suite.cli import bench, data, gpu_check, results, run, tools
from suite.cli.options import Parser
from suite.errors import UsageError


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="run_suite.py", description="Element-wise attention benchmark suite.",
                    epilog="exit codes: 0 all jobs ok, 1 some job failed, 2 bad usage, 130/143/129 interrupted by "
                           "Ctrl-C/SIGTERM/SIGHUP")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for module in (run, results, bench, data, gpu_check, tools):
        module.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return int(args.func(args) or 0)
    except UsageError as err:
        print("error: " + " ".join(str(err).split()), file=sys.stderr)  # one line, whatever the message
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def console_main() -> None:
    """The ``ea-suite`` console command."""
    sys.exit(main())

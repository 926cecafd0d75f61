"""``run_suite.py data generate``: write the synthetic LRA data sets (ListOps, Pathfinder) in the layout the real
loaders read."""
from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from suite.cli.options import Parser
from suite.errors import UsageError


def generate(args: argparse.Namespace) -> int:
    options = {k: v for k, v in vars(args).items() if k in args.generator_options and v is not None}
    args.out.mkdir(parents=True, exist_ok=True)
    generate: Callable[..., dict[str, Any]]
    if args.dataset == "lra-listops":
        from suite.data.lra.listops import generate_listops as generate
    else:
        from suite.data.lra.pathfinder_gen import generate_pathfinder as generate
    try:
        result = generate(args.out, **options)
    except ValueError as err:
        raise UsageError(f"data generate {args.dataset}: {err}") from None
    print(f"{args.dataset}: wrote {args.out}")
    for key, value in result.items():
        print(f"  {key}: {value}")
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser("data", help="generate the synthetic LRA data sets (ListOps, Pathfinder)",
                       description="Generate the synthetic LRA data sets in the layout the real loaders read.")
    data_sub = p.add_subparsers(dest="data_command", metavar="ACTION", parser_class=Parser)
    data_sub.required = True
    gen = data_sub.add_parser("generate", help="write a data set to --out",
                              description="Write a synthetic LRA data set to --out (put it under --data-root to use "
                                          "it).")
    datasets = gen.add_subparsers(dest="dataset", metavar="DATASET", parser_class=Parser)
    datasets.required = True

    listops = datasets.add_parser("lra-listops",
                                  help="ListOps TSVs ({basic}_{train,val,test}.tsv) as LRA generates them",
                                  description="ListOps as LRA generates it: basic_{train,val,test}.tsv in --out.")
    listops.add_argument("--out", type=Path, required=True, metavar="DIR",
                         help="output directory (e.g. DATA/lra/listops-1000)")
    listops.add_argument("--num-train", type=int, help="training examples (default: LRA's 96000)")
    listops.add_argument("--num-val", type=int, help="validation examples (default: LRA's 2000)")
    listops.add_argument("--num-test", type=int, help="test examples (default: LRA's 2000)")
    listops.add_argument("--seed", type=int, help="random seed (default: 0)")
    listops.add_argument("--min-length", type=int, help="shortest sequence in tokens (default: LRA's 500)")
    listops.add_argument("--max-length", type=int, help="longest sequence in tokens (default: LRA's 2000)")
    listops.set_defaults(func=generate,
                         generator_options=("num_train", "num_val", "num_test", "seed", "min_length", "max_length"))

    pathfinder = datasets.add_parser("lra-pathfinder",
                                     help="Pathfinder images and metadata as the LRA generator draws them",
                                     description="Pathfinder: pathfinder{R}/curv_*/{imgs,metadata} under --out.")
    pathfinder.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory (e.g. DATA/lra)")
    pathfinder.add_argument("--resolution", type=int, help="image side in pixels (default: 32; Path-X uses 128)")
    pathfinder.add_argument("--contour-length", type=int,
                            help="paddles per contour: 6 easy, 9 intermediate, 14 hard (default: 14, as LRA)")
    pathfinder.add_argument("--num", type=int, help="number of images (default: LRA's 200000)")
    pathfinder.add_argument("--seed", type=int, help="random seed (default: 0)")
    pathfinder.set_defaults(func=generate, generator_options=("resolution", "contour_length", "num", "seed"))

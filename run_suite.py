#!/usr/bin/env python3
"""Command line of the EA benchmark suite: ``python run_suite.py --help``."""
import sys

from suite.cli import main

if __name__ == "__main__":
    sys.exit(main())

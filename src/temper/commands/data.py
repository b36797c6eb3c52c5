"""`temper data check FILE` / `temper data stats RUN_DIR`: placeholder until the data work lands."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

HELP = "check data files (row-level report) or show token statistics of a run's data"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["check", "stats"])
    parser.add_argument("target", nargs="+")


def run(args: argparse.Namespace, raw: Sequence[str]) -> int:
    raise NotImplementedError

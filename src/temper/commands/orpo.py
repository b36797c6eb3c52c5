"""`temper orpo ...`: ORPO, SFT plus an odds-ratio preference term, no reference model."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from temper.commands.dpo import add_arguments, run_verb

HELP = "ORPO on preference pairs (no reference model; --beta is lambda)"
ACCEPTS_OVERRIDES = True
__all__ = ["ACCEPTS_OVERRIDES", "HELP", "add_arguments", "run"]


def run(args: argparse.Namespace, raw: Sequence[str]) -> int:
    return run_verb("orpo", raw)

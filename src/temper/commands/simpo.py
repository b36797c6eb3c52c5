"""`temper simpo ...`: SimPO, length-normalised rewards with a target margin, no reference model."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from temper.commands.dpo import add_arguments, run_verb

HELP = "SimPO on preference pairs (--beta, --simpo-gamma; no reference model)"
ACCEPTS_OVERRIDES = True
__all__ = ["ACCEPTS_OVERRIDES", "HELP", "add_arguments", "run"]


def run(args: argparse.Namespace, raw: Sequence[str]) -> int:
    return run_verb("simpo", raw)

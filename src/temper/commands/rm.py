"""`temper rm ...`: a pairwise reward model (scalar head, Bradley-Terry loss); score with `temper rm-score`."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from temper.commands.dpo import add_arguments, run_verb

HELP = "train a reward model (scalar head) on preference pairs"
ACCEPTS_OVERRIDES = True
__all__ = ["ACCEPTS_OVERRIDES", "HELP", "add_arguments", "run"]


def run(args: argparse.Namespace, raw: Sequence[str]) -> int:
    return run_verb("rm", raw)

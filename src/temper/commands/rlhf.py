"""`temper rlhf --rlhf-type dpo|kto|orpo|simpo|cpo|rm ...`: the ms-swift spelling of the preference verbs."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from temper.commands.dpo import add_arguments, run_verb

HELP = "preference training with --rlhf-type dpo|kto|orpo|simpo|cpo|rm (ms-swift spelling)"
ACCEPTS_OVERRIDES = True
__all__ = ["ACCEPTS_OVERRIDES", "HELP", "add_arguments", "run"]


def run(args: argparse.Namespace, raw: Sequence[str]) -> int:
    return run_verb("rlhf", raw)

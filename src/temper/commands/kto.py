"""`temper kto ...`: KTO on unpaired completions labelled desirable/undesirable (kto_tag / label)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from temper.commands.dpo import add_arguments, run_verb

HELP = "KTO on rows labelled desirable or undesirable (--desirable-weight, --undesirable-weight)"
ACCEPTS_OVERRIDES = True
__all__ = ["ACCEPTS_OVERRIDES", "HELP", "add_arguments", "run"]


def run(args: argparse.Namespace, raw: Sequence[str]) -> int:
    return run_verb("kto", raw)

"""`temper eval MODEL [CONFIG.yaml] --eval-dataset NAME [--key value ...]`: benchmark a model or run dir."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from temper.config.base import add_help_arguments
from temper.evaluation.config import EvalConfig

HELP = (
    "evaluate a model or run dir: MCQ (general_mcq, ceval, cmmlu, mmlu), open QA (general_qa) or perplexity"
)
ACCEPTS_OVERRIDES = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "target",
        nargs="*",
        help="MODEL (alias, HF dir or hub id, .gguf, run or adapter dir) and/or CONFIG.yaml",
    )
    add_help_arguments(parser, EvalConfig)


def split_positionals(raw: Sequence[str]) -> tuple[str | None, list[str]]:
    """Leading bare arguments: a .yaml/.yml is the config file, anything else the model (`--model X`)."""
    items = list(raw)
    yaml_path: str | None = None
    extra: list[str] = []
    while items and not items[0].startswith("-") and "=" not in items[0]:
        head = items.pop(0)
        if head.endswith((".yaml", ".yml")):
            yaml_path = head
        else:
            extra = ["--model", head]
    return yaml_path, extra + items


def run(args: argparse.Namespace, raw: Sequence[str]) -> int:
    from temper.evaluation.api import evaluate

    yaml_path, overrides = split_positionals(raw)
    cfg = EvalConfig.from_sources(yaml_path, overrides)
    # Peer keys read but unused (`ignored: eval_backend (...)`), printed as training prints them.
    for note in cfg.notes:
        print(note, file=sys.stderr)
    evaluate(cfg)
    return 0

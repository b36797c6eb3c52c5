"""`temper chat MODEL [--query TEXT]`: placeholder until the inference engine lands."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

HELP = "chat with a model or run dir (interactive REPL, or --query to answer once)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="bundled alias, HF dir, .gguf file or run dir")
    parser.add_argument("--query", help="answer this one message and exit")


def run(args: argparse.Namespace, raw: Sequence[str]) -> int:
    raise NotImplementedError

"""`temper repro list | NAME [--quick] [--output-dir DIR]`: re-run a classic experiment and write its report."""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Sequence

from temper.repro import REPRO

HELP = (
    "reproduce classic NLP experiments (BERT on MRPC, word similarity, encoder speed) with a paper comparison"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", choices=["list", *REPRO], help="a recipe name, or list")
    parser.add_argument(
        "--quick", action="store_true", help="reduced form for CI (a smoke test, not a result)"
    )
    parser.add_argument(
        "--output-dir", default=None, help="where report.md / report.json go (default: reports/NAME)"
    )
    parser.add_argument("--model", default=None, help="override the encoder (default: minilm-l6)")
    parser.add_argument("--data-dir", default=None, help="data folder (default: ../shared/data)")


def run(args: argparse.Namespace, raw: Sequence[str]) -> int:
    from temper.repro import get

    if args.recipe == "list":
        width = max(map(len, REPRO))
        for name, (desc, _) in REPRO.items():
            print(f"{name:<{width}}  {desc}")
        return 0
    module = get(args.recipe)
    accepted = inspect.signature(module.run).parameters
    kwargs = {"quick": args.quick}
    if args.model and "model" in accepted:
        kwargs["model"] = args.model
    if args.data_dir and "data_dir" in accepted:
        kwargs["data_dir"] = args.data_dir
    out = args.output_dir or f"reports/{args.recipe}"
    report = module.run(out, **kwargs)
    for row in report.rows:
        paper = "" if row["paper"] is None else f"  paper {row['paper']} ({row['source']})"
        print(f"{row['metric']}: ours {row['ours']}{paper}")
    print(f"report: {out}/report.md")
    return 0

"""`temper data check FILE...` (row-level report) and `temper data stats RUN_DIR_OR_CONFIG` (token statistics).

`check` also takes the training verbs' spelling, `--dataset-dir DIR --dataset NAME[,NAME]`, so that a command
copied from a hint or a training line works as it is.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

HELP = "check data files (row-level report) or show token statistics of a run's data"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "action",
        choices=["check", "stats"],
        help="check: validate files; stats: lengths/padding of a run's data",
    )
    target = parser.add_argument(
        "target",
        nargs="+",
        default=[],
        help="check: data files or dataset_info names; stats: a run dir or YAML",
    )
    # Optional, as `check --dataset NAME` names them without it. Not nargs="*": argparse would then match it
    # (empty) together with `action`, and a file given after an option (`check --dataset-dir D NAME`) would be
    # an unrecognized argument.
    target.required = False
    parser.add_argument(
        "--dataset",
        action="append",
        default=[],
        metavar="NAME",
        help="check: more data files or dataset_info names (comma lists too), as the training verbs take them",
    )
    parser.add_argument(
        "--format",
        default="auto",
        help="row format for check (default: auto-detect, SFT, preference pairs or KTO rows); `preference`/`kto` "
        "(or one of their specific formats) forces DPO/KTO checking",
    )
    parser.add_argument("--dataset-dir", default=None, help="a LLaMA-Factory data dir with dataset_info.json")
    parser.add_argument("--batch-size", type=int, default=None, help="stats: batch size (default: the run's)")


def run(args: argparse.Namespace, raw: Sequence[str]) -> int:
    from temper.errors import DataError

    if args.action == "stats":
        from temper.data.stats import data_stats, print_stats

        if not args.target:
            raise DataError("data stats needs a run dir or a YAML config.", hint="temper data stats RUN_DIR")
        print_stats(data_stats(args.target[0], batch_size=args.batch_size))
        return 0
    from temper.data.load import load_datasets

    try:
        loaded = load_datasets(
            [*args.target, *args.dataset],
            dataset_dir=args.dataset_dir,
            format=args.format,
            converters=_registry(args.format),
        )
    except DataError as e:
        # The whole report, not the CLI's 50-line cut: `check` exists to list every problem.
        if not e.problems:
            print(f"error: {e}", file=sys.stderr)
            return 1
        head = e.message.split("\n", 1)[0]  # DataError.message already embeds the first 50 problems
        print(f"error: {head}", file=sys.stderr)
        for p in e.problems:
            print(f"  {p}", file=sys.stderr)
        if e.hint:
            print(f"  hint: {e.hint}", file=sys.stderr)
        return 1
    for item in loaded:
        print(f"{item.source.path}: {item.n_rows} rows, format {item.format}, ok")
    return 0


def _registry(fmt: str) -> dict[str, Any]:
    """SFT formats, plus the preference/KTO registries when --format names one of them.

    With --format auto, the preference and KTO dispatchers come first and detect rows by their keys
    (pref_formats.preference_task: chosen/rejected, kto_tag, ...), so `temper data check dpo_en_demo.json`
    checks pairs as pairs; dataset_info `ranking`/`kto_tag` entries name them directly.
    """
    from dataclasses import replace

    from temper.data.formats import FORMATS
    from temper.data.pref_formats import KTO_FORMATS, PREFERENCE_FORMATS, preference_task

    for registry in (PREFERENCE_FORMATS, KTO_FORMATS):
        if fmt in registry and fmt not in FORMATS:
            return dict(registry)
    return {
        "preference": replace(
            PREFERENCE_FORMATS["preference"], detect=lambda r: preference_task(r) == "preference"
        ),
        "kto": replace(KTO_FORMATS["kto"], detect=lambda r: preference_task(r) == "kto"),
        **FORMATS,
    }

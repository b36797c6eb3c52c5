"""`temper classify [CONFIG.yaml] [--key value ...]`: fine-tune a sequence classifier into a run directory."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from temper.config.base import add_help_arguments
from temper.config.encoder import ClassifyConfig

HELP = "sequence classification (single texts or pairs, any labels or regression; multi-task with 2+ --task)"
ACCEPTS_OVERRIDES = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", help="YAML config file; flags override its keys")
    add_help_arguments(parser, ClassifyConfig)


def run(args: argparse.Namespace, raw: Sequence[str]) -> int:
    from temper.commands.sft import split_config_arg
    from temper.recipes.classify import train_classifier

    yaml_path, overrides = split_config_arg(raw)
    result = train_classifier(ClassifyConfig.from_sources(yaml_path, overrides))
    print(f"run dir: {result.run_dir} ({result.seconds:.0f} s)")
    return 0

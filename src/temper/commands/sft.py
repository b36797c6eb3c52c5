"""`temper sft [CONFIG.yaml] [--key value ...]`: supervised fine-tuning into a run directory."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from temper.config import SFTConfig
from temper.config.base import add_help_arguments

HELP = "supervised fine-tuning (LoRA, freeze or full) from data files into a run directory"
ACCEPTS_OVERRIDES = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", help="YAML config file; flags override its keys")
    add_help_arguments(parser, SFTConfig)


def split_config_arg(raw: Sequence[str]) -> tuple[str | None, list[str]]:
    """The first bare argument ending in .yaml/.yml is the config file; everything else is an override."""
    items = list(raw)
    if items and not items[0].startswith("-") and items[0].endswith((".yaml", ".yml")):
        return items[0], items[1:]
    return None, items


def run(args: argparse.Namespace, raw: Sequence[str]) -> int:
    from temper.data.sources import resolve_sources
    from temper.training.launch import launch, needs_launch

    yaml_path, overrides = split_config_arg(raw)
    cfg = SFTConfig.from_sources(yaml_path, overrides)
    # Before the training stack is imported (~7 s: transformers, peft, accelerate) and before any launch: a
    # missing file or an unknown dataset name fails at once, and once, not per process. (No dataset at all is
    # the recipe's error, after the Trainer's option names, which need that import to be checked.)
    if cfg.data.dataset:
        resolve_sources([*cfg.data.dataset, *cfg.data.val_dataset], cfg.data.dataset_dir)
    if needs_launch(cfg.dist):
        return launch("sft", raw, cfg.dist, cfg.train.optim)
    from temper.recipes.sft import train_sft

    train_sft(cfg)
    return 0

"""`temper dpo [CONFIG.yaml] [--key value ...]`: Direct Preference Optimization (also IPO, hinge, RPO).

The other preference verbs (kto, orpo, simpo, rm, rlhf) are the same command with another objective, so
their modules call `run_verb` from here.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from temper.config.base import add_help_arguments
from temper.config.preference import PreferenceConfig

HELP = "DPO (--loss-type sigmoid|ipo|hinge, --rpo-alpha) on preference pairs into a run directory"
ACCEPTS_OVERRIDES = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", help="YAML config file; flags override its keys")
    add_help_arguments(parser, PreferenceConfig)


def run_verb(verb: str, raw: Sequence[str]) -> int:
    """Parse the config of `temper VERB` (VERB = rlhf reads --rlhf-type), launch or train."""
    from temper.commands.sft import split_config_arg
    from temper.training.launch import launch, needs_launch

    yaml_path, overrides = split_config_arg(raw)
    cfg = PreferenceConfig.for_verb(verb, yaml_path, overrides)
    if needs_launch(cfg.dist):
        return launch(verb, raw, cfg.dist, cfg.train.optim)
    from temper.recipes.preference import train_rlhf

    train_rlhf(cfg)
    return 0


def run(args: argparse.Namespace, raw: Sequence[str]) -> int:
    return run_verb("dpo", raw)

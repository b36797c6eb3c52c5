"""`temper embed [CONFIG.yaml] [--key value ...]`: train sentence embeddings into a run directory."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from temper.config.base import add_help_arguments
from temper.config.encoder import EmbedConfig

HELP = (
    "embedding training: labelled pairs (cosine loss) or anchor/positive pairs (InfoNCE, in-batch negatives)"
)
ACCEPTS_OVERRIDES = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", help="YAML config file; flags override its keys")
    add_help_arguments(parser, EmbedConfig)


def run(args: argparse.Namespace, raw: Sequence[str]) -> int:
    from temper.commands.sft import split_config_arg
    from temper.recipes.embed import train_embedder

    yaml_path, overrides = split_config_arg(raw)
    result = train_embedder(EmbedConfig.from_sources(yaml_path, overrides))
    print(f"run dir: {result.run_dir} ({result.seconds:.0f} s); embed with temper.models.heads.embed_texts")
    return 0

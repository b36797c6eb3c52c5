"""Typed configuration: small dataclasses per concern, YAML files plus `--key value` overrides."""

from temper.config.base import ALIASES, ComposedConfig
from temper.config.dist import DistCfg
from temper.config.sections import DEFAULT_MODEL, DataCfg, ModelCfg, SFTConfig, TrainCfg
from temper.config.tune import TuneCfg

__all__ = [
    "ALIASES",
    "DEFAULT_MODEL",
    "ComposedConfig",
    "DataCfg",
    "DistCfg",
    "ModelCfg",
    "SFTConfig",
    "TrainCfg",
    "TuneCfg",
]

"""PreferenceConfig: verbs, ms-swift's --rlhf-type, per-method defaults, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from temper.config.preference import PreferenceConfig
from temper.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_verb_defaults_and_rlhf_spelling() -> None:
    dpo = PreferenceConfig.for_verb("dpo", None, [])
    assert (dpo.pref.rlhf_type, dpo.pref.beta, dpo.train.output_dir) == ("dpo", 0.1, "runs/dpo")
    simpo = PreferenceConfig.for_verb("rlhf", None, ["--rlhf-type", "simpo", "--simpo-gamma", "1.0"])
    assert (simpo.pref.rlhf_type, simpo.pref.beta, simpo.pref.simpo_gamma) == ("simpo", 2.0, 1.0)
    assert simpo.train.output_dir == "runs/simpo"
    kto = PreferenceConfig.for_verb("kto", None, ["--desirable-weight", "1.33", "--output-dir", "x"])
    assert (kto.pref.desirable_weight, kto.train.output_dir) == (1.33, "x")


def test_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match="loss_type"):
        PreferenceConfig.for_verb("dpo", None, ["--loss-type", "sigmoidd"])
    with pytest.raises(ConfigError, match="rlhf_type"):
        PreferenceConfig.for_verb("kto", None, ["--rlhf-type", "dpo"])
    with pytest.raises(ConfigError, match="packing"):
        PreferenceConfig.for_verb("dpo", None, ["--packing"])
    with pytest.raises(ConfigError, match="format"):
        PreferenceConfig.for_verb("dpo", None, ["--format", "alpaca"])
    with pytest.raises(ConfigError, match="Did you mean `beta`"):
        PreferenceConfig.for_verb("dpo", None, ["--bta", "0.1"])


def test_example_config_parses() -> None:
    cfg = PreferenceConfig.for_verb("dpo", REPO / "configs" / "dpo_lora_demo.yaml", ["--max-steps", "2"])
    assert cfg.pref.beta == 0.1 and cfg.data.val_size == 40 and cfg.train.max_steps == 2

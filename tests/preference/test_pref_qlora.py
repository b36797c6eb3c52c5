"""Preference training on a 4-bit base (QLoRA), the verbs that refuse one, and the PiSSA start they all refuse."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_recipes import cfg_for

from temper.errors import ConfigError
from temper.recipes.preference import load_policy, train_rlhf
from temper.recipes.rm import train_rm

bnb = pytest.importorskip("bitsandbytes")


def test_dpo_trains_lora_over_a_4bit_base(tiny_llama_dir: Path, pairs_file: Path, tmp_path: Path) -> None:
    cfg = cfg_for("dpo", tiny_llama_dir, pairs_file, tmp_path / "dpo", "--lr", "5e-3", "--max-steps", "12",
                  "--quantization", "4bit")  # fmt: skip
    policy = load_policy(cfg)[0]
    assert sum(isinstance(m, bnb.nn.Linear4bit) for m in policy.modules()) == 2 * 7  # q..down of both layers
    result = train_rlhf(cfg)
    assert result.metrics["eval_rewards/accuracies"] > 0.6


def test_reward_models_refuse_a_quantized_base(
    tiny_llama_dir: Path, pairs_file: Path, tmp_path: Path
) -> None:
    cfg = cfg_for("rm", tiny_llama_dir, pairs_file, tmp_path / "rm", "--quantization", "4bit")
    with pytest.raises(ConfigError, match="reward models on unquantized weights"):
        train_rm(cfg)
    assert not (tmp_path / "rm" / "temper_run.json").exists()


@pytest.mark.parametrize("verb", ["dpo", "kto", "rm"])
def test_preference_verbs_refuse_a_pissa_start_before_writing_anything(
    verb: str, tiny_llama_dir: Path, pairs_file: Path, tmp_path: Path
) -> None:
    cfg = cfg_for(verb, tiny_llama_dir, pairs_file, tmp_path / verb, "--pissa-init")
    with pytest.raises(ConfigError, match="pissa_init: a PiSSA start moves the base weights"):
        train_rlhf(cfg)
    assert not (tmp_path / verb).exists()

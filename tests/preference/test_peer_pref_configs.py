"""LLaMA-Factory's DPO and KTO example YAMLs train under `temper dpo` / `temper kto` as they are: pref_beta,
pref_loss, pref_ftx and the kto_* weights read as temper's options."""

from __future__ import annotations

from pathlib import Path

import pytest

from temper.cli import main
from temper.config.preference import PreferenceConfig
from temper.errors import ConfigError
from temper.runs import read_manifest

# LLaMA-Factory's examples/train_lora/llama3_lora_dpo.yaml, key for key (model, data and output made local, and
# one step, bf16 off, for a CPU test).
LLAMAFACTORY_DPO = """\
model_name_or_path: {model}
trust_remote_code: true
stage: dpo
do_train: true
finetuning_type: lora
lora_rank: 8
lora_target: all
pref_beta: 0.1
pref_loss: sigmoid  # choices: [sigmoid (dpo), orpo, simpo]
dataset: dpo_en_demo
dataset_dir: {data}
template: chatml
cutoff_len: 256
max_samples: 8
overwrite_cache: true
preprocessing_num_workers: 16
output_dir: {out}
logging_steps: 10
save_steps: 500
plot_loss: true
overwrite_output_dir: true
per_device_train_batch_size: 1
gradient_accumulation_steps: 8
learning_rate: 5.0e-6
max_steps: 1
lr_scheduler_type: cosine
warmup_ratio: 0.1
bf16: false
ddp_timeout: 180000000
"""


def test_llamafactory_dpo_example_trains_under_temper_dpo(
    tiny_llama_dir: Path, shared_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "dpo"
    path = tmp_path / "llama3_lora_dpo.yaml"
    path.write_text(LLAMAFACTORY_DPO.format(model=tiny_llama_dir, data=shared_data / "llamafactory", out=out))
    cfg = PreferenceConfig.for_verb("dpo", path)
    assert (cfg.pref.beta, cfg.pref.loss_type, cfg.pref.rlhf_type) == (0.1, "sigmoid", "dpo")
    assert main(["dpo", str(path)]) == 0
    assert read_manifest(out)["result"]["global_step"] == 1


def test_llamafactory_preference_keys_translate() -> None:
    cfg = PreferenceConfig.for_verb("dpo", None, ["pref_loss=ipo", "pref_ftx=0.5", "dpo_label_smoothing=0.1"])
    assert (cfg.pref.loss_type, cfg.pref.rpo_alpha, cfg.pref.label_smoothing) == ("ipo", 0.5, 0.1)
    assert any(n.startswith("pref_ftx -> rpo_alpha") for n in cfg.notes)
    # LLaMA-Factory trains ORPO and SimPO as stage dpo with pref_loss: temper has a verb for each
    assert PreferenceConfig.for_verb("orpo", None, ["pref_loss=orpo"]).pref.rlhf_type == "orpo"
    assert PreferenceConfig.for_verb("rlhf", None, ["pref_loss=simpo"]).pref.rlhf_type == "simpo"
    with pytest.raises(ConfigError, match="pref_loss: orpo trains ORPO, and this is `temper dpo`") as err:
        PreferenceConfig.for_verb("dpo", None, ["pref_loss=orpo"])
    assert "temper orpo" in str(err.value.hint)
    with pytest.raises(ConfigError, match="pref_loss: got 'kto_pair'"):
        PreferenceConfig.for_verb("dpo", None, ["pref_loss=kto_pair"])
    kto = PreferenceConfig.for_verb(
        "kto", None, ["pref_beta=0.2", "kto_chosen_weight=2", "kto_rejected_weight=0.5"]
    )
    assert (kto.pref.beta, kto.pref.desirable_weight, kto.pref.undesirable_weight) == (0.2, 2.0, 0.5)
    # LLaMA-Factory's pure_bf16 (bf16 weights, no fp32 copy) is temper's dtype bf16
    assert PreferenceConfig.for_verb("dpo", None, ["pure_bf16=true"]).model.dtype == "bf16"

"""The bundled ZeRO presets pass DeepSpeed's own config validation after the Trainer fills their "auto" values.

No GPU is available here, so this is the check the presets get on CPU; they were not run on a GPU.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from temper.training.launch import DEEPSPEED_PRESETS, deepspeed_config

deepspeed = pytest.importorskip("deepspeed", reason="pip install --no-build-isolation deepspeed")


@pytest.mark.parametrize("name", DEEPSPEED_PRESETS)
def test_preset_is_a_valid_deepspeed_config(name: str) -> None:
    from deepspeed.runtime.config import DeepSpeedConfig
    from deepspeed.runtime.zero.config import DeepSpeedZeroConfig
    from transformers import TrainingArguments
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    cfg = deepspeed_config(name)
    zero = DeepSpeedZeroConfig(**cfg["zero_optimization"])  # pydantic: unknown keys and bad values fail
    assert int(zero.stage) == int(name[4])
    args = TrainingArguments(
        output_dir="unused",
        per_device_train_batch_size=2,
        gradient_accumulation_steps=4,
        bf16=True,
        use_cpu=True,
    )
    hf = HfTrainerDeepSpeedConfig(json.loads(json.dumps(cfg)))
    hf.trainer_config_process(args)
    model = SimpleNamespace(config=SimpleNamespace(hidden_size=576))  # SmolLM2's width fills the bucket sizes
    hf.trainer_config_finalize(args, model, num_training_steps=100)
    resolved = DeepSpeedConfig(hf.config)
    assert resolved.train_micro_batch_size_per_gpu == 2
    assert resolved.gradient_accumulation_steps == 4
    assert resolved.zero_optimization_stage == int(name[4])
    assert "auto" not in json.dumps(hf.config)

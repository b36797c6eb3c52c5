"""QLoRA: `--quantization 4bit` trains LoRA over a base held in bitsandbytes' NF4 (its CPU backend runs here),
and the run's adapter then serves on the full-precision base, as the peers' QLoRA adapters do."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from test_sft_recipe import make_cfg, write_rows
from transformers import TrainerCallback

from temper.config.encoder import ClassifyConfig
from temper.errors import ConfigError
from temper.models.load import load_causal_lm
from temper.recipes.sft import train_sft
from temper.runs import read_metrics

bnb = pytest.importorskip("bitsandbytes")


class LayersSeen(TrainerCallback):
    def __init__(self) -> None:
        self.n_4bit = self.n_lora = 0

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
        self.n_4bit = sum(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
        self.n_lora = sum(hasattr(m, "lora_A") for m in model.modules())


def test_sft_qlora_trains_lora_over_a_4bit_base(tiny_llama_dir: Path, tmp_path: Path) -> None:
    data = write_rows(tmp_path / "rows.jsonl")
    out = tmp_path / "qlora"
    seen = LayersSeen()
    train_sft(make_cfg(tiny_llama_dir, data, out, "--max-steps", "12", "--quantization", "4bit"), [seen])
    # every linear layer of the 2 decoder layers (q, k, v, o, gate, up, down) is 4-bit, under a LoRA layer
    assert seen.n_4bit == seen.n_lora == 2 * 7
    losses = [r["loss"] for r in read_metrics(out) if "loss" in r]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.3, losses
    assert all(
        v.abs().sum() > 0 for k, v in load_file(out / "adapter_model.safetensors").items() if "lora_B" in k
    )
    model, _ = load_causal_lm(str(out), dtype="fp32")
    assert not any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())  # served on the float base
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=torch.tensor([[1, 2, 3]])).logits).all()


def test_verbs_that_cannot_train_on_a_quantized_base_say_so() -> None:
    with pytest.raises(ConfigError, match="classify and embed train unquantized weights"):
        ClassifyConfig.from_sources(None, ["--quantization", "4bit"])

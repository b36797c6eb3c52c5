"""RoPE scaling (LLaMA-Factory's rope_scaling): past the model's context its rotary positions stretch by
ceil(max_length / positions), and the run keeps the setting for every later verb."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from temper.config import SFTConfig
from temper.config.encoder import ClassifyConfig
from temper.errors import ConfigError
from temper.models.load import load_causal_lm, resolve
from temper.models.rope import model_rope_overrides
from temper.recipes.sft import train_sft

sys.path.insert(0, str(Path(__file__).parents[1] / "recipes"))
from test_sft_recipe import make_cfg, write_rows  # noqa: E402


def test_linear_scaling_stretches_positions(tiny_llama_dir: Path) -> None:
    overrides, note = model_rope_overrides(tiny_llama_dir, "linear", 2048)  # the tiny llama has 1024
    assert overrides["rope_parameters"]["factor"] == 2.0 and overrides["max_position_embeddings"] == 2048
    assert note and "factor 2" in note
    ref = resolve(str(tiny_llama_dir))
    plain, _ = load_causal_lm(ref, dtype="fp32")
    import dataclasses

    scaled, _ = load_causal_lm(dataclasses.replace(ref, overrides=overrides), dtype="fp32")
    ids = torch.arange(5, 25).unsqueeze(0)
    with torch.no_grad():
        # linear: position p is read as p / 2, so even positions of the scaled model are the plain model's halves
        a = scaled(input_ids=ids, position_ids=2 * torch.arange(20).unsqueeze(0)).logits
        b = plain(input_ids=ids, position_ids=torch.arange(20).unsqueeze(0)).logits
        c = scaled(input_ids=ids, position_ids=torch.arange(20).unsqueeze(0)).logits
    assert torch.allclose(a, b, atol=1e-4)
    assert not torch.allclose(b, c, atol=1e-3)
    assert model_rope_overrides(tiny_llama_dir, "linear", 1024)[0] == {}  # within the context: nothing
    for kind in ("dynamic", "yarn", "llama3"):  # the others load, their original length recorded
        o, _ = model_rope_overrides(tiny_llama_dir, kind, 3000)
        assert o["rope_parameters"]["original_max_position_embeddings"] == 1024
        model, _ = load_causal_lm(dataclasses.replace(ref, overrides=o), dtype="fp32")
        assert (
            model.config.rope_parameters["rope_type"] == kind and model.config.max_position_embeddings == 3072
        )


def test_a_lora_run_keeps_its_scaling_for_later_verbs(tiny_llama_dir: Path, tmp_path: Path) -> None:
    data = write_rows(tmp_path / "rows.jsonl")
    common = ("--max-steps", "1", "--rope_scaling", "linear")
    train_sft(make_cfg(tiny_llama_dir, data, tmp_path / "lora", *common, "--max-length", "2048"))
    manifest = json.loads((tmp_path / "lora" / "temper_run.json").read_text())
    assert manifest["base_config_overrides"]["rope_parameters"]["factor"] == 2.0
    model, _ = load_causal_lm(str(tmp_path / "lora"), dtype="fp32")  # as chat / serve / eval load it
    assert (
        model.config.rope_parameters["rope_type"] == "linear" and model.config.max_position_embeddings == 2048
    )
    full = tmp_path / "full"
    train_sft(make_cfg(tiny_llama_dir, data, full, *common, "--max-length", "3000", "--tuning", "full"))
    assert json.loads((full / "config.json").read_text())["rope_parameters"]["factor"] == 3.0
    with pytest.raises(ConfigError, match="rope_scaling: got 'ntk'"):
        SFTConfig.from_dict({"rope_scaling": "ntk"})
    with pytest.raises(ConfigError, match="classify and embed train encoders"):
        ClassifyConfig.from_dict({"rope_scaling": "linear"})

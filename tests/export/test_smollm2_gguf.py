"""Slow: the bundled SmolLM2 with a LoRA adapter, merged and written as q8_0 GGUF, read back by transformers'
GGUF loader; greedy tokens on chat prompts must mostly match the merged HF model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from temper.export.gguf import export_gguf
from temper.export.merge import load_source
from temper.export.parity import compare_greedy

CHAT_PROMPTS = ["What is the capital of France?", "Who are you?", "Name three colors.", "What is 2 + 2?"]


@pytest.mark.slow
def test_smollm2_lora_q8_0_round_trip(smollm2_dir: Path, tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from temper.runs import write_manifest

    run = tmp_path / "run"
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32)
    # Seeded before peft draws lora_A: the merged model must not depend on which tests ran before.
    torch.manual_seed(0)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:  # a small nudge: the merged model must differ from the base, yet stay fluent
            p.data.normal_(0, 0.002)
    peft_model.save_pretrained(run)
    AutoTokenizer.from_pretrained(smollm2_dir).save_pretrained(run)
    write_manifest(run, kind="sft", base_model="smollm2-135m-instruct", weights="adapter")

    manifest = export_gguf(run, tmp_path / "gguf", "q8_0")
    assert manifest["max_abs_logit_diff"] < 1e-3 and manifest["gguf"]["tensor_types"]["Q8_0"] == 30 * 7 + 1
    src = load_source(run)
    gguf_model = AutoModelForCausalLM.from_pretrained(tmp_path / "gguf", gguf_file="model-q8_0.gguf").eval()
    tok = src.tokenizer
    prompts = [
        tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False)
        for p in CHAT_PROMPTS
    ]
    report = compare_greedy(src.model, gguf_model, tok, prompts, max_new_tokens=16)
    print("q8_0 greedy prefix match per prompt (of 16):", report["prefix_match"])
    assert sum(report["prefix_match"]) >= 0.6 * 16 * len(prompts), report
    assert report["identical_prompts"] >= 2, report

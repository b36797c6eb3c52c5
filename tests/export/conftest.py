"""Fixtures for export tests: a tiny llama with a tiny byte-level BPE tokenizer (GGUF round trips read every
token string back in Python, so a 49k vocabulary costs ~10 s per load; 400 tokens cost nothing) and run dirs
holding a perturbed LoRA / DoRA adapter so that merging changes the logits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Who are you? I am a small model trained by temper.",
    "Paris is the capital of France and Berlin is the capital of Germany.",
    "Numbers like 1, 2, 3 and 42 appear in text; so do questions, answers and lists.",
    "Export the model to GGUF, ONNX or int8 and check that the outputs still match.",
    "Hello world, how are you today? I am fine, thank you very much.",
]
PROMPTS = ["Hello world, how are you?", "The capital of France is", "Who are you?", "1, 2, 3 and"]


@pytest.fixture(scope="session")
def tiny_bpe_llama_dir(tmp_path_factory: pytest.TempPathFactory, smollm2_dir: Path) -> Path:
    """A 2-layer llama (hidden 64) with a 400-token byte-level BPE tokenizer and SmolLM2's ChatML template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out = tmp_path_factory.mktemp("tiny-bpe-llama")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(CORPUS * 20, trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token=specials[1],
        eos_token=specials[2],
        pad_token=specials[2],
        unk_token=specials[0],
    )
    tok.chat_template = AutoTokenizer.from_pretrained(smollm2_dir, local_files_only=True).chat_template
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        initializer_range=0.1,  # peaky logits: greedy decoding is not decided by rounding noise
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def make_run_dir(base_dir: Path, out: Path, use_dora: bool = False) -> Path:
    """A temper run dir with a LoRA (or DoRA) adapter whose weights are random, so it changes the logits."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from temper.runs import write_manifest

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    cfg = LoraConfig(
        r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False, use_dora=use_dora
    )
    torch.manual_seed(1)
    peft_model = get_peft_model(model, cfg)
    out.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(out)
    AutoTokenizer.from_pretrained(base_dir).save_pretrained(out)
    write_manifest(out, kind="sft", base_model=str(base_dir), weights="adapter")
    return out


@pytest.fixture(scope="session")
def lora_run(tmp_path_factory: pytest.TempPathFactory, tiny_bpe_llama_dir: Path) -> Path:
    return make_run_dir(tiny_bpe_llama_dir, tmp_path_factory.mktemp("runs") / "lora")


@pytest.fixture(scope="session")
def dora_run(tmp_path_factory: pytest.TempPathFactory, tiny_bpe_llama_dir: Path) -> Path:
    return make_run_dir(tiny_bpe_llama_dir, tmp_path_factory.mktemp("runs") / "dora", use_dora=True)


@pytest.fixture(scope="session")
def prompts() -> list[str]:
    return list(PROMPTS)

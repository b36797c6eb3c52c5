"""GGUF export: files load back through transformers' GGUF loader (and temper's resolve) with the same greedy
tokens, tokenizer and chat template; the Ollama Modelfile renders ChatML; unsupported inputs fail clearly."""

from __future__ import annotations

import re
from pathlib import Path

import gguf
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from temper.errors import TemperError
from temper.export.gguf import export_gguf, permute_qk, write_gguf
from temper.export.manifest import EXPORT_MANIFEST, read_export_manifest, verify_export
from temper.export.merge import load_source
from temper.export.parity import compare_greedy, max_logit_diff
from temper.models.load import load_causal_lm, resolve


def test_permutation_is_llama_cpp_interleave() -> None:
    w = torch.arange(8).reshape(8, 1).numpy()  # 2 heads x head_dim 4: halves [0,1 | 2,3] -> pairs (0,2),(1,3)
    assert permute_qk(w, 2).ravel().tolist() == [0, 2, 1, 3, 4, 6, 5, 7]


def test_f16_round_trip_through_temper_resolve(
    lora_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prompts: list[str]
) -> None:
    out = tmp_path / "gguf"
    manifest = export_gguf(lora_run, out, "f16")
    assert sorted(manifest["files"]) == ["Modelfile", "model-f16.gguf"] and verify_export(out) == []
    assert manifest["base_model"] and manifest["max_abs_logit_diff"] < 1e-4

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # keep the dequantized copy out of ~/.cache
    src = load_source(lora_run)
    ref = resolve(out / "model-f16.gguf")  # what `temper chat exports/x/model-f16.gguf` does
    model, tok = load_causal_lm(ref, dtype="fp32")
    report = compare_greedy(src.model, model, src.tokenizer, prompts, max_new_tokens=12)
    assert report["identical_prompts"] == len(prompts), report
    assert max_logit_diff(src.model, model, tok(prompts[0], return_tensors="pt").input_ids) < 5e-3
    for text in [*prompts, "<|im_start|>user\nHi<|im_end|>\n"]:
        assert tok(text).input_ids == src.tokenizer(text).input_ids
    assert tok.chat_template == src.tokenizer.chat_template
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<|im_start|>", "<|im_end|>", "<|im_end|>")


@pytest.mark.parametrize("qtype,max_diff", [("bf16", 0.05), ("q8_0", 0.1), ("q4_0", 3.0)])
def test_quantized_types_load_back(
    tiny_bpe_llama_dir: Path, tmp_path: Path, qtype: str, max_diff: float, prompts: list[str]
) -> None:
    src = load_source(tiny_bpe_llama_dir)
    path = tmp_path / f"m-{qtype}.gguf"
    info = write_gguf(src.model, src.tokenizer, path, qtype)
    assert info["tensor_types"]["F32"] == 5  # 2 x 2 layer norms + the final norm stay f32
    reader = gguf.GGUFReader(path)
    assert reader.fields["llama.context_length"].contents() == 512
    assert reader.fields["tokenizer.ggml.pre"].contents() == "gpt-2"
    model = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=path.name).eval()
    ids = src.tokenizer(prompts[0], return_tensors="pt").input_ids
    diff = max_logit_diff(src.model, model, ids)
    assert diff < max_diff
    report = compare_greedy(src.model, model, src.tokenizer, prompts, max_new_tokens=8)
    print(f"{qtype}: max logit diff {diff:.4f}, greedy prefix match {report['prefix_match']} of 8")
    if qtype != "q4_0":
        assert report["identical_prompts"] >= len(prompts) - 1, report


def render_go_chatml(template: str, messages: list[dict[str, str]]) -> str:
    """Expand the one construct our TEMPLATE uses ({{- range .Messages }}...{{ end }}) like Ollama would."""
    loop = re.fullmatch(r"\{\{- range \.Messages \}\}(.*)\{\{ end \}\}(.*)", template, flags=re.S)
    assert loop, template
    body, tail = loop.groups()
    turns = "".join(
        body.replace("{{ .Role }}", m["role"]).replace("{{ .Content }}", m["content"]) for m in messages
    )
    return turns + tail


def test_modelfile_is_chatml_with_stops_and_system(lora_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "g"
    export_gguf(lora_run, out, "q8_0")
    text = (out / "Modelfile").read_text()
    assert text.startswith("FROM ./model-q8_0.gguf\n")
    assert 'PARAMETER stop "<|im_end|>"' in text and 'PARAMETER stop "<|im_start|>"' in text
    system = re.search(r'SYSTEM """(.*?)"""', text, flags=re.S)
    assert system and "SmolLM" in system.group(1)  # SmolLM2's template inserts this when none is given
    template = re.search(r'TEMPLATE """(.*?)"""', text, flags=re.S)
    assert template
    tok = AutoTokenizer.from_pretrained(lora_run)
    chat = [
        {"role": "system", "content": system.group(1)},
        {"role": "user", "content": "Who are you?"},
        {"role": "assistant", "content": "A model."},
        {"role": "user", "content": "Thanks!"},
    ]
    expected = tok.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    assert render_go_chatml(template.group(1), chat) == expected
    assert read_export_manifest(out / "model-q8_0.gguf")["gguf"]["qtype"] == "q8_0"


def test_unsupported_architectures_are_clear_errors(
    tiny_bpe_llama_dir: Path, tiny_bert_dir: Path, tmp_path: Path
) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = tmp_path / "gpt2"
    GPT2LMHeadModel(GPT2Config(vocab_size=400, n_embd=32, n_layer=1, n_head=2)).save_pretrained(gpt2)
    AutoTokenizer.from_pretrained(tiny_bpe_llama_dir).save_pretrained(gpt2)
    with pytest.raises(TemperError, match="does not support architecture 'GPT2LMHeadModel'"):
        export_gguf(gpt2, tmp_path / "out1", "q8_0")
    with pytest.raises(TemperError, match="(?s)not a causal language model.*--onnx"):
        export_gguf(tiny_bert_dir, tmp_path / "out2", "q8_0")
    with pytest.raises(TemperError, match="expected one of f16, bf16, q8_0, q4_0"):
        export_gguf(tiny_bpe_llama_dir, tmp_path / "out3", "q3_k")
    assert not any((tmp_path / f"out{i}").exists() for i in (1, 2, 3))
    assert not (tmp_path / "out1" / EXPORT_MANIFEST).exists()

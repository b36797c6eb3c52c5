"""int8 export: safetensors only, loads back, still generates, perplexity rise bounded; clear errors for the
quantizers whose runtime is missing here."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from temper.errors import TemperError
from temper.export.merge import load_source
from temper.export.quantize import (
    INT8_WEIGHTS,
    Int8Linear,
    check_quantization_backend,
    load_int8,
    quantize_int8,
)

TEXT = "Paris is the capital of France and Berlin is the capital of Germany. Who are you? I am a small model."


def _ppl(model: torch.nn.Module, tok: object, text: str) -> float:
    ids = tok(text, return_tensors="pt").input_ids  # type: ignore[operator]
    with torch.no_grad():
        return math.exp(float(model(input_ids=ids, labels=ids).loss))


@pytest.mark.parametrize("runtime", ["int8", "dequantize"])
def test_int8_export_loads_generates_and_keeps_perplexity(
    lora_run: Path, tmp_path: Path, runtime: str
) -> None:
    out = tmp_path / "int8"
    manifest = quantize_int8(lora_run, out)
    assert manifest["method"] == "int8" and manifest["quantized_modules"] == 2 * 7  # q k v o gate up down
    assert not list(out.glob("*.bin")) and not list(out.glob("*.pt"))
    with safe_open(str(out / INT8_WEIGHTS), "pt") as f:
        keys = set(f.keys())
        assert f.get_tensor("model.layers.0.mlp.up_proj.weight_int8").dtype == torch.int8
    assert "model.layers.0.mlp.up_proj.weight" not in keys and "model.embed_tokens.weight" in keys

    model, tok = load_int8(out, runtime=runtime)
    assert isinstance(model.model.layers[0].self_attn.q_proj, Int8Linear)
    src = load_source(lora_run)
    before, after = _ppl(src.model, tok, TEXT), _ppl(model, tok, TEXT)
    assert after < before * 1.05, (before, after)
    ids = tok("Who are you?", return_tensors="pt").input_ids
    gen = model.generate(input_ids=ids, max_new_tokens=6, min_new_tokens=6, do_sample=False)
    assert gen.shape[1] == ids.shape[1] + 6
    assert tok.chat_template == src.tokenizer.chat_template


def test_missing_quantization_runtimes_are_clear_errors(lora_run: Path, tmp_path: Path) -> None:
    from temper.export.quantize import quantize_external

    if importlib.util.find_spec("hqq") is None:
        with pytest.raises(TemperError, match="(?s)needs the hqq package.*pip install hqq"):
            quantize_external(lora_run, tmp_path / "hqq", "hqq-4bit")
    if importlib.util.find_spec("bitsandbytes") is None:
        for kind in ("4bit", "8bit", "bnb-4bit"):
            with pytest.raises(
                TemperError, match=r"(?s)needs bitsandbytes.*not importable.*pip install bitsandbytes"
            ):
                check_quantization_backend(kind)
        with pytest.raises(TemperError, match="needs bitsandbytes"):
            quantize_external(lora_run, tmp_path / "bnb", "bnb-4bit")
    with pytest.raises(TemperError, match="unknown; expected one of"):
        check_quantization_backend("fp3")
    check_quantization_backend("int8")  # always available
    assert not (tmp_path / "hqq").exists() and not (tmp_path / "bnb").exists()


def test_bnb_4bit_export_loads_back_quantized_and_generates(lora_run: Path, tmp_path: Path) -> None:
    """bitsandbytes' CPU backend (0.49+) runs the 4-bit export and its model here, as `make test` installs it."""
    bnb = pytest.importorskip("bitsandbytes")
    from temper.export.quantize import quantize_external
    from temper.models.load import load_causal_lm

    out = tmp_path / "bnb4"
    assert quantize_external(lora_run, out, "bnb-4bit")["method"] == "bnb-4bit"
    model, tok = load_causal_lm(str(out))
    assert sum(isinstance(m, bnb.nn.Linear4bit) for m in model.modules()) == 2 * 7
    src = load_source(lora_run)
    # NF4 moves the logits, but the model is the same one: perplexity on text stays near the float model's
    assert _ppl(model, tok, TEXT) < 1.5 * _ppl(src.model, src.tokenizer, TEXT)
    ids = tok("Who are you?", return_tensors="pt").input_ids
    assert (
        model.generate(input_ids=ids, max_new_tokens=4, min_new_tokens=4, do_sample=False).shape[1]
        == ids.shape[1] + 4
    )


def test_int8_linear_runs_on_a_weight_at_an_unaligned_address() -> None:
    """Weights read from safetensors can start at any byte; the AVX-512 kernel segfaulted on those."""
    n, k = 576, 576
    buf = torch.empty(n * k + 1, dtype=torch.int8)
    q = buf[1:].view(n, k)
    q.copy_(torch.randint(-127, 128, (n, k), dtype=torch.int8))
    assert q.data_ptr() % 64 != 0
    scale = torch.rand(n) / 100
    layer = Int8Linear(q, scale, None)
    x = torch.randn(2, 8, k)
    want = x @ (q.float() * scale[:, None]).t()
    got = layer(x)
    assert (got - want).abs().max() <= 0.02 * want.abs().max()

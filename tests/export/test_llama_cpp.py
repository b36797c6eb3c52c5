"""The GGUF files run in llama.cpp itself (llama-cpp-python): same greedy tokens as the HF model at f16.

Skipped where llama-cpp-python is not importable (it compiles llama.cpp from source; see docs/export.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from temper.export.gguf import write_gguf
from temper.export.merge import load_source
from temper.export.parity import greedy_tokens


def test_llama_cpp_greedy_matches_hf(tiny_bpe_llama_dir: Path, tmp_path: Path, prompts: list[str]) -> None:
    llama_cpp = pytest.importorskip("llama_cpp")
    src = load_source(tiny_bpe_llama_dir)
    path = tmp_path / "m-f16.gguf"
    write_gguf(src.model, src.tokenizer, path, "f16")
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=256, n_threads=1, verbose=False)
    got = []
    for prompt in prompts:
        ids = llm.tokenize(prompt.encode(), add_bos=False, special=True)
        assert ids == src.tokenizer(prompt).input_ids  # llama.cpp tokenizes like the HF tokenizer
        llm.reset()
        toks: list[int] = []
        for tok in llm.generate(ids, top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0):
            toks.append(tok)
            if len(toks) == 8:
                break
        got.append(toks)
    assert got == greedy_tokens(src.model, src.tokenizer, prompts, 8)

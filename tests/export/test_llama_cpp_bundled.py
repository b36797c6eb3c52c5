"""The bundled SmolLM2 as GGUF in llama.cpp itself: its greedy answers against the HF model's (slow).

Answers end at the model's EOS, as a user sees them (banning EOS would push both runtimes into text neither
chose). f16 must give the same answers; q8_0 (whose kernels also quantize activations) must agree on the
first tokens of most prompts. Skipped where llama-cpp-python is not importable.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from temper.export.gguf import write_gguf
from temper.export.merge import load_source
from temper.export.parity import common_prefix, greedy_tokens

pytestmark = pytest.mark.slow

QUESTIONS = [
    "What is the capital of France?",
    "Write one sentence about the sea.",
    "Name three fruits.",
    "Who are you?",
    "What is 2 + 2?",
    "Give me a synonym for happy.",
    "Translate 'good morning' into French.",
    "What color is the sky on a clear day?",
]
N = 24


def _llama_cpp_answers(llama_cpp: object, path: Path, prompts: list[str], eos: set[int]) -> list[list[int]]:
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=512, n_threads=1, verbose=False)  # type: ignore[attr-defined]
    answers = []
    for prompt in prompts:
        llm.reset()
        toks: list[int] = []
        for tok in llm.generate(
            llm.tokenize(prompt.encode(), add_bos=False, special=True),
            top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0,
        ):  # fmt: skip
            toks.append(tok)
            if tok in eos or len(toks) == N:
                break
        answers.append(toks)
    return answers


def test_bundled_gguf_answers_in_llama_cpp(tmp_path: Path) -> None:
    llama_cpp = pytest.importorskip("llama_cpp")
    torch.set_num_threads(1)
    src = load_source("smollm2-135m-instruct")
    tok = src.tokenizer
    prompts = [
        tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=False)
        for q in QUESTIONS
    ]
    eos_id = src.model.generation_config.eos_token_id
    eos = set(eos_id if isinstance(eos_id, list) else [eos_id])
    ref = greedy_tokens(src.model, tok, prompts, N, stop_at_eos=True)
    matched = {}
    for qtype in ("f16", "q8_0"):
        path = tmp_path / f"model-{qtype}.gguf"
        write_gguf(src.model, tok, path, qtype)
        got = _llama_cpp_answers(llama_cpp, path, prompts, eos)
        matched[qtype] = [common_prefix(a, b) for a, b in zip(ref, got, strict=True)]
    print("answer tokens matching HF fp32:", matched, "of", [len(a) for a in ref])
    assert all(m == len(a) for m, a in zip(matched["f16"], ref, strict=True)), matched
    first4 = sum(m >= min(4, len(a)) for m, a in zip(matched["q8_0"], ref, strict=True))
    assert first4 > len(QUESTIONS) // 2, matched

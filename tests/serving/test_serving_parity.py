"""Greedy parity: chat --query, infer, the server (stream and non-stream) and a direct transformers generate on
merged weights produce the same tokens for the same messages (a template drift would break this)."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from temper.cli import main
from temper.inference.engine import Engine, UnknownModelError
from temper.inference.sampling import SamplingParams

QUESTION = "Who are you?"
N = 24


def _merged_generate(base_dir: Path, run_dir: Path) -> tuple[list[int], str]:
    """Plain transformers + peft, no temper code: merge the adapter, render with the tokenizer, generate."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(run_dir)
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(run_dir)).merge_and_unload().eval()
    ids = tok.apply_chat_template(
        [{"role": "user", "content": QUESTION}], add_generation_prompt=True, return_dict=True
    )
    prompt = torch.tensor([list(ids["input_ids"])])
    with torch.no_grad():
        out = model.generate(
            prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=N, do_sample=False
        )
    new = [t for t in out[0, prompt.shape[1] :].tolist() if t != tok.eos_token_id]
    return new, tok.decode(new, skip_special_tokens=True)


def test_greedy_output_is_identical_on_every_path(
    tiny_llama_dir: Path, adapter_run: Path, client: Any, engine: Engine, tmp_path: Path, capsys: Any
) -> None:
    ref_ids, ref_text = _merged_generate(tiny_llama_dir, adapter_run)
    assert len(ref_ids) == N and ref_text.strip()

    # The engine itself (the adapter unmerged, through the batcher).
    got = engine.chat([{"role": "user", "content": QUESTION}], SamplingParams(max_tokens=N), "ember")
    assert got.token_ids == ref_ids and got.text == ref_text

    # temper chat RUN_DIR --query: only the answer on stdout.
    capsys.readouterr()
    assert (
        main(["chat", str(adapter_run), "--query", QUESTION, "--max-tokens", str(N), "--dtype", "fp32"]) == 0
    )
    assert capsys.readouterr().out == ref_text + "\n"

    # temper infer RUN_DIR.
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text(json.dumps({"messages": [{"role": "user", "content": QUESTION}]}) + "\n")
    args = ["infer", str(adapter_run), "--input", str(src), "--output", str(dst), "--dtype", "fp32"]
    assert main([*args, "--max-tokens", str(N), "--no-progress"]) == 0
    row = json.loads(dst.read_text())
    assert row["generation"] == ref_text and row["completion_tokens"] == N

    # The server, non-stream and stream.
    messages = [{"role": "user", "content": QUESTION}]
    r = client.chat.completions.create(model="ember", messages=messages, temperature=0, max_tokens=N)
    assert r.choices[0].message.content == ref_text
    stream = client.chat.completions.create(
        model="ember", messages=messages, temperature=0, max_tokens=N, stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == ref_text


@pytest.mark.parametrize("adapter", [None, "ember"])
def test_requests_joining_mid_decode_match_their_solo_runs(engine: Engine, adapter: str | None) -> None:
    """Requests that join while another is decoding (different lengths, merged caches) stay token-identical."""
    prompts = [engine.chat_prompt([{"role": "user", "content": "word " * (3 * i + 1)}]) for i in range(5)]
    params = SamplingParams(max_tokens=30)
    solo = [engine.generate(p, params, adapter).token_ids for p in prompts]
    engine.batcher.max_rows_seen = 0
    streams = []
    for p in prompts:  # each joins after the previous one produced two tokens
        it = engine.stream(p, params, adapter)
        first = [next(it), next(it)]
        streams.append((first, it))
    together = [
        [t for e in first for t in e.token_ids] + [t for e in it for t in e.token_ids]
        for first, it in streams
    ]
    assert together == solo
    assert engine.batcher.max_rows_seen >= 2


def test_seeded_sampling_is_reproducible_in_a_batch(engine: Engine) -> None:
    prompt = engine.chat_prompt([{"role": "user", "content": "Say something"}])
    params = SamplingParams(temperature=1.0, top_p=0.9, top_k=50, max_tokens=12, seed=7)
    alone = engine.generate(prompt, params).token_ids
    other = engine.chat_prompt([{"role": "user", "content": "Something else entirely, longer"}])
    busy = engine.stream(other, SamplingParams(max_tokens=40))
    next(busy)
    assert engine.generate(prompt, params).token_ids == alone
    busy.close()


def test_the_engine_hands_the_kv_cache_over_under_the_models_own_keyword(engine: Engine) -> None:
    """transformers 5 renamed the forward's `past_key_values` to `cache` (the old name warns on every call and
    goes in 5.40): a chat through the batcher, adapters on, must use the name the installed model takes."""
    import warnings

    from temper.inference.kvcache import cache_kwarg

    base = engine.model.get_base_model() if hasattr(engine.model, "get_base_model") else engine.model
    assert cache_kwarg(engine.model) in inspect.signature(base.forward).parameters
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        got = engine.chat([{"role": "user", "content": QUESTION}], SamplingParams(max_tokens=4), "ember")
    assert len(got.token_ids) == 4
    assert not [w for w in seen if "past_key_values" in str(w.message)], [str(w.message) for w in seen]


def test_a_single_fp32_adapter_is_folded_into_the_weights_for_chat_and_infer(
    adapter_run: Path, tmp_path: Path
) -> None:
    """chat and infer (merge_adapter=True) decode with W + s*BA; the answer and its label stay the adapter's."""
    from peft import PeftModel

    prompt_msgs = [{"role": "user", "content": QUESTION}]
    unmerged = Engine.load(adapter_run, dtype="fp32", max_batch_size=1)
    merged = Engine.load(adapter_run, dtype="fp32", max_batch_size=1, merge_adapter=True)
    try:
        assert isinstance(unmerged.model, PeftModel) and not isinstance(merged.model, PeftModel)
        assert not any("lora_" in name for name, _ in merged.model.named_parameters())
        assert merged.adapters == [] and merged.default_adapter is None
        assert merged.base_id == unmerged.default_adapter is not None  # outputs are labelled as before
        with pytest.raises(UnknownModelError, match="folded into the weights"):
            merged.adapter_for("base")  # never the merged weights under the base model's name
        want = unmerged.chat(prompt_msgs, SamplingParams(max_tokens=N), unmerged.default_adapter)
        got = merged.chat(prompt_msgs, SamplingParams(max_tokens=N), merged.default_adapter)
        assert got.token_ids == want.token_ids and len(got.token_ids) == N
    finally:
        unmerged.close()
        merged.close()
    # bf16 weights would round a small adapter delta away: the adapter stays separate there.
    with Engine.load(adapter_run, dtype="bf16", max_batch_size=1, merge_adapter=True) as bf16:
        assert isinstance(bf16.model, PeftModel) and bf16.default_adapter is not None
    # A second adapter beside the run's own: nothing is merged (requests choose between them).
    with Engine.load(adapter_run, {"again": adapter_run}, dtype="fp32", merge_adapter=True) as two:
        assert isinstance(two.model, PeftModel) and sorted(two.adapters) == sorted(
            [two.default_adapter, "again"]
        )


def test_folding_an_adapter_keeps_the_logits_and_leaves_two_adapters_alone(adapter_run: Path) -> None:
    """eval folds a run dir's adapter (fold_single_adapter); the logits are the unmerged ones to rounding."""
    import copy

    from peft import PeftModel

    from temper.models.adapters import fold_single_adapter
    from temper.models.load import load_causal_lm, resolve

    unmerged, _ = load_causal_lm(resolve(str(adapter_run)), dtype="fp32")
    folded = fold_single_adapter(copy.deepcopy(unmerged))
    assert isinstance(unmerged, PeftModel) and not isinstance(folded, PeftModel)
    ids = torch.arange(3, 40).unsqueeze(0)
    with torch.no_grad():
        want, got = unmerged(input_ids=ids).logits, folded(input_ids=ids).logits
        base = unmerged.get_base_model()
        with unmerged.disable_adapter():
            without = base(input_ids=ids).logits
    assert (got - want).abs().max() < 1e-4 < (without - want).abs().max()  # the adapter matters, and is kept
    two, _ = load_causal_lm(resolve(str(adapter_run)), dtype="fp32", adapters={"again": adapter_run})
    assert fold_single_adapter(two) is two

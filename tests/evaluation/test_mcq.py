"""MCQ scoring on the tiny llama: a forced letter wins, the prefix cache changes nothing, letters parse."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch

from temper.evaluation.datasets import load_mcq
from temper.evaluation.mcq import (
    common_prefix_len,
    last_token_logprobs,
    letter_token_ids,
    mcq_prompts,
    parse_letter,
    score_mcq_generate,
    score_mcq_logits,
)


def forced(model: Any, tok: Any, letter: str) -> Any:
    """A copy of `model` whose LM head adds +50 to the logit of `letter` (so it is always the argmax)."""
    m = copy.deepcopy(model)
    old = m.lm_head
    head = torch.nn.Linear(old.in_features, old.out_features, bias=True)
    head.weight = torch.nn.Parameter(old.weight.detach().clone())
    with torch.no_grad():
        head.bias.zero_()
        head.bias[tok.convert_tokens_to_ids(letter)] = 50.0
    m.lm_head = head
    return m


@pytest.mark.parametrize("letter", ["A", "C"])
def test_forced_letter_wins(tiny_lm: tuple[Any, Any], mcq_dir: Path, letter: str) -> None:
    model, tok = tiny_lm
    subset = load_mcq("general_mcq", mcq_dir, few_shot=2)[0]
    rows = score_mcq_logits(forced(model, tok, letter), tok, subset, batch_size=2)
    assert [r["prediction"] for r in rows] == [letter] * 5
    expected = [float(item.answer == letter) for item in subset.items]
    assert [r["score"] for r in rows] == expected
    assert all(max(r["logprobs"], key=r["logprobs"].get) == letter for r in rows)


def test_generate_mode_parses_forced_letter(tiny_lm: tuple[Any, Any], mcq_dir: Path) -> None:
    model, tok = tiny_lm
    subset = load_mcq("general_mcq", mcq_dir)[0]
    rows = score_mcq_generate(forced(model, tok, "B"), tok, subset, batch_size=3, max_new_tokens=1)
    assert [r["prediction"] for r in rows] == ["B"] * 5
    assert [r["score"] for r in rows] == [1.0, 0.0, 0.0, 0.0, 1.0]
    assert rows[0]["generated"] == "B"


@pytest.mark.parametrize("chat", [True, False])
def test_prefix_cache_and_batching_match_single_forward(
    tiny_lm: tuple[Any, Any], mcq_dir: Path, chat: bool
) -> None:
    model, tok = tiny_lm
    subset = load_mcq("general_mcq", mcq_dir, few_shot=2)[0]
    prompts = mcq_prompts(tok, subset, chat)
    seqs = [tok(p, add_special_tokens=not chat)["input_ids"] for p in prompts]
    assert common_prefix_len(seqs) > 20  # header + two exemplars are shared
    cached = last_token_logprobs(model, seqs, tok.pad_token_id, batch_size=3, prefix_cache=True)
    for seq, got in zip(seqs, cached, strict=True):
        with torch.no_grad():
            ref = torch.log_softmax(model(input_ids=torch.tensor([seq])).logits[0, -1].float(), -1)
        torch.testing.assert_close(got, ref, atol=2e-4, rtol=0)
    ids = letter_token_ids(tok, prompts[0], chat, 4)
    assert tok.convert_ids_to_tokens(ids) == (["A", "B", "C", "D"] if chat else ["ĠA", "ĠB", "ĠC", "ĠD"])


def test_common_prefix_len_leaves_a_token() -> None:
    assert common_prefix_len([[1, 2, 3], [1, 2, 4]]) == 2
    assert common_prefix_len([[1, 2], [1, 2, 3]]) == 1
    assert common_prefix_len([[1, 2, 3]]) == 0


@pytest.mark.parametrize(
    ("text", "n", "want"),
    [
        ("答案：B", 4, "B"),
        ("The answer is (C).", 4, "C"),
        ("D. because it is", 4, "D"),
        ("A", 2, "A"),
        ("I think it's option b", 4, "B"),
        ("Answer: E", 4, None),
        ("None of them", 4, None),
        ("正确答案是C", 4, "C"),
        ("(B) 土地", 4, "B"),
    ],
)
def test_parse_letter(text: str, n: int, want: str | None) -> None:
    assert parse_letter(text, n) == want


@pytest.mark.slow
def test_bundled_model_ceval_matches_unbatched_reference(smollm2_dir: Path, shared_data: Path) -> None:
    """The real model and chat template: batched + prefix-cached scoring equals one plain forward per item."""
    from temper.models.load import load_causal_lm

    model, tok = load_causal_lm(str(smollm2_dir), dtype="fp32")
    subset = load_mcq("ceval", shared_data / "ceval", ["computer_network"], limit=3)[0]  # short questions
    rows = score_mcq_logits(model, tok, subset, batch_size=2)
    for row in rows:
        ids = tok(row["prompt"], add_special_tokens=False, return_tensors="pt").input_ids
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits[0, -1].float(), -1)
        ref = {x: float(logp[tok.convert_tokens_to_ids(x)]) for x in "ABCD"}
        assert max(ref, key=ref.get) == row["prediction"]  # type: ignore[arg-type]
        assert max(abs(ref[x] - row["logprobs"][x]) for x in "ABCD") < 1e-3
    assert row["prompt"].startswith("<|im_start|>system") and "以下是中国关于计算机网络考试" in row["prompt"]

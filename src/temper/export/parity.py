"""Does an exported model still compute the same thing? Greedy tokens and logits, compared.

Greedy decoding is the strictest cheap check: one flipped argmax changes every later token, so "the first N
tokens match" is a prefix length per prompt.

Example:
    >>> report = compare_greedy(hf_model, gguf_model, tok, ["Hello"], max_new_tokens=16)  # doctest: +SKIP
    >>> report["prefix_match"]  # doctest: +SKIP
    [16]
"""

from __future__ import annotations

from typing import Any

import torch


@torch.no_grad()
def greedy_tokens(
    model: Any, tok: Any, prompts: list[str], max_new_tokens: int = 16, stop_at_eos: bool = False
) -> list[list[int]]:
    """New token ids per prompt; exactly `max_new_tokens` each (EOS banned until then) so lengths compare.

    stop_at_eos: the model's own answer instead, ending with its EOS (or cut at `max_new_tokens`). Compare
    other runtimes with this one: banning EOS pushes a model that wanted to stop into text it never chose.
    """
    out = []
    for prompt in prompts:
        ids = tok(prompt, return_tensors="pt").input_ids
        gen = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            min_new_tokens=None if stop_at_eos else max_new_tokens,
            do_sample=False,
            pad_token_id=tok.pad_token_id,
        )
        out.append(gen[0, ids.shape[1] :].tolist())
    return out


def common_prefix(a: list[int], b: list[int]) -> int:
    """Length of the shared start of two token lists.

    Example:
        >>> common_prefix([1, 2, 3], [1, 2, 4])
        2
    """
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def compare_token_lists(ref: list[list[int]], other: list[list[int]]) -> dict[str, Any]:
    """Summary: per-prompt matching prefix, how many prompts match fully, and both token lists."""
    prefix = [common_prefix(a, b) for a, b in zip(ref, other, strict=False)]
    return {
        "prefix_match": prefix,
        "identical_prompts": sum(p == len(a) for p, a in zip(prefix, ref, strict=True)),
        "prompts": len(ref),
        "reference_tokens": ref,
        "other_tokens": other,
    }


def compare_greedy(
    ref_model: Any, other_model: Any, tok: Any, prompts: list[str], max_new_tokens: int = 16
) -> dict[str, Any]:
    """Greedy tokens of two models on the same prompts, compared (see compare_token_lists)."""
    ref = greedy_tokens(ref_model, tok, prompts, max_new_tokens)
    other = greedy_tokens(other_model, tok, prompts, max_new_tokens)
    return compare_token_lists(ref, other)


@torch.no_grad()
def max_logit_diff(a: Any, b: Any, ids: torch.Tensor) -> float:
    """max |logits_a - logits_b| on one batch of ids."""
    return float((a(input_ids=ids).logits.float() - b(input_ids=ids).logits.float()).abs().max())

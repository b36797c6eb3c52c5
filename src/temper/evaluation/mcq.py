"""Multiple-choice scoring: the log-probability of each option letter right after the prompt.

One forward pass per question reads the next-token distribution at the prompt's last position and compares
the letters' log-probs (lm-eval/EvalScope "logits" style). A subset's prompts share a long prefix (header,
few-shot exemplars, the chat template's system turn), so that prefix runs once and its KV cache is reused by
every batch; the prefix is the longest common prefix of the *token ids*, so the tokens are exactly those of the
full prompt. Only the positions that are scored go through the LM head (`logits_to_keep`).

Example:
    >>> from temper.evaluation.datasets import load_mcq
    >>> subset = load_mcq("ceval", "../shared/data/ceval", ["logic"], limit=4)[0]  # doctest: +SKIP
    >>> [r["prediction"] for r in score_mcq_logits(model, tok, subset)]  # doctest: +SKIP
    ['B', 'B', 'C', 'B']
"""

from __future__ import annotations

import copy
import re
from typing import Any

import torch

from temper.errors import TemperError
from temper.evaluation.datasets import LETTERS, MCQSubset
from temper.evaluation.generation import encode, generate_answers, model_device, progress_bar
from temper.evaluation.prompts import build_prompt, letter_continuation, mcq_text
from temper.inference.kvcache import cache_kwarg, output_cache

MIN_PREFIX = 8  # below this a shared prefix saves less than the cache copy costs


def mcq_prompts(tokenizer: Any, subset: MCQSubset, chat: bool, system: str | None = None) -> list[str]:
    return [build_prompt(tokenizer, mcq_text(subset, item), chat, system) for item in subset.items]


def letter_token_ids(tokenizer: Any, prompt: str, chat: bool, n: int) -> list[int]:
    """The single token that spells each of the first `n` letters after `prompt`."""
    ids = []
    for letter in LETTERS[:n]:
        cont = letter_continuation(prompt, chat, letter)
        toks = encode(tokenizer, cont, chat=True)
        if len(toks) != 1:
            raise TemperError(
                f"the option letter {cont!r} is {len(toks)} tokens for this tokenizer; logits scoring needs one.",
                hint="Use --mcq-mode generate for this model.",
            )
        ids.append(toks[0])
    return ids


def common_prefix_len(seqs: list[list[int]]) -> int:
    """Length of the longest common prefix, leaving at least one token of every sequence to score."""
    if len(seqs) < 2:
        return 0
    first, limit = seqs[0], min(len(s) for s in seqs) - 1
    n = 0
    while n < limit and all(s[n] == first[n] for s in seqs):
        n += 1
    return n


@torch.inference_mode()
def last_token_logprobs(
    model: Any,
    seqs: list[list[int]],
    pad_id: int,
    batch_size: int = 8,
    prefix_cache: bool = True,
    progress: bool = False,
) -> list[torch.Tensor]:
    """log_softmax of the next-token logits after each sequence (float32, shape [vocab] each)."""
    device = model_device(model)
    p = common_prefix_len(seqs) if prefix_cache else 0
    cache, cache_kw = None, cache_kwarg(model)
    if p >= MIN_PREFIX:
        out = model(input_ids=torch.tensor([seqs[0][:p]], device=device), use_cache=True, logits_to_keep=1)
        cache = output_cache(out)
    else:
        p = 0
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
    result: list[torch.Tensor] = [torch.empty(0)] * len(seqs)
    with progress_bar(len(seqs), "scoring", progress) as advance:
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            tails = [seqs[i][p:] for i in idx]
            width = max(len(t) for t in tails)
            ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(idx), p + width), dtype=torch.long)
            mask[:, :p] = 1
            for row, t in enumerate(tails):  # right padding: real tokens keep positions p, p+1, ...
                ids[row, : len(t)] = torch.tensor(t)
                mask[row, p : p + len(t)] = 1
            last = torch.tensor([len(t) - 1 for t in tails]).unsqueeze(1)
            kwargs: dict[str, Any] = {}
            if cache is not None:
                batch_cache = copy.deepcopy(cache)  # the forward appends to the cache it is given
                batch_cache.batch_repeat_interleave(len(idx))
                kwargs = {cache_kw: batch_cache, "use_cache": True}
            logits = model(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                logits_to_keep=last.to(device),
                **kwargs,
            ).logits[:, 0, :]
            logp = torch.log_softmax(logits.float(), dim=-1).cpu()
            for row, i in enumerate(idx):
                result[i] = logp[row]
            advance(len(idx))
    return result


def score_mcq_logits(
    model: Any,
    tokenizer: Any,
    subset: MCQSubset,
    chat: bool = True,
    system: str | None = None,
    batch_size: int = 8,
    max_length: int = 2048,
    prefix_cache: bool = True,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Per-item results: prompt, prediction (letter), gold, score (1/0) and each option's log-prob."""
    prompts = mcq_prompts(tokenizer, subset, chat, system)
    seqs = [encode(tokenizer, p, chat) for p in prompts]
    _check_lengths(subset, seqs, max_length)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    logps = last_token_logprobs(model, seqs, pad_id, batch_size, prefix_cache, progress)
    rows = []
    for item, prompt, logp in zip(subset.items, prompts, logps, strict=True):
        letter_ids = letter_token_ids(tokenizer, prompt, chat, len(item.options))
        option_lp = [float(logp[t]) for t in letter_ids]
        pred = LETTERS[max(range(len(option_lp)), key=lambda k: option_lp[k])]  # ties: the first letter
        rows.append(
            _row(item.id, prompt, pred, item.answer, {LETTERS[k]: v for k, v in enumerate(option_lp)})
        )
    return rows


def _row(item_id: str, prompt: str, pred: str | None, gold: str, extra: Any) -> dict[str, Any]:
    key = "logprobs" if isinstance(extra, dict) else "generated"
    return {
        "id": item_id,
        "prompt": prompt,
        "prediction": pred,
        "gold": gold,
        "score": float(pred == gold),
        key: extra,
    }


def _check_lengths(subset: MCQSubset, seqs: list[list[int]], max_length: int) -> None:
    long = [
        f"{it.source}: {len(s)} tokens"
        for it, s in zip(subset.items, seqs, strict=True)
        if len(s) > max_length
    ]
    if long:
        from temper.errors import DataError

        raise DataError(
            f"{subset.name}: {len(long)} prompt(s) longer than max_length={max_length}.",
            long,
            hint="Raise --max-length (up to the model's context) or use fewer --few-shot examples.",
        )


_CUE = re.compile(
    r"(?:答案|answer|option|choice)\s*(?:is|是|为|应该是|:|：)?\s*[:：]?\s*[(（\[]?\s*([A-J])\b", re.I
)


def parse_letter(text: str, n_options: int) -> str | None:
    """The option letter a generated answer names: "答案：B", "The answer is (C)", "B. ...", or a lone letter."""
    valid = LETTERS[:n_options]
    for m in _CUE.finditer(text):
        if m.group(1).upper() in valid:
            return m.group(1).upper()
    lead = re.match(r"\s*[(（\[]?([A-J])(?:[)）\].:：、,\s]|$)", text)
    if lead and lead.group(1) in valid:
        return lead.group(1)
    found = [c for c in re.findall(r"(?<![A-Za-z])([A-J])(?![A-Za-z])", text) if c in valid]
    return found[0] if found else None


def score_mcq_generate(
    model: Any,
    tokenizer: Any,
    subset: MCQSubset,
    chat: bool = True,
    system: str | None = None,
    batch_size: int = 8,
    max_new_tokens: int = 16,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Generate a short answer per item and parse the letter from it (no letter = wrong)."""
    prompts = mcq_prompts(tokenizer, subset, chat, system)
    outs = generate_answers(model, tokenizer, prompts, max_new_tokens, batch_size, chat, progress)
    rows = []
    for item, prompt, text in zip(subset.items, prompts, outs, strict=True):
        rows.append(_row(item.id, prompt, parse_letter(text, len(item.options)), item.answer, text))
    return rows

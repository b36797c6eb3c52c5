"""Preference / KTO records -> token ids, and the collators that batch them for one forward pass.

The prompt is rendered with the same chat template as SFT and inference (temper.data.templates.render_prompt,
generation prompt included); a reply's tokens are what the template writes after that prompt for the full
conversation, up to and including the end-of-turn token (the label tokens are "the assistant reply plus EOS",
as in SFT). Prompt and reply are tokenized separately so that the prompt tokens are identical for the chosen
and the rejected sequence (a BPE merge across the boundary would otherwise give them different prompts).

Over-long rows: the prompt keeps its *last* tokens (the question nearest the reply), the replies their first;
with truncation=drop the row is skipped. Both are counted.

Example:
    >>> from temper.data.records import Message, PreferenceExample
    >>> ex = PreferenceExample([Message("user", "2+2?")], "4", "5")
    >>> rows, stats = encode_pairs([ex], tok, max_length=64)                     # doctest: +SKIP
    >>> batch = PairCollator(tok.pad_token_id)(rows)                             # doctest: +SKIP
    >>> batch["input_ids"].shape[0]        # chosen rows first, then rejected    # doctest: +SKIP
    2
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import torch

from temper.data.records import KTOExample, Message, PreferenceExample
from temper.data.templates import render_prompt
from temper.data.tokenize import _tail_labels
from temper.errors import DataError, TemperError

IGNORE_INDEX = -100


def chat_dicts(prompt: list[Message], system: str | None) -> list[dict[str, str]]:
    head = [{"role": "system", "content": system}] if system else []
    return head + [{"role": m.role, "content": m.content} for m in prompt]


def reply_ids(tokenizer: Any, messages: list[dict[str, str]], prompt_text: str, reply: str) -> list[int]:
    """Label tokens of `reply` after the generation prompt: the reply text plus the template's turn tail up to
    and including its end-of-turn token (exactly what temper.data.tokenize labels for an SFT turn)."""
    full = render_prompt(
        tokenizer, [*messages, {"role": "assistant", "content": reply}], add_generation_prompt=False
    )
    start = full.find(reply, len(prompt_text)) if full.startswith(prompt_text) else -1
    if start < 0:
        raise TemperError(
            "the chat template does not render the prompt as a prefix of the conversation with its reply, so the "
            "reply tokens cannot be found in the rendered text.",
            hint="Use --template chatml or a Jinja template that renders earlier turns unchanged.",
        )
    end = start + len(reply)
    body = token_ids(tokenizer, full[len(prompt_text) : end])
    tail = [t for t in _tail_labels(tokenizer, token_ids(tokenizer, full[end:])) if t != IGNORE_INDEX]
    if not tail and tokenizer.eos_token_id is not None:
        tail = [tokenizer.eos_token_id]  # a template without an end-of-turn token: the model must still stop
    return body + tail


def token_ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []


def fit_lengths(
    prompt: list[int], replies: list[list[int]], max_length: int
) -> tuple[list[int], list[list[int]], bool]:
    """Left-truncate the prompt, then right-truncate the replies, so that prompt + longest reply fits."""
    longest = max(len(r) for r in replies)
    if len(prompt) + longest <= max_length:
        return prompt, replies, False
    keep_prompt = max(max_length - longest, max_length // 2)
    prompt = prompt[-keep_prompt:] if len(prompt) > keep_prompt else prompt
    room = max_length - len(prompt)
    return prompt, [r[:room] for r in replies], True


def encode_pairs(
    records: list[PreferenceExample],
    tokenizer: Any,
    max_length: int,
    truncation: str = "truncate",
    system: str | None = None,
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Rows {prompt_ids, chosen_ids, rejected_ids, source} and counts {n_rows, n_truncated, n_dropped}."""
    rows: list[dict[str, Any]] = []
    stats = {"n_rows": len(records), "n_truncated": 0, "n_dropped": 0}
    for ex in records:
        messages = chat_dicts(ex.prompt, ex.system if ex.system is not None else system)
        prompt_text = render_prompt(tokenizer, messages, add_generation_prompt=True)
        replies = [reply_ids(tokenizer, messages, prompt_text, r) for r in (ex.chosen, ex.rejected)]
        prompt, replies, cut = fit_lengths(token_ids(tokenizer, prompt_text), replies, max_length)
        if cut and truncation == "drop":
            stats["n_dropped"] += 1
            continue
        stats["n_truncated"] += int(cut)
        rows.append(
            {"prompt_ids": prompt, "chosen_ids": replies[0], "rejected_ids": replies[1], "source": ex.source}
        )
    _check_not_empty(rows, stats, max_length)
    return rows, stats


def encode_unpaired(
    records: list[KTOExample],
    tokenizer: Any,
    max_length: int,
    truncation: str = "truncate",
    system: str | None = None,
    seed: int = 42,
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """KTO rows {prompt_ids, completion_ids, kl_completion_ids, label}.

    `kl_completion_ids` is the completion of another, randomly chosen row: prompt + that completion is the
    mismatched pair on which KTO estimates KL(pi || ref). Fixing the pairing here (not per batch) lets the
    reference log-probs of both be precomputed once.
    """
    rows: list[dict[str, Any]] = []
    stats = {"n_rows": len(records), "n_truncated": 0, "n_dropped": 0}
    encoded = []
    for ex in records:
        messages = chat_dicts(ex.prompt, ex.system if ex.system is not None else system)
        prompt_text = render_prompt(tokenizer, messages, add_generation_prompt=True)
        completion = reply_ids(tokenizer, messages, prompt_text, ex.completion)
        encoded.append((ex, token_ids(tokenizer, prompt_text), completion))
    order = list(range(len(encoded)))
    random.Random(seed).shuffle(order)
    # A derangement by rotation of a shuffled order: no row is paired with its own completion (when n > 1).
    partner = {order[i]: order[(i + 1) % len(order)] for i in range(len(order))}
    for i, (ex, prompt, completion) in enumerate(encoded):
        kl_completion = encoded[partner[i]][2]
        prompt, (completion, kl_completion), cut = fit_lengths(
            prompt, [completion, kl_completion], max_length
        )
        if cut and truncation == "drop":
            stats["n_dropped"] += 1
            continue
        stats["n_truncated"] += int(cut)
        rows.append(
            {
                "prompt_ids": prompt,
                "completion_ids": completion,
                "kl_completion_ids": kl_completion,
                "label": bool(ex.label),
                "source": ex.source,
            }
        )
    _check_not_empty(rows, stats, max_length)
    return rows, stats


def _check_not_empty(rows: list[dict[str, Any]], stats: dict[str, int], max_length: int) -> None:
    if stats["n_rows"] and not rows:
        raise DataError(
            f"all {stats['n_rows']} rows are longer than max_length={max_length} and were dropped.",
            hint="Raise --max-length or use --truncation truncate.",
        )


def _pad(seqs: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad (prompt, reply) sequences; labels are the reply tokens, -100 elsewhere."""
    width = max(len(p) + len(r) for p, r in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    labels = torch.full((len(seqs), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, (p, r) in enumerate(seqs):
        n = len(p) + len(r)
        ids[i, :n] = torch.tensor(p + r, dtype=torch.long)
        labels[i, len(p) : n] = torch.tensor(r, dtype=torch.long)
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


@dataclass
class PairCollator:
    """Batch pairs as (2B, L): the B chosen sequences, then the B rejected ones; precomputed reference
    log-probs (`ref_chosen_logps`, `ref_rejected_logps`) pass through as float tensors."""

    pad_token_id: int

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        seqs = [(r["prompt_ids"], r["chosen_ids"]) for r in rows] + [
            (r["prompt_ids"], r["rejected_ids"]) for r in rows
        ]
        batch = _pad(seqs, self.pad_token_id)
        for key in ("ref_chosen_logps", "ref_rejected_logps"):
            if key in rows[0]:
                batch[key] = torch.tensor([r[key] for r in rows], dtype=torch.float32)
        return batch


@dataclass
class UnpairedCollator:
    """Batch KTO rows as (2B, L): the B prompt+completion sequences, then the B mismatched (KL) ones."""

    pad_token_id: int

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        seqs = [(r["prompt_ids"], r["completion_ids"]) for r in rows]
        seqs += [(r["prompt_ids"], r["kl_completion_ids"]) for r in rows]
        batch = _pad(seqs, self.pad_token_id)
        batch["kto_label"] = torch.tensor([r["label"] for r in rows], dtype=torch.bool)
        for key in ("ref_logps", "ref_kl_logps"):
            if key in rows[0]:
                batch[key] = torch.tensor([r[key] for r in rows], dtype=torch.float32)
        return batch

"""Batched greedy generation for evaluation, and the small runtime helpers the scorers share.

`generate_answers` is the one function that generates; it will hand over to temper.inference.engine (batched
generation with the serving engine) once that lands, without its callers changing.

Example:
    >>> from temper.models.load import load_causal_lm
    >>> model, tok = load_causal_lm("smollm2-135m-instruct")  # doctest: +SKIP
    >>> generate_answers(model, tok, ["<|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\n"])  # doctest: +SKIP
    ['Hello! How can I help you today?']
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch


def encode(tokenizer: Any, text: str, chat: bool) -> list[int]:
    """Token ids of a prompt. Chat-rendered text already holds its special tokens, so none are added."""
    ids: list[int] = tokenizer(text, add_special_tokens=not chat)["input_ids"]
    return ids


@contextmanager
def progress_bar(total: int, description: str, enabled: bool = True) -> Iterator[Any]:
    """A rich progress bar (or a no-op) yielding `advance(n)`."""
    if not enabled:
        yield lambda n=1: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    cols = [
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*cols, transient=False) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)


def model_device(model: Any) -> torch.device:
    return next(model.parameters()).device


@torch.inference_mode()
def generate_answers(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    max_new_tokens: int = 256,
    batch_size: int = 8,
    chat: bool = True,
    progress: bool = False,
) -> list[str]:
    """Greedy completions of `prompts` (prompt text excluded), batched with left padding.

    Prompts are sorted by length so that a batch pads little; the answers come back in the input order.
    """
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    out: list[str] = [""] * len(prompts)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = model_device(model)
    with progress_bar(len(prompts), "generating", progress) as advance:
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            seqs = [encode(tokenizer, prompts[i], chat) for i in idx]
            width = max(len(s) for s in seqs)
            ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(seqs), width), dtype=torch.long)
            for row, s in enumerate(seqs):
                ids[row, width - len(s) :] = torch.tensor(s)
                mask[row, width - len(s) :] = 1
            gen = model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=pad_id,
            )
            for row, i in enumerate(idx):
                out[i] = tokenizer.decode(gen[row, width:], skip_special_tokens=True).strip()
            advance(len(idx))
    return out

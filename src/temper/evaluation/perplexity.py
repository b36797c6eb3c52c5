"""Token-level perplexity of text or conversations: exp(mean negative log-likelihood per scored token).

Rows are read by temper.data (json/jsonl/csv/parquet/txt, every chat format) and tokenized exactly as training
does: plain text scores every token (the tokenizer's BOS, EOS appended), conversations score only the assistant
replies and their end-of-turn token. Sequences longer than `max_length` are split into consecutive windows
(each window's first token has no context and is not scored), so every token is scored at most once.

Example:
    >>> res = perplexity(model, tok, ["../shared/data/llamafactory/wiki_demo.txt#20"])  # doctest: +SKIP
    >>> res["perplexity"]  # doctest: +SKIP
    24.3
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from temper.evaluation.generation import model_device, progress_bar

IGNORE = -100


def encode_records(tokenizer: Any, files: Sequence[str], system: str | None = None) -> list[dict[str, Any]]:
    """[{source, ids, labels}] for every row of `files` (labels IGNORE where the token is not scored)."""
    from temper.data.load import load_records
    from temper.data.records import ChatExample, TextExample
    from temper.data.tokenize import chat_ids, text_ids

    out = []
    for rec in load_records(list(files)):
        if isinstance(rec, ChatExample):
            ids, labels = chat_ids(tokenizer, rec, system)
        elif isinstance(rec, TextExample):
            ids, labels = text_ids(tokenizer, rec)
        else:
            from temper.errors import DataError

            raise DataError(f"{rec.source}: a {type(rec).__name__} row has no text to score for perplexity.")
        out.append({"source": rec.source, "ids": ids, "labels": labels})
    return out


def windows(ids: list[int], labels: list[int], max_length: int) -> list[tuple[list[int], list[int]]]:
    return [(ids[i : i + max_length], labels[i : i + max_length]) for i in range(0, len(ids), max_length)]


@torch.inference_mode()
def sequence_nll(model: Any, ids: list[int], labels: list[int], max_length: int = 2048) -> tuple[float, int]:
    """(summed NLL in nats, number of scored tokens) of one sequence; label[t] is predicted from ids[:t]."""
    device = model_device(model)
    total, count = 0.0, 0
    for win_ids, win_labels in windows(ids, labels, max_length):
        if len(win_ids) < 2:
            continue
        logits = model(input_ids=torch.tensor([win_ids], device=device)).logits[0, :-1].float()
        target = torch.tensor(win_labels[1:], device=device)
        keep = target != IGNORE
        if keep.any():
            nll = torch.nn.functional.cross_entropy(logits[keep], target[keep], reduction="sum")
            total += float(nll)
            count += int(keep.sum())
    return total, count


def perplexity(
    model: Any,
    tokenizer: Any,
    files: Sequence[str],
    max_length: int = 2048,
    system: str | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Corpus perplexity (total NLL / total scored tokens) plus per-row numbers in `samples`."""
    rows = encode_records(tokenizer, files, system)
    samples = []
    total, count = 0.0, 0
    with progress_bar(len(rows), "perplexity", progress) as advance:
        for row in rows:
            nll, n = sequence_nll(model, row["ids"], row["labels"], max_length)
            total, count = total + nll, count + n
            ppl = math.exp(nll / n) if n else float("nan")
            samples.append({"id": row["source"], "tokens": n, "nll": nll, "perplexity": ppl})
            advance()
    return {
        "perplexity": math.exp(total / count) if count else float("nan"),
        "tokens": count,
        "rows": len(rows),
        "samples": samples,
    }

"""Open-QA evaluation: generate an answer per prompt and score it against the reference (BLEU, ROUGE).

Example:
    >>> from temper.evaluation.datasets import load_qa
    >>> subset = load_qa("../shared/data/ms-swift/legacy/examples/pytorch/llm/eval_example/custom_general_qa")[0]  # doctest: +SKIP
    >>> rows = score_qa(model, tok, subset)  # doctest: +SKIP
    >>> mean_metrics(rows)["Rouge-L-F"]  # doctest: +SKIP
    0.21
"""

from __future__ import annotations

from typing import Any

from temper.evaluation.datasets import QAItem, QASubset
from temper.evaluation.generation import generate_answers
from temper.evaluation.metrics import METRIC_NAMES, sample_metrics
from temper.evaluation.prompts import render_chat


def qa_prompt(tokenizer: Any, item: QAItem, chat: bool, system: str | None = None) -> str:
    """The chat-rendered conversation, or (no chat template) the turns' text one per line."""
    msgs = item.messages
    if system and not any(m["role"] == "system" for m in msgs):
        msgs = [{"role": "system", "content": system}, *msgs]
    if chat:
        return render_chat(tokenizer, msgs)
    return "\n".join(m["content"] for m in msgs) + "\n"


def score_qa(
    model: Any,
    tokenizer: Any,
    subset: QASubset,
    chat: bool = True,
    system: str | None = None,
    batch_size: int = 8,
    max_new_tokens: int = 256,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Per-item rows: prompt, prediction, gold and `score` (every metric of METRIC_NAMES)."""
    prompts = [qa_prompt(tokenizer, item, chat, system) for item in subset.items]
    answers = generate_answers(model, tokenizer, prompts, max_new_tokens, batch_size, chat, progress)
    return [
        {
            "id": it.id,
            "prompt": p,
            "prediction": a,
            "gold": it.reference,
            "score": sample_metrics(a, it.reference),
        }
        for it, p, a in zip(subset.items, prompts, answers, strict=True)
    ]


def mean_metrics(rows: list[dict[str, Any]]) -> dict[str, float]:
    return {m: sum(r["score"][m] for r in rows) / len(rows) for m in METRIC_NAMES} if rows else {}

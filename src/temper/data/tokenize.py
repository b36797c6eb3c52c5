"""Records -> token ids and labels. Labels are the assistant replies (every assistant turn) plus the end-of-turn
token; everything else is -100 (`mask_history` and `train_on_prompt` change that: see chat_ids).

The mask comes from the rendered text, not from knowledge of a template: for each assistant turn we render the
conversation up to the generation prompt (P) and up to the end of that turn (Q); the reply is Q minus P. The
text is tokenized segment by segment (prompt, reply, turn tail), so the tokens before each reply are exactly
`prompt_ids(messages[:i])`, what inference feeds the model. The tail after a reply is labelled up to and
including its first special token (`<|im_end|>` for ChatML, `<|eot_id|>` for Llama 3), not the newline after.

    >>> sample = encode_chat(tok, example, max_length=512)  # doctest: +SKIP
    >>> sorted(sample)  # doctest: +SKIP
    ['input_ids', 'labels']
"""

from __future__ import annotations

from collections.abc import ItemsView
from dataclasses import asdict, dataclass, field
from typing import Any

from temper.data.records import ChatExample, Record, TextExample
from temper.data.templates import render_prompt, to_chat_dicts
from temper.errors import DataError, TemperError

IGNORE = -100
Sample = dict[str, list[int]]


@dataclass
class EncodeStats:
    """What tokenization did to the data; always returned so truncation and drops are never silent."""

    n_rows: int = 0
    n_truncated: int = 0
    n_dropped: int = 0  # too long under truncation=drop, or no labelled token left after truncation
    lengths: list[int] = field(default_factory=list)  # token length of every row BEFORE truncation
    n_tokens: int = 0  # tokens kept in the samples
    n_label_tokens: int = 0

    def __getitem__(self, key: str) -> Any:  # stats["n_truncated"] works as well as stats.n_truncated
        return getattr(self, key)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def items(self) -> ItemsView[str, Any]:  # dict-like, for manifests: {k: v for k, v in stats.items()}
        return self.as_dict().items()

    def summary(self) -> str:
        """One line for logs, e.g. '1000 rows: 12 truncated, 0 dropped, 180,000 tokens'."""
        return (
            f"{self.n_rows} rows: {self.n_truncated} truncated, {self.n_dropped} dropped, "
            f"{self.n_tokens:,} tokens ({self.n_label_tokens:,} labelled)"
        )


def _ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []


def _tail_labels(tokenizer: Any, tail_ids: list[int]) -> list[int]:
    """Label the turn tail up to and including its first special token (the end-of-turn token)."""
    special = set(tokenizer.all_special_ids) | set(getattr(tokenizer, "added_tokens_decoder", {}))
    for k, tid in enumerate(tail_ids):
        if tid in special:
            return tail_ids[: k + 1] + [IGNORE] * (len(tail_ids) - k - 1)
    return [IGNORE] * len(tail_ids)


def chat_ids(
    tokenizer: Any,
    example: ChatExample,
    system: str | None = None,
    *,
    train_on_prompt: bool = False,
    mask_history: bool = False,
) -> tuple[list[int], list[int]]:
    """Full-length (input_ids, labels) of a conversation; raises TemperError if the template is not
    prefix-stable (rendering a longer conversation rewrites an earlier part), where no mask can be exact.

    Labels are every assistant reply plus its end-of-turn token, except replies whose row turned their loss off
    (`Message.train` False: LLaMA-Factory's `loss_weight: 0`, ms-swift's `loss: false`). Two options change that:
    `mask_history` labels only the last reply (earlier replies and their ends of turn are context), and
    `train_on_prompt` labels every token outside the replies as well (system, user turns, template tokens).

    >>> ids, labels = chat_ids(tok, example)  # doctest: +SKIP
    """
    msgs = to_chat_dicts(example, system)
    last = max((i for i, m in enumerate(msgs) if m["role"] == "assistant"), default=-1)
    # A row's own per-turn choice, in assistant-turn order (to_chat_dicts keeps the order of the messages).
    own = iter([m.train for m in example.messages if m.role == "assistant"])
    try:
        full = render_prompt(tokenizer, msgs, add_generation_prompt=False, tools=example.tools)
    except TemperError as exc:  # name the row the template refused
        raise TemperError(f"{example.source or 'a row'}: {exc.message}", hint=exc.hint) from None
    ids: list[int] = []
    labels: list[int] = []
    pos = 0  # characters of `full` already tokenized
    for i, m in enumerate(msgs):
        if m["role"] != "assistant":
            continue
        prefix = render_prompt(tokenizer, msgs[:i], add_generation_prompt=True, tools=example.tools)
        upto = render_prompt(tokenizer, msgs[: i + 1], add_generation_prompt=False, tools=example.tools)
        # Templates that trim replies (Llama 3's `| trim`) render the stripped text.
        content = m["content"] if m["content"] in upto[len(prefix) :] else m["content"].strip()
        start = upto.find(content, len(prefix)) if upto.startswith(prefix) else -1
        if start < 0 or not full.startswith(upto) or len(prefix) < pos:
            raise TemperError(
                f"{example.source or 'a row'}: the chat template does not render turn {i} as a prefix of the "
                "whole conversation, so the assistant mask cannot be computed from the rendered text.",
                hint="Use --template chatml or a Jinja template that renders earlier turns unchanged.",
            )
        end = start + len(content)
        prompt = _ids(tokenizer, full[pos : len(prefix)])
        reply = _ids(tokenizer, full[len(prefix) : end])
        tail = _ids(tokenizer, full[end : len(upto)])
        ids += prompt + reply + tail
        labels += prompt if train_on_prompt else [IGNORE] * len(prompt)
        if next(own) is False or (mask_history and i != last):
            labels += [IGNORE] * (len(reply) + len(tail))  # an earlier reply and its end of turn are context
        else:
            labels += reply + (tail if train_on_prompt else _tail_labels(tokenizer, tail))
        pos = len(upto)
    rest = _ids(tokenizer, full[pos:])
    return ids + rest, labels + (rest if train_on_prompt else [IGNORE] * len(rest))


def text_ids(tokenizer: Any, example: TextExample) -> tuple[list[int], list[int]]:
    """Continued pre-training: the tokenizer's own BOS handling, EOS appended, every token labelled."""
    ids = list(tokenizer(example.text, add_special_tokens=True)["input_ids"])
    if tokenizer.eos_token_id is not None and (not ids or ids[-1] != tokenizer.eos_token_id):
        ids.append(tokenizer.eos_token_id)
    return ids, list(ids)


def _policy(ids: list[int], labels: list[int], max_length: int, truncation: str) -> tuple[Sample | None, str]:
    """Apply the length policy; returns (sample or None, 'kept' | 'truncated' | 'dropped')."""
    if len(ids) <= max_length:
        return {"input_ids": ids, "labels": labels}, "kept"
    if truncation == "drop":
        return None, "dropped"
    ids, labels = ids[:max_length], labels[:max_length]
    # A row whose every reply was cut teaches nothing (and would give a NaN loss): count it as dropped.
    if all(x == IGNORE for x in labels):
        return None, "dropped"
    return {"input_ids": ids, "labels": labels}, "truncated"


def encode_chat(
    tokenizer: Any,
    example: ChatExample,
    max_length: int,
    truncation: str = "truncate",
    system: str | None = None,
    *,
    train_on_prompt: bool = False,
    mask_history: bool = False,
) -> Sample | None:
    """input_ids + labels of one conversation, or None when the length policy drops it.

    >>> encode_chat(tok, example, 512)["labels"][:3]  # doctest: +SKIP
    [-100, -100, -100]
    """
    ids, labels = chat_ids(
        tokenizer, example, system, train_on_prompt=train_on_prompt, mask_history=mask_history
    )
    return _policy(ids, labels, max_length, truncation)[0]


def encode_text(
    tokenizer: Any, example: TextExample, max_length: int, truncation: str = "truncate"
) -> Sample | None:
    """input_ids + labels (all tokens) of a text row, or None when dropped.

    >>> encode_text(tok, TextExample("hello"), 16)["input_ids"][-1] == tok.eos_token_id  # doctest: +SKIP
    True
    """
    ids, labels = text_ids(tokenizer, example)
    return _policy(ids, labels, max_length, truncation)[0]


def encode_dataset(
    records: list[Record],
    tokenizer: Any,
    max_length: int,
    truncation: str = "truncate",
    *,
    system: str | None = None,
    train_on_prompt: bool = False,
    mask_history: bool = False,
) -> tuple[list[Sample], EncodeStats]:
    """Tokenize every record; returns the samples and the stats (truncated/dropped counts, lengths).

    >>> samples, stats = encode_dataset(records, tok, 512)  # doctest: +SKIP
    >>> print(stats.summary())  # doctest: +SKIP
    1000 rows: 3 truncated, 0 dropped, 190,211 tokens (80,122 labelled)
    """
    if truncation not in ("truncate", "drop"):
        raise DataError(f"truncation={truncation!r}; expected 'truncate' or 'drop'")
    stats = EncodeStats()
    samples: list[Sample] = []
    for rec in records:
        if isinstance(rec, ChatExample):
            ids, labels = chat_ids(
                tokenizer, rec, system, train_on_prompt=train_on_prompt, mask_history=mask_history
            )
        elif isinstance(rec, TextExample):
            ids, labels = text_ids(tokenizer, rec)
        else:
            raise DataError(f"{rec.source}: {type(rec).__name__} is not a supervised fine-tuning record")
        stats.n_rows += 1
        stats.lengths.append(len(ids))
        sample, status = _policy(ids, labels, max_length, truncation)
        stats.n_truncated += status == "truncated"
        stats.n_dropped += status == "dropped"
        if sample is not None:
            samples.append(sample)
            stats.n_tokens += len(sample["input_ids"])
            stats.n_label_tokens += sum(x != IGNORE for x in sample["labels"])
    return samples, stats

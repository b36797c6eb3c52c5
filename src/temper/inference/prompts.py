"""Rendering chat messages into prompt text and token ids, the same way training does.

Rendering goes through `temper.data.templates.render_prompt`, the single source of truth shared with
training, so that a fine-tuned model sees at inference exactly the text it was trained on. The rendered text
already holds its special tokens, hence `add_special_tokens=False` when tokenizing.

Example:
    >>> text = render_messages(tok, [{"role": "user", "content": "Hi"}])  # doctest: +SKIP
    >>> ids = encode_prompt(tok, text)                                     # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from temper.data.templates import render_prompt
from temper.errors import TemperError


def render_messages(tokenizer: Any, messages: list[dict[str, Any]], tools: Any = None) -> str:
    """Prompt text for `messages`, ending with the assistant's generation prompt."""
    if not getattr(tokenizer, "chat_template", None):
        raise TemperError(
            "this tokenizer has no chat template, so chat messages cannot be rendered.",
            hint="Pass --template chatml (or a Jinja file), or use plain-text completions (/v1/completions).",
        )
    return render_prompt(tokenizer, messages, add_generation_prompt=True, tools=tools)


def encode_prompt(tokenizer: Any, text: str, special_tokens: bool = False) -> list[int]:
    """Token ids of a prompt. Rendered chat text carries its own special tokens; raw completions may add BOS."""
    ids: list[int] = tokenizer(text, add_special_tokens=special_tokens)["input_ids"]
    return ids

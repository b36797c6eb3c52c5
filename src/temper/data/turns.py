"""One turn of a role list (OpenAI `messages`, LLaMA-Factory `sharegpt`): its text and whether it trains; and
the shape of the whole conversation (which role may follow which).

Helpers of the converters in formats.py; like them they append or return (field, message) problems and never
raise.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from temper.data.records import Message


def kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


# Content parts of LLaMA-Factory v1 / OpenAI-style messages, written out as text. Reasoning gets the <think>
# wrapper that reasoning models (and LLaMA-Factory's default thought words) use; tool calls are their JSON.
PART_TEXT = {"text": "{}", "reasoning": "<think>\n{}\n</think>\n\n", "tool_call": "{}"}


def turn_text(turn: Mapping[str, Any], key: str, where: str, p: list[tuple[str, str]]) -> str:
    """A turn's text: a string, a list of parts ({type: text|reasoning|tool_call, text|value}), or tool_calls."""
    value = turn.get(key)
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        texts: list[str] = []
        for j, part in enumerate(value):
            part_kind = part.get("type", "text") if isinstance(part, dict) else None
            text = part.get("text", part.get("value")) if isinstance(part, dict) else None
            if part_kind not in PART_TEXT or not isinstance(text, str):
                kinds = ", ".join(PART_TEXT)
                p.append(
                    (f"{where}[{j}]", f"expected a {kinds} part with a string value, got {str(part)[:60]!r}")
                )
                continue
            if part_kind == "tool_call" and texts and not texts[-1].endswith("\n"):
                text = "\n" + text  # several calls in one turn: one JSON object per line
            texts.append(PART_TEXT[str(part_kind)].format(text))
        return "".join(texts)
    calls = turn.get("tool_calls")
    if value is None and isinstance(calls, list) and calls:
        funcs = [c.get("function", c) if isinstance(c, dict) else c for c in calls]
        return json.dumps(funcs[0] if len(funcs) == 1 else funcs, ensure_ascii=False)
    p.append(
        (where, "missing; expected a string" if value is None else f"expected a string, got {kind(value)}")
    )
    return ""


def turn_loss(turn: Mapping[str, Any], role: str, where: str, p: list[tuple[str, str]]) -> bool | None:
    """A turn's `loss_weight` (LLaMA-Factory, 0 or 1) or `loss` (ms-swift, a bool): whether an assistant turn
    trains. Other turns are context either way, so a true value there cannot be honoured and is an error."""
    for key, ok in (("loss_weight", lambda v: v in (0, 1) and not isinstance(v, bool)), ("loss", _is_bool)):
        if key not in turn or turn[key] is None:
            continue
        value = turn[key]
        if not ok(value):
            want = (
                "0 or 1 (fractional weights are not supported)" if key == "loss_weight" else "true or false"
            )
            p.append((f"{where}.{key}", f"expected {want}, got {kind(value)} {value!r}"))
            return None
        if role != "assistant":
            if value:
                p.append((f"{where}.{key}", f"only assistant turns can be trained, this is a {role} turn"))
            return None
        return bool(value)
    return None


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool)


# Which role may follow which: a tool result answers an assistant's call; the assistant then replies.
_NEXT = {"user": ("assistant",), "assistant": ("user", "tool"), "tool": ("assistant", "tool")}


FieldOf = Callable[[int, str], str]  # (turn index, "role" | "content") -> the field name in the source row
# How a problem writes a role: (our role, index of the message it is, or None for an expected role) -> text.
# Role-list formats name the file's own tag too: 'gpt' (assistant).
ShowRole = Callable[[str, int | None], str]


def plain_role(role: str, i: int | None) -> str:
    return repr(role)


def check_turns(
    messages: list[Message], field_of: FieldOf, container: str, show: ShowRole = plain_role
) -> list[tuple[str, str]]:
    """Problems with a conversation's shape: empty, bad role order, empty texts, no final assistant reply.

    >>> check_turns([Message("assistant", "hi")], lambda i, attr: f"messages[{i}].{attr}", "messages")
    [('messages[0].role', "first turn must be 'user', got 'assistant'")]
    """
    if not messages:
        return [(container, "empty conversation; expected at least a user and an assistant turn")]
    problems: list[tuple[str, str]] = []
    if messages[0].role != "user":
        problems.append(
            (field_of(0, "role"), f"first turn must be {show('user', None)}, got {show(messages[0].role, 0)}")
        )
    for i, (prev, cur) in enumerate(zip(messages, messages[1:], strict=False), start=1):
        if prev.role in _NEXT and cur.role not in _NEXT[prev.role]:
            allowed = " or ".join(show(r, None) for r in _NEXT[prev.role])
            problems.append(
                (
                    field_of(i, "role"),
                    f"after {show(prev.role, i - 1)} expected {allowed}, got {show(cur.role, i)}",
                )
            )
    for i, m in enumerate(messages):
        if m.role in ("user", "assistant") and not m.content.strip():
            problems.append((field_of(i, "content"), f"empty {m.role} text"))
    if messages[-1].role != "assistant":
        last = len(messages) - 1
        got = show(messages[-1].role, last)
        problems.append(
            (
                field_of(last, "role"),
                f"last turn must be {show('assistant', None)} (nothing to learn), got {got}",
            )
        )
    return problems

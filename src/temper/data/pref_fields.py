"""The small parsers the preference and KTO converters (pref_formats.py) share: text, messages, replies,
prompts and labels out of one row's fields, each raising the data layer's RowError with the field it read."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from temper.data.formats import RowError, ShareGPTTags
from temper.data.records import Message

Row = Mapping[str, Any]
Tags = Mapping[str, str]
NO_TAGS: Tags = {}

# sharegpt and OpenAI role spellings -> ours. function_call is an assistant turn; observation a tool result.
ROLE_MAP = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "model": "assistant",
    "bot": "assistant",
    "system": "system",
    "function_call": "assistant",
    "observation": "tool",
    "tool": "tool",
    "function": "tool",
}


def bad(field: str, message: str) -> RowError:
    """The data layer's RowError for a single problem (a converter stops at the first one it meets)."""
    return RowError([(field, message)])


def text_of(value: Any, field: str) -> str:
    """A string, or multimodal-style content parts [{"type": "text", "text"|"value": ...}] joined."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(p, dict) for p in value):
        texts = [p.get("text", p.get("value")) for p in value if p.get("type", "text") == "text"]
        if all(isinstance(t, str) for t in texts):
            return "".join(t for t in texts if t)
    raise bad(field, f"expected text, got {type(value).__name__} {str(value)[:60]!r}")


def role_keys(tags: Tags) -> tuple[str, str, dict[str, str]]:
    """(role key, content key, role map): dataset_info `tags` extend the built-in spellings."""
    if not tags:
        return "role", "content", ROLE_MAP
    t = ShareGPTTags.from_tags(tags)
    return t.role_tag, t.content_tag, {**ROLE_MAP, **t.roles()}


def message_of(item: Any, field: str, tags: Tags = NO_TAGS) -> Message:
    role_key, content_key, roles = role_keys(tags)
    if not isinstance(item, dict):
        raise bad(field, f"expected a message object, got {type(item).__name__}")
    role = item.get(role_key, item.get("role", item.get("from")))
    content = item.get(content_key, item.get("content", item.get("value")))
    if role not in roles:
        raise bad(f"{field}.{role_key}", f"unknown role {role!r}; expected one of {sorted(roles)}")
    if content is None:
        raise bad(field, f"message has no {content_key}")
    return Message(roles[role], text_of(content, f"{field}.{content_key}"))


def messages_of(value: Any, field: str, tags: Tags = NO_TAGS) -> list[Message]:
    if not isinstance(value, list) or not value:
        raise bad(field, f"expected a non-empty list of messages, got {str(value)[:60]!r}")
    return [message_of(m, f"{field}[{i}]", tags) for i, m in enumerate(value)]


def reply_of(value: Any, field: str, tags: Tags = NO_TAGS) -> str:
    """A reply given as a string, one message, or a message list whose last turn is the assistant's."""
    if isinstance(value, dict):
        msg = message_of(value, field, tags)
    elif isinstance(value, list) and value and isinstance(value[0], dict) and "type" not in value[0]:
        msg = messages_of(value, field, tags)[-1]
    else:
        text = text_of(value, field) if value is not None else None
        if not text or not text.strip():
            raise bad(field, "missing or empty reply")
        return text
    if msg.role != "assistant":
        raise bad(field, f"expected an assistant reply, got role {msg.role!r}")
    if not msg.content.strip():
        raise bad(field, "empty reply")
    return msg.content


def split_system(messages: list[Message], system: Any) -> tuple[list[Message], str | None]:
    """A leading system message moves to `system` (a `system` column wins, as in LLaMA-Factory)."""
    sys_text = system if isinstance(system, str) and system else None
    if messages and messages[0].role == "system":
        sys_text = sys_text or messages[0].content
        messages = messages[1:]
    return messages, sys_text


def check_prompt(prompt: list[Message], field: str) -> list[Message]:
    if not prompt:
        raise bad(field, "the prompt has no user turn")
    if prompt[-1].role not in ("user", "tool"):
        raise bad(field, f"the prompt must end with a user (or tool) turn, it ends with {prompt[-1].role!r}")
    if any(m.role == "system" for m in prompt):
        raise bad(field, "a system message may only come first")
    return prompt


def alpaca_prompt(row: Mapping[str, Any]) -> list[Message]:
    """instruction + input (joined by a blank line, as LLaMA-Factory does) after optional history pairs."""
    instruction = row.get("instruction", row.get("prompt"))
    if not isinstance(instruction, str) or not instruction.strip():
        raise bad("instruction", "missing or empty")
    query = row.get("input", row.get("query")) or ""
    prompt: list[Message] = []
    for i, pair in enumerate(row.get("history") or []):
        if not (isinstance(pair, list | tuple) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
            raise bad(f"history[{i}]", "expected a [user, assistant] pair of strings")
        prompt += [Message("user", pair[0]), Message("assistant", pair[1])]
    content = f"{instruction}\n\n{query}" if isinstance(query, str) and query.strip() else instruction
    return [*prompt, Message("user", content)]


def label_of(value: Any, field: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
        return value.strip().lower() in ("true", "1")
    raise bad(field, f"expected true/false, got {value!r}")


def common_prefix(a: list[Message], b: list[Message]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n

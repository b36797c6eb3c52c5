"""Row -> record converters: one pure function per source format, registered in the FORMATS dict.

A converter takes one row (a dict read from json/jsonl/csv/parquet/txt, after column renaming) and the role tags
of the dataset (LLaMA-Factory's dataset_info `tags`; empty means the defaults) and returns a record, or raises
RowError with every (field, message) problem it found in that row. The loader adds file and row number.

    >>> to_alpaca({"instruction": "Say hi", "output": "Hi!"}, {}).messages[1].content
    'Hi!'
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from temper.data.records import ChatExample, Message, Record, TextExample
from temper.data.turns import FieldOf, ShowRole, check_turns, plain_role, turn_loss, turn_text
from temper.data.turns import kind as _kind

Row = Mapping[str, Any]
Tags = Mapping[str, str]


class RowError(Exception):
    """Problems of one row: a list of (field, message). The loader prefixes them with file:row."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{f}: {m}" for f, m in problems))


def _text(row: Row, key: str, problems: list[tuple[str, str]], required: bool = True, where: str = "") -> str:
    """Read a string field; a missing/None optional field is ''. Problems are appended, never raised."""
    name = where or key
    value = row.get(key)
    if value is None:
        if required:
            problems.append((name, "missing; expected a non-empty string"))
        return ""
    if not isinstance(value, str):
        problems.append((name, f"expected a string, got {_kind(value)} {str(value)[:40]!r}"))
        return ""
    return value


def _pairs(row: Row, key: str, problems: list[tuple[str, str]]) -> list[Message]:
    """`history`: a list of [query, response] pairs, as alpaca and query-response rows carry it."""
    value = row.get(key)
    if value is None or value == "":
        return []
    if not isinstance(value, list):
        problems.append((key, f"expected a list of [query, response] pairs, got {_kind(value)}"))
        return []
    out: list[Message] = []
    for i, pair in enumerate(value):
        ok = isinstance(pair, list | tuple) and len(pair) == 2 and all(isinstance(x, str) for x in pair)
        if not ok:
            problems.append(
                (f"{key}[{i}]", f"expected a [query, response] pair of strings, got {str(pair)[:60]!r}")
            )
            continue
        out += [Message("user", pair[0]), Message("assistant", pair[1])]
    return out


def _tools(row: Row, problems: list[tuple[str, str]]) -> str | None:
    value = row.get("tools")
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, str):
        try:
            json.loads(value)
        except json.JSONDecodeError as e:
            problems.append(("tools", f"expected JSON text of tool definitions: {e}"))
        return value
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False)
    problems.append(("tools", f"expected JSON text or a list of tool definitions, got {_kind(value)}"))
    return None


def _no_media(row: Row, problems: list[tuple[str, str]]) -> None:
    """Multimodal rows would train on literal <image> tags: refuse them instead of dropping the media silently."""
    for key in ("images", "videos", "audios"):
        if row.get(key):
            problems.append((key, "multimodal rows are not supported (text-only models); remove the column"))


def _finish(
    messages: list[Message],
    system: str,
    tools: str | None,
    problems: list[tuple[str, str]],
    field_of: FieldOf,
    container: str,
    whole: bool = True,
    show: ShowRole = plain_role,
) -> ChatExample:
    # A field already reported (missing, wrong type) is not reported again as "empty". When a turn could not be
    # read at all (`whole` False: unknown role, not an object), the conversation's shape is not checked: the
    # turns left would report that gap again ("last turn must be 'assistant'") as if it were a second problem.
    seen = {f for f, _ in problems}
    if whole:
        problems += [(f, m) for f, m in check_turns(messages, field_of, container, show) if f not in seen]
    if problems:
        raise RowError(problems)
    return ChatExample(messages, system or None, tools)


def _pair_fields(n_turns: int, query: str, response: str) -> FieldOf:
    """Field names for history pairs followed by one final query/response (alpaca, query-response)."""
    n_hist = n_turns - 2
    return lambda i, attr: (
        f"history[{i // 2}][{i % 2}]" if i < n_hist else (query if i == n_hist else response)
    )


def to_alpaca(row: Row, tags: Tags) -> ChatExample:
    """instruction (+ input on a new line) -> user, output -> assistant; history pairs come first."""
    p: list[tuple[str, str]] = []
    instruction, extra = _text(row, "instruction", p), _text(row, "input", p, required=False)
    output, system = _text(row, "output", p), _text(row, "system", p, required=False)
    query = "\n".join(x for x in (instruction, extra) if x)
    msgs = _pairs(row, "history", p) + [Message("user", query), Message("assistant", output)]
    _no_media(row, p)
    return _finish(
        msgs, system, _tools(row, p), p, _pair_fields(len(msgs), "instruction", "output"), "history"
    )


def to_query_response(row: Row, tags: Tags) -> ChatExample:
    """ms-swift / legacy query-response: query, response, history ([query, response] pairs), system."""
    p: list[tuple[str, str]] = []
    query, response = _text(row, "query", p), _text(row, "response", p)
    system = _text(row, "system", p, required=False)
    msgs = _pairs(row, "history", p) + [Message("user", query), Message("assistant", response)]
    _no_media(row, p)
    return _finish(msgs, system, _tools(row, p), p, _pair_fields(len(msgs), "query", "response"), "history")


def to_swift_conversation(row: Row, tags: Tags) -> ChatExample:
    """ms-swift's sharegpt variant: {"system": ..., "conversation": [{"human": ..., "assistant": ...}]}."""
    p: list[tuple[str, str]] = []
    conv = row.get("conversation")
    system = _text(row, "system", p, required=False)
    if not isinstance(conv, list) or not conv:
        got = "an empty list" if conv == [] else _kind(conv)
        p.append(("conversation", f"expected a non-empty list of {{human, assistant}} objects, got {got}"))
        raise RowError(p)
    msgs: list[Message] = []
    for i, turn in enumerate(conv):
        if not isinstance(turn, dict):
            p.append((f"conversation[{i}]", f"expected an object with human/assistant, got {_kind(turn)}"))
            continue
        msgs.append(Message("user", _text(turn, "human", p, where=f"conversation[{i}].human")))
        msgs.append(Message("assistant", _text(turn, "assistant", p, where=f"conversation[{i}].assistant")))
    field_of: FieldOf = lambda i, attr: f"conversation[{i // 2}].{'assistant' if i % 2 else 'human'}"  # noqa: E731
    return _finish(
        msgs, system, _tools(row, p), p, field_of, "conversation", whole=len(msgs) == 2 * len(conv)
    )


@dataclass(frozen=True)
class ShareGPTTags:
    """LLaMA-Factory's sharegpt role tags, with its defaults (from/value, human/gpt/...)."""

    role_tag: str = "from"
    content_tag: str = "value"
    user_tag: str = "human"
    assistant_tag: str = "gpt"
    observation_tag: str = "observation"
    function_tag: str = "function_call"
    system_tag: str = "system"

    @classmethod
    def from_tags(cls, tags: Tags) -> ShareGPTTags:
        known = {k: v for k, v in tags.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def roles(self) -> dict[str, str]:
        # A function call is an assistant turn (trained); an observation is a tool result (not trained).
        return {
            self.user_tag: "user",
            self.assistant_tag: "assistant",
            self.function_tag: "assistant",
            self.observation_tag: "tool",
            self.system_tag: "system",
        }


def to_sharegpt(row: Row, tags: Tags) -> ChatExample:
    """`conversations` of {from, value} (or custom tags); a leading system turn becomes the system prompt."""
    t = ShareGPTTags.from_tags(tags)
    return _role_list(row, "conversations", t.role_tag, t.content_tag, t.roles())


_OPENAI_ROLES = {
    "system": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
    "function": "tool",
}


def to_messages(row: Row, tags: Tags) -> ChatExample:
    """OpenAI `messages`: role/content; content may be text parts; assistant tool_calls become JSON text."""
    return _role_list(row, "messages", "role", "content", _OPENAI_ROLES)


def _role_list(row: Row, key: str, role_tag: str, content_tag: str, roles: dict[str, str]) -> ChatExample:
    p: list[tuple[str, str]] = []
    turns = row.get(key)
    system = _text(row, "system", p, required=False)
    if not isinstance(turns, list):
        p.append(
            (
                key,
                f"missing; expected a list of {{{role_tag}, {content_tag}}} objects"
                if turns is None
                else f"expected a list of turns, got {_kind(turns)}",
            )
        )
        raise RowError(p)
    msgs: list[Message] = []
    src: list[int] = []  # source turn index of each message, so problems name the turn in the file
    tags: list[Any] = []  # the file's role tag of each message ('gpt', 'function_call'), for the same reason
    whole = True  # every turn became a message (or the system prompt)
    for i, turn in enumerate(turns):
        where = f"{key}[{i}]"
        if not isinstance(turn, dict):
            p.append((where, f"expected an object with {role_tag!r} and {content_tag!r}, got {_kind(turn)}"))
            whole = False
            continue
        tag = turn.get(role_tag)
        if tag not in roles:
            p.append(
                (
                    f"{where}.{role_tag}",
                    f"unknown role {tag!r}; expected one of {', '.join(map(repr, roles))}",
                )
            )
            whole = False
            continue
        text = turn_text(turn, content_tag, f"{where}.{content_tag}", p)
        train = turn_loss(turn, roles[tag], where, p)
        if roles[tag] == "system" and i == 0 and not msgs:
            system = system or text
            continue
        msgs.append(Message(roles[tag], text, train))
        src.append(i)
        tags.append(tag)
    replies = [m.train for m in msgs if m.role == "assistant"]
    if replies and all(t is False for t in replies):
        p.append(
            (
                key,
                "every assistant turn has its loss turned off (loss_weight 0 / loss false): nothing to learn",
            )
        )
    _no_media(row, p)
    names = {"role": role_tag, "content": content_tag}
    field_of: FieldOf = lambda i, attr: f"{key}[{src[i] if i < len(src) else i}].{names[attr]}"  # noqa: E731
    # Our roles in the file's spelling (the first tag given for a role: 'gpt' rather than 'function_call').
    tag_of = {ours: theirs for theirs, ours in reversed(roles.items())}

    def show(role: str, i: int | None) -> str:
        spelled = tags[i] if i is not None else tag_of.get(role, role)
        return repr(role) if spelled == role else f"{spelled!r} ({role})"

    return _finish(msgs, system, _tools(row, p), p, field_of, key, whole, show)


def to_text(row: Row, tags: Tags) -> TextExample:
    """Plain text for continued pre-training: `text`, or a row whose only field is `response`."""
    p: list[tuple[str, str]] = []
    key = "text" if "text" in row or "response" not in row else "response"
    text = _text(row, key, p)
    if not p and not text.strip():
        p.append((key, "empty text"))
    if p:
        raise RowError(p)
    return TextExample(text)


@dataclass(frozen=True)
class Format:
    """A source format: its converter, how to recognise its rows, and LLaMA-Factory column names it maps."""

    convert: Callable[[Row, Tags], Record]
    detect: Callable[[Row], bool]
    help: str
    # dataset_info.json `columns` keys (LLaMA-Factory names) -> this format's field names.
    lf_columns: Mapping[str, str] = field(default_factory=dict)


def has_keys(*keys: str) -> Callable[[Row], bool]:
    """A `detect` for rows that hold every one of `keys` (shared with the other tasks' format tables)."""
    return lambda row: all(k in row for k in keys)


# Plain dict registry. Order matters for auto-detection: the first format whose `detect` matches wins.
FORMATS: dict[str, Format] = {
    "messages": Format(to_messages, has_keys("messages"), "OpenAI messages: [{role, content}]"),
    "sharegpt": Format(
        to_sharegpt,
        has_keys("conversations"),
        "conversations: [{from, value}] with custom role tags",
        {"messages": "conversations", "system": "system", "tools": "tools"},
    ),
    "swift_conversation": Format(
        to_swift_conversation,
        has_keys("conversation"),
        "ms-swift {system, conversation: [{human, assistant}]}",
    ),
    "alpaca": Format(
        to_alpaca,
        has_keys("instruction"),
        "instruction/input/output/system/history",
        {
            "prompt": "instruction",
            "query": "input",
            "response": "output",
            "history": "history",
            "system": "system",
            "tools": "tools",
        },
    ),
    "query_response": Format(to_query_response, has_keys("query"), "query/response/history/system"),
    "text": Format(
        to_text,
        lambda row: "text" in row or set(row) == {"response"},
        "plain text: .txt, jsonl `text`, or rows with only `response`",
        {"prompt": "text", "response": "text"},
    ),
}


def detect_format(row: Row, formats: Mapping[str, Format] = FORMATS) -> str | None:
    """The first format in `formats` that recognises the row's keys, or None.

    >>> detect_format({"query": "q", "response": "r"})
    'query_response'
    """
    if not isinstance(row, Mapping):
        return None
    for name, fmt in formats.items():
        if fmt.detect(row):
            return name
    return None

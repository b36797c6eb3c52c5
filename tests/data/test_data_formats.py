"""Row converters, one format at a time: valid rows become records, malformed rows name the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from temper.data.formats import FORMATS, RowError, detect_format
from temper.data.records import ChatExample, Message, TextExample


def problems(fmt: str, row: dict[str, Any], tags: dict[str, str] | None = None) -> list[tuple[str, str]]:
    with pytest.raises(RowError) as info:
        FORMATS[fmt].convert(row, tags or {})
    return info.value.problems


def fields(fmt: str, row: dict[str, Any]) -> list[str]:
    return [f for f, _ in problems(fmt, row)]


def test_alpaca_joins_instruction_and_input_and_keeps_history_and_system() -> None:
    row = {
        "instruction": "Translate",
        "input": "bonjour",
        "output": "hello",
        "system": "Be terse.",
        "history": [["hi", "hey"]],
    }
    rec = FORMATS["alpaca"].convert(row, {})
    assert rec == ChatExample(
        [
            Message("user", "hi"),
            Message("assistant", "hey"),
            Message("user", "Translate\nbonjour"),
            Message("assistant", "hello"),
        ],
        system="Be terse.",
    )


def test_query_response_and_swift_conversation() -> None:
    qr = FORMATS["query_response"].convert({"query": "q", "response": "r", "history": [["a", "b"]]}, {})
    assert isinstance(qr, ChatExample)
    assert [m.content for m in qr.messages] == ["a", "b", "q", "r"]
    sc = FORMATS["swift_conversation"].convert(
        {
            "system": "S",
            "conversation": [{"human": "h1", "assistant": "a1"}, {"human": "h2", "assistant": "a2"}],
        },
        {},
    )
    assert isinstance(sc, ChatExample)
    assert sc.system == "S"
    assert [(m.role, m.content) for m in sc.messages] == [
        ("user", "h1"),
        ("assistant", "a1"),
        ("user", "h2"),
        ("assistant", "a2"),
    ]


def test_sharegpt_with_function_calls_and_custom_tags() -> None:
    row = {
        "conversations": [
            {"from": "system", "value": "sys"},
            {"from": "human", "value": "weather?"},
            {"from": "function_call", "value": '{"name": "w"}'},
            {"from": "observation", "value": '{"t": 20}'},
            {"from": "gpt", "value": "20 degrees"},
        ],
        "tools": '[{"name": "w"}]',
    }
    rec = FORMATS["sharegpt"].convert(row, {})
    assert isinstance(rec, ChatExample)
    assert rec.system == "sys" and rec.tools == '[{"name": "w"}]'
    assert [m.role for m in rec.messages] == ["user", "assistant", "tool", "assistant"]
    tags = {"role_tag": "role", "content_tag": "text", "user_tag": "U", "assistant_tag": "A"}
    custom = FORMATS["sharegpt"].convert(
        {"conversations": [{"role": "U", "text": "x"}, {"role": "A", "text": "y"}]}, tags
    )
    assert isinstance(custom, ChatExample)
    assert [(m.role, m.content) for m in custom.messages] == [("user", "x"), ("assistant", "y")]


def test_messages_with_text_parts_and_tool_calls() -> None:
    row = {
        "messages": [
            {"role": "system", "content": "sys"},
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "value": "b"}]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{}"}}],
            },
            {"role": "tool", "content": "42"},
            {"role": "assistant", "content": "done"},
        ]
    }
    rec = FORMATS["messages"].convert(row, {})
    assert isinstance(rec, ChatExample)
    assert rec.system == "sys"
    assert rec.messages[0].content == "ab"
    assert rec.messages[1].content == '{"name": "f", "arguments": "{}"}'


def test_text_rows() -> None:
    assert FORMATS["text"].convert({"text": "abc"}, {}) == TextExample("abc")
    assert FORMATS["text"].convert({"response": "only"}, {}) == TextExample("only")
    assert fields("text", {"text": "   "}) == ["text"]
    assert fields("text", {"text": 5}) == ["text"]


@pytest.mark.parametrize(
    ("fmt", "row", "expected"),
    [
        # missing field
        ("alpaca", {"instruction": "x"}, ["output"]),
        ("query_response", {"response": "r"}, ["query"]),
        ("sharegpt", {"tools": "[]"}, ["conversations"]),
        (
            "messages",
            {"messages": [{"role": "user"}, {"role": "assistant", "content": "a"}]},
            ["messages[0].content"],
        ),
        ("swift_conversation", {"conversation": [{"human": "h"}]}, ["conversation[0].assistant"]),
        # wrong type
        ("alpaca", {"instruction": "x", "output": 3}, ["output"]),
        ("alpaca", {"instruction": "x", "output": "y", "history": "nope"}, ["history"]),
        ("query_response", {"query": "q", "response": "r", "history": [["only one"]]}, ["history[0]"]),
        ("sharegpt", {"conversations": "hi"}, ["conversations"]),
        (
            "messages",
            {"messages": [{"role": "user", "content": 1}, {"role": "assistant", "content": "a"}]},
            ["messages[0].content"],
        ),
        # empty conversation
        ("sharegpt", {"conversations": []}, ["conversations"]),
        ("messages", {"messages": []}, ["messages"]),
        ("swift_conversation", {"conversation": []}, ["conversation"]),
        # bad role order
        (
            "sharegpt",
            {"conversations": [{"from": "gpt", "value": "a"}, {"from": "human", "value": "b"}]},
            ["conversations[0].from", "conversations[1].from"],
        ),
        (
            "messages",
            {
                "messages": [
                    {"role": "user", "content": "a"},
                    {"role": "user", "content": "b"},
                    {"role": "assistant", "content": "c"},
                ]
            },
            ["messages[1].role"],
        ),
        # unknown role tag: only the root cause, not the "last turn must be 'gpt'" that the turns left would add
        (
            "sharegpt",
            {"conversations": [{"from": "human", "value": "a"}, {"from": "bot", "value": "b"}]},
            ["conversations[1].from"],
        ),
        ("messages", {"messages": [{"role": "user", "content": "a"}, "b"]}, ["messages[1]"]),
        ("swift_conversation", {"conversation": [{"human": "h", "assistant": "a"}, 7]}, ["conversation[1]"]),
    ],
)
def test_malformed_rows_name_the_field(fmt: str, row: dict[str, Any], expected: list[str]) -> None:
    got = fields(fmt, row)
    assert got == expected, problems(fmt, row)


def test_a_turn_can_turn_its_own_loss_off(lf: Path) -> None:
    user, bot = {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}
    row = {"messages": [user, {**bot, "loss": False}, user, {**bot, "loss_weight": 1.0}]}
    assert [m.train for m in FORMATS["messages"].convert(row, {}).messages] == [None, False, None, True]
    sharegpt = {
        "conversations": [{"from": "human", "value": "q", "loss_weight": 0}, {"from": "gpt", "value": "a"}]
    }
    assert [m.train for m in FORMATS["sharegpt"].convert(sharegpt, {}).messages] == [None, None]
    # LLaMA-Factory's v1 demo marks every turn: users 0.0 (context), assistants 1.0 (trained).
    from temper.data.load import load_records

    records = load_records([str(lf / "v1_sft_demo.jsonl")], model_name="E", model_author="A")
    turns = [m for r in records if isinstance(r, ChatExample) for m in r.messages]
    assert {(m.role, m.train) for m in turns} == {("user", None), ("assistant", True)}


@pytest.mark.parametrize(
    ("turn", "field", "message"),
    [
        ({"role": "assistant", "content": "a", "loss_weight": 0.5}, "messages[1].loss_weight", "0 or 1"),
        ({"role": "assistant", "content": "a", "loss": "no"}, "messages[1].loss", "true or false, got str"),
        ({"role": "assistant", "content": "a", "loss": False}, "messages", "nothing to learn"),
    ],
)
def test_bad_or_useless_turn_losses_are_row_errors(turn: dict[str, Any], field: str, message: str) -> None:
    got = problems("messages", {"messages": [{"role": "user", "content": "q"}, turn]})
    assert len(got) == 1 and got[0][0] == field and message in got[0][1], got
    trained_user = {
        "messages": [{"role": "user", "content": "q", "loss": True}, {"role": "assistant", "content": "a"}]
    }
    assert problems("messages", trained_user) == [
        ("messages[0].loss", "only assistant turns can be trained, this is a user turn")
    ]


def test_problem_messages_say_what_was_expected() -> None:
    (field, message), *_ = problems("alpaca", {"instruction": "x", "output": 3})
    assert field == "output" and "expected a string, got int" in message
    order = dict(
        problems(
            "messages",
            {
                "messages": [
                    {"role": "user", "content": "a"},
                    {"role": "user", "content": "b"},
                    {"role": "assistant", "content": "c"},
                ]
            },
        )
    )
    assert order["messages[1].role"] == "after 'user' expected 'assistant', got 'user'"


def test_field_index_counts_a_leading_system_turn() -> None:
    row = {
        "conversations": [
            {"from": "system", "value": "s"},
            {"from": "human", "value": "a"},
            {"from": "human", "value": "b"},
            {"from": "gpt", "value": "c"},
        ]
    }
    assert fields("sharegpt", row) == ["conversations[2].from"]


@pytest.mark.parametrize(
    ("row", "fmt"),
    [
        ({"instruction": "", "input": "", "output": ""}, "alpaca"),
        ({"conversations": []}, "sharegpt"),
        ({"messages": []}, "messages"),
        ({"query": "q", "response": "r", "tag": "zh"}, "query_response"),
        ({"system": "s", "conversation": []}, "swift_conversation"),
        ({"text": "t"}, "text"),
        ({"response": "r"}, "text"),
        ({"foo": 1}, None),
    ],
)
def test_detect_format(row: dict[str, Any], fmt: str | None) -> None:
    assert detect_format(row) == fmt

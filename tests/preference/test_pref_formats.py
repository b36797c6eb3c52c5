"""Row -> PreferenceExample / KTOExample converters, row by row, and through the data layer's loader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from temper.data.load import load_records
from temper.data.pref_formats import KTO_FORMATS, PREFERENCE_FORMATS, convert_rows
from temper.data.records import KTOExample, Message, PreferenceExample
from temper.errors import DataError

U = Message("user", "Hi?")


def convert(name: str, row: dict, tags: dict | None = None) -> object:
    formats = KTO_FORMATS if name in KTO_FORMATS else PREFERENCE_FORMATS
    return formats[name].convert(row, tags or {})


def test_llamafactory_sharegpt_ranking() -> None:
    row = {
        "conversations": [{"from": "system", "value": "Be kind."}, {"from": "human", "value": "Hi?"}],
        "chosen": {"from": "gpt", "value": "Hello!"},
        "rejected": {"from": "gpt", "value": "Go away."},
    }
    assert convert("sharegpt_ranking", row) == PreferenceExample([U], "Hello!", "Go away.", "Be kind.")


def test_llamafactory_alpaca_ranking_with_history() -> None:
    row = {
        "instruction": "Sum",
        "input": "2+2",
        "chosen": "4",
        "rejected": "5",
        "history": [["a", "b"]],
        "system": "S",
    }
    ex = convert("alpaca_ranking", row)
    assert ex == PreferenceExample(
        [Message("user", "a"), Message("assistant", "b"), Message("user", "Sum\n\n2+2")], "4", "5", "S"
    )


def test_swift_rejected_response_and_rejected_messages() -> None:
    msgs = [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello!"}]
    assert convert("swift_rejected", {"messages": msgs, "rejected_response": "No."}) == PreferenceExample(
        [U], "Hello!", "No."
    )
    rejected = [msgs[0], {"role": "assistant", "content": [{"type": "text", "text": "No."}]}]
    assert convert("swift_rejected", {"messages": msgs, "rejected_messages": rejected}).rejected == "No."
    other_prompt = [{"role": "user", "content": "Else?"}, {"role": "assistant", "content": "No."}]
    with pytest.raises(Exception, match="rejected_messages"):
        convert("swift_rejected", {"messages": msgs, "rejected_messages": other_prompt})


def test_trl_standard_conversational_and_implicit_prompt() -> None:
    assert convert("trl", {"prompt": "Hi?", "chosen": "Hello!", "rejected": "No."}) == PreferenceExample(
        [U], "Hello!", "No."
    )
    conv = {
        "prompt": [{"role": "user", "content": "Hi?"}],
        "chosen": [{"role": "assistant", "content": "Hello!"}],
        "rejected": [{"role": "assistant", "content": "No."}],
    }
    assert convert("trl", conv) == PreferenceExample([U], "Hello!", "No.")
    implicit = {
        "chosen": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello!"}],
        "rejected": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "No."}],
    }
    assert convert("trl", implicit) == PreferenceExample([U], "Hello!", "No.")


def test_kto_tag_label_and_trl_unpaired() -> None:
    msgs = [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello!"}]
    assert convert("kto_tag", {"messages": msgs, "label": True}) == KTOExample([U], "Hello!", True)
    assert convert("kto_tag", {"messages": msgs, "kto_tag": "false"}).label is False  # type: ignore[attr-defined]
    alpaca = convert("kto_tag", {"instruction": "Hi?", "output": "Yo", "kto_tag": 1})
    assert alpaca == KTOExample([U], "Yo", True)
    assert convert("trl_unpaired", {"prompt": "Hi?", "completion": "Yo", "label": False}) == KTOExample(
        [U], "Yo", False
    )


def test_custom_sharegpt_tags() -> None:
    tags = {"role_tag": "speaker", "content_tag": "text", "user_tag": "me", "assistant_tag": "bot"}
    row = {
        "conversations": [{"speaker": "me", "text": "Hi?"}],
        "chosen": {"speaker": "bot", "text": "Yo"},
        "rejected": "No",
    }
    assert convert("sharegpt_ranking", row, tags) == PreferenceExample([U], "Yo", "No")


def test_every_problem_is_reported_with_row_and_field() -> None:
    rows = [
        ("f.json:1", {"prompt": "Hi?", "chosen": "Yo", "rejected": ""}),
        ("f.json:2", {"prompt": "Hi?", "chosen": {"role": "user", "content": "x"}, "rejected": "No"}),
        ("f.json:3", {"messages": [{"role": "assistant", "content": "x"}], "rejected_response": "y"}),
        ("f.json:4", {"weird": 1}),
        ("f.json:5", {"prompt": "Hi?", "chosen": "Yo", "rejected": "No"}),
    ]
    with pytest.raises(DataError) as err:
        convert_rows(rows, PREFERENCE_FORMATS)
    problems = err.value.problems
    assert len(problems) == 4
    assert problems[0] == "f.json:1:rejected: missing or empty reply"
    assert problems[1].startswith("f.json:2:chosen: expected an assistant reply")
    assert problems[2].startswith("f.json:3:messages: ")
    assert problems[3].startswith("f.json:4: cannot tell the format")
    with pytest.raises(DataError, match="kto_tag: expected true/false"):
        convert_rows(
            [
                (
                    "k:1",
                    {
                        "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
                        "kto_tag": "maybe",
                    },
                )
            ],
            KTO_FORMATS,
        )


def test_loader_reads_files_and_dataset_info(tmp_path: Path) -> None:
    (tmp_path / "pairs.jsonl").write_text(
        json.dumps({"instruction": "Hi?", "good": "Yo", "bad": "No"}) + "\n"
    )
    info = {
        "mine": {
            "file_name": "pairs.jsonl",
            "ranking": True,
            "columns": {"prompt": "instruction", "chosen": "good", "rejected": "bad"},
        }
    }
    (tmp_path / "dataset_info.json").write_text(json.dumps(info))
    records = load_records(["mine"], dataset_dir=tmp_path, converters=PREFERENCE_FORMATS)
    assert records == [PreferenceExample([U], "Yo", "No", source=f"{tmp_path / 'pairs.jsonl'}:1")]


def test_real_demo_files(shared_data: Path) -> None:
    lf = shared_data / "llamafactory"
    dpo = load_records(["dpo_en_demo"], dataset_dir=lf, converters=PREFERENCE_FORMATS)
    assert len(dpo) == 300 and all(
        isinstance(r, PreferenceExample) and r.prompt[-1].role == "user" for r in dpo
    )
    kto = load_records(["kto_en_demo"], dataset_dir=lf, converters=KTO_FORMATS)
    assert len(kto) == 300 and sum(r.label for r in kto) == 150  # type: ignore[union-attr]
    assert len(load_records([str(lf / "dpo_en_demo.json")], converters=PREFERENCE_FORMATS)) == 300
    v1 = load_records(
        [str(lf / "v1_dpo_demo.jsonl")], converters=PREFERENCE_FORMATS
    )  # chosen/rejected_messages
    assert len(v1) == 10 and v1[0].system  # type: ignore[union-attr]

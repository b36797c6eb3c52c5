"""Which files are read: dataset_info.json entries (their `columns` map, misspelled keys), folders given where a
file goes, and the dataset names the hints list."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from temper.cli import main
from temper.data.load import load_records
from temper.data.sources import check_entry, dataset_info
from temper.errors import DataError


def _info_dir(tmp_path: Path, info: dict[str, Any], files: dict[str, Any]) -> Path:
    for name, rows in files.items():
        (tmp_path / name).write_text(json.dumps(rows))
    (tmp_path / "dataset_info.json").write_text(json.dumps(info))
    return tmp_path


def _problems(names: list[str], dataset_dir: Path) -> list[str]:
    with pytest.raises(DataError) as err:
        load_records(names, dataset_dir=dataset_dir)
    return err.value.problems


def test_mapped_columns_are_the_ones_required_and_named_in_errors(tmp_path: Path) -> None:
    qa = {"prompt": "q", "response": "a"}
    data = _info_dir(
        tmp_path,
        {
            "mine": {"file_name": "mine.json", "columns": qa},
            "defaults": {"file_name": "defaults.json", "columns": qa},
            "chat": {
                "file_name": "chat.json",
                "formatting": "sharegpt",
                "columns": {"messages": "dialog"},
                "tags": {"role_tag": "who", "content_tag": "said", "user_tag": "me", "assistant_tag": "bot"},
            },
        },
        {
            "mine.json": [{"q": "hi", "a": "yo"}, {"q": "hi"}],
            # The default names (instruction/output) are not read when the entry maps other columns.
            "defaults.json": [{"instruction": "hi", "output": "yo"}],
            "chat.json": [{"dialog": [{"who": "bot", "said": "hi"}, {"who": "me", "said": "yo"}]}],
        },
    )
    assert _problems(["mine"], data) == [f"{data / 'mine.json'}:2:a: missing; expected a non-empty string"]
    assert _problems(["defaults"], data) == [
        f"{data / 'defaults.json'}:1:q: missing; expected a non-empty string",
        f"{data / 'defaults.json'}:1:a: missing; expected a non-empty string",
    ]
    # The file's own container and role tags, not temper's `conversations` / 'user'.
    assert _problems(["chat"], data) == [
        f"{data / 'chat.json'}:1:dialog[0].who: first turn must be 'me' (user), got 'bot' (assistant)",
        f"{data / 'chat.json'}:1:dialog[1].who: last turn must be 'bot' (assistant) (nothing to learn), got 'me' "
        "(user)",
    ]


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        (
            {"file_name": "a.json", "colums": {"prompt": "q"}},
            "unknown key 'colums' (did you mean 'columns'?)",
        ),
        (
            {"file_name": "a.json", "columns": {"prompt": "q", "respones": "a"}},
            "unknown key 'respones' in columns (did you mean 'response'?)",
        ),
        (
            {"file_name": "a.json", "formatting": "sharegpt", "tags": {"role_tg": "who"}},
            "unknown key 'role_tg' in tags (did you mean 'role_tag'?)",
        ),
        ({"file_name": "a.json", "columns": ["q", "a"]}, "'columns' must be an object"),
    ],
)
def test_misspelled_dataset_info_keys_are_errors(tmp_path: Path, entry: dict[str, Any], says: str) -> None:
    data = _info_dir(tmp_path, {"mine": entry}, {"a.json": [{"instruction": "hi", "output": "yo", "q": "x"}]})
    with pytest.raises(DataError) as err:
        load_records(["mine"], dataset_dir=data)
    (problem,) = err.value.problems
    assert problem.startswith(f"mine: {data / 'dataset_info.json'}: entry 'mine': "), problem
    assert says in problem


def test_every_key_llamafactory_reads_is_accepted(tmp_path: Path, lf: Path) -> None:
    info = dataset_info(lf)
    for name, entry in info.items():  # 104 entries: hub, file, sharegpt, ranking, kto, multimodal
        check_entry(lf / "dataset_info.json", name, entry)
    entry = {
        "file_name": "a.json",
        "formatting": "alpaca",
        "ranking": False,
        "subset": "default",
        "split": "train",
        "folder": "data",
        "num_samples": 1,
        "revision": "main",
        "columns": {"prompt": "instruction", "query": "input", "response": "output", "system": "system"},
        "tags": {"role_tag": "from", "content_tag": "value", "observation_tag": "observation"},
    }
    data = _info_dir(tmp_path, {"all": entry}, {"a.json": [{"instruction": "hi", "output": "yo"}]})
    assert len(load_records(["all"], dataset_dir=data)) == 1


def test_a_folder_given_as_a_data_file(lf: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "check", str(lf)]) == 1
    err = capsys.readouterr().err
    assert f"{lf} is a LLaMA-Factory data folder (it holds dataset_info.json), not a data file" in err
    assert f"`temper data check --dataset-dir {lf} --dataset NAME`" in err
    # ... and the command the hint shows works as written.
    assert main(["data", "check", "--dataset-dir", str(lf), "--dataset", "identity,wiki_demo"]) == 0
    assert "wiki_demo.txt: 30 rows, format text, ok" in capsys.readouterr().out
    (tmp_path / "rows.jsonl").write_text(json.dumps({"instruction": "hi", "output": "yo"}) + "\n")
    assert main(["data", "check", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path} is a directory; expected a data file (.json, .jsonl" in err
    assert f"hint: Pass one of its data files: {tmp_path / 'rows.jsonl'}." in err


def test_hints_list_only_the_datasets_whose_files_exist(lf: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # LLaMA-Factory's index names demo files that its data folder does not ship (glaive_toolcall_zh_demo.json).
    assert not (lf / "glaive_toolcall_zh_demo.json").exists() and not (lf / "dpo_zh_demo.json").exists()
    for target in (lf / "dataset_info.json", lf):
        assert main(["data", "check", str(target)]) == 1
        err = capsys.readouterr().err
        local = err.split("(local ones: ", 1)[1].split(")", 1)[0].split(", ")
        assert local == [
            "identity",
            "alpaca_en_demo",
            "alpaca_zh_demo",
            "glaive_toolcall_en_demo",
            "mllm_demo",
            "mllm_audio_demo",
            "mllm_video_demo",
            "mllm_video_audio_demo",
            "dpo_en_demo",
            "kto_en_demo",
            "wiki_demo",
            "c4_demo",
        ]


def test_openai_formatting_reads_messages_and_an_unknown_formatting_is_named(tmp_path: Path) -> None:
    """LLaMA-Factory's `formatting: openai` (a message list with OpenAI's role/content tags) was read as alpaca
    and every row failed for a missing `instruction`; a misspelled formatting was read as alpaca too."""
    tags = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
            "system_tag": "system"}  # fmt: skip
    rows = [{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                          {"role": "assistant", "content": "Hello."}]}]  # fmt: skip
    entry = {
        "file_name": "chat.json",
        "formatting": "openai",
        "columns": {"messages": "messages"},
        "tags": tags,
    }
    data = _info_dir(
        tmp_path, {"chat": entry, "typo": {**entry, "formatting": "sharegtp"}}, {"chat.json": rows}
    )
    (record,) = load_records(["chat"], dataset_dir=data)
    assert record.system == "Be brief."
    assert [(m.role, m.content) for m in record.messages] == [("user", "Hi"), ("assistant", "Hello.")]
    with pytest.raises(DataError) as err:
        load_records(["typo"], dataset_dir=data)
    assert "formatting 'sharegtp' (did you mean 'sharegpt'?)" in str(err.value)

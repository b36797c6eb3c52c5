"""Loading real files, dataset_info dirs, sampling, placeholders, CSV/parquet, and the all-at-once report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from temper.data.load import load_datasets, load_records, sample, split_validation
from temper.data.records import ChatExample, TextExample
from temper.errors import DataError


@pytest.mark.parametrize(
    ("name", "fmt", "rows"),
    [
        ("alpaca_en_demo.json", "alpaca", 999),
        ("alpaca_zh_demo.json", "alpaca", 1000),
        ("identity.json", "alpaca", 91),
        ("glaive_toolcall_en_demo.json", "sharegpt", 300),
        ("c4_demo.jsonl", "text", 300),
        ("wiki_demo.txt", "text", 30),
        ("v1_sft_demo.jsonl", "messages", 500),
        ("reason_tool_use_demo_50.jsonl", "messages", 50),  # reasoning + tool_call content parts
    ],
)
def test_real_llamafactory_files(lf: Path, name: str, fmt: str, rows: int) -> None:
    (item,) = load_datasets([str(lf / name)], model_name="Ember", model_author="us")
    assert (item.format, item.n_rows, len(item.records)) == (fmt, rows, rows)
    assert item.records[0].source == f"{lf / name}:1"


def test_alpaca_zh_content(lf: Path) -> None:
    rec = load_records([str(lf / "alpaca_zh_demo.json")])[0]
    raw = json.loads((lf / "alpaca_zh_demo.json").read_text())[0]
    assert isinstance(rec, ChatExample)
    assert rec.messages[0].content == "\n".join(x for x in (raw["instruction"], raw["input"]) if x)
    assert rec.messages[1].content == raw["output"]


def test_glaive_toolcalls_keep_tools_and_roles(lf: Path) -> None:
    records = load_records([str(lf / "glaive_toolcall_en_demo.json")])
    with_calls = [
        r for r in records if isinstance(r, ChatExample) and any(m.role == "tool" for m in r.messages)
    ]
    assert len(with_calls) > 100
    assert all(r.tools and json.loads(r.tools) for r in with_calls)
    first = with_calls[0]
    call = first.messages[[m.role for m in first.messages].index("tool") - 1]
    assert call.role == "assistant" and "name" in json.loads(call.content)


def test_identity_placeholders_filled(lf: Path) -> None:
    records = load_records([str(lf / "identity.json")], model_name="Ember", model_author="the temper team")
    text = json.dumps([r.messages[1].content for r in records if isinstance(r, ChatExample)])
    assert "{{" not in text and "Ember" in text and "the temper team" in text


def test_unfilled_placeholders_are_counted_against_the_whole_file(
    lf: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rows = json.loads((lf / "identity.json").read_text(encoding="utf-8"))
    with_placeholders = sum("{{" in json.dumps(r, ensure_ascii=False) for r in rows)
    # `file#N` keeps N rows, but every row of the file is read and checked, so the count is the file's
    load_records([f"{lf / 'identity.json'}#10"])
    assert (
        f"{with_placeholders} of the file's {len(rows)} row(s) keep {{{{name}}}}/{{{{author}}}}"
        in caplog.text
    )
    caplog.clear()
    load_records([str(lf / "identity.json")], model_name="Ember", model_author="us")
    assert "placeholders" not in caplog.text


def test_ms_swift_self_cognition_upper_placeholders(swift: Path) -> None:
    path = swift / "legacy/swift/llm/data/self_cognition.jsonl"
    (item,) = load_datasets([str(path)], model_name="Ember", model_author="Temper")
    assert item.format == "query_response" and item.n_rows > 100
    first = item.records[0]
    assert isinstance(first, ChatExample)
    assert first.messages[1].content.startswith("我是Ember，由Temper训练的")


def test_two_names_fill_zh_rows_with_the_first_as_ms_swift_does(swift: Path, lf: Path) -> None:
    path = swift / "legacy/swift/llm/data/self_cognition.jsonl"
    rows = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]
    records = load_records(
        [str(path), str(lf / "identity.json")],
        model_name=["小黄", "Xiao Huang"],
        model_author=["魔搭", "ModelScope"],
    )
    replies = [r.messages[1].content for r in records if isinstance(r, ChatExample)]
    tags = [row["tag"] for row in rows] + ["(none)"] * (len(replies) - len(rows))  # identity.json: untagged
    assert len(replies) == len(rows) + 91 and "{{" not in json.dumps(replies, ensure_ascii=False)
    for tag, reply in zip(tags, replies, strict=True):
        if tag == "zh":
            assert "Xiao Huang" not in reply and "ModelScope" not in reply
        else:
            assert "小黄" not in reply and "魔搭" not in reply
    assert replies[0].startswith("我是小黄，由魔搭训练的")
    assert any("Xiao Huang" in r and "ModelScope" in r for r in replies[len(rows) :])


def test_a_hub_dataset_id_says_temper_reads_local_files(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        load_records(["AI-ModelScope/alpaca-gpt4-data-en#500", "swift/self-cognition#500"])
    assert len(err.value.problems) == 2 and all("dataset id" in p for p in err.value.problems)
    assert str(err.value.hint).count("Download it") == 1


def test_ms_swift_query_response_with_history(swift: Path) -> None:
    path = swift / "legacy/examples/pytorch/llm/eval_example/custom_general_qa/default.jsonl"
    records = load_records([str(path)])
    assert len(records) == 3 and isinstance(records[0], ChatExample)
    assert records[0].messages[0].content == "中国的首都是哪里？"


def test_dataset_dir_names_mix_and_sample(lf: Path) -> None:
    loaded = load_datasets(
        ["identity,alpaca_en_demo#10", "glaive_toolcall_en_demo#7", "wiki_demo"], dataset_dir=lf
    )
    assert [(x.format, len(x.records)) for x in loaded] == [
        ("alpaca", 91),
        ("alpaca", 10),
        ("sharegpt", 7),
        ("text", 30),
    ]
    records = load_records(["identity", "wiki_demo#3"], dataset_dir=lf)
    assert len(records) == 94 and isinstance(records[-1], TextExample)


def test_dataset_info_columns_and_tags(tmp_path: Path) -> None:
    rows = [{"dialog": [{"who": "me", "said": "hi"}, {"who": "bot", "said": "hello"}], "sys": "S"}]
    (tmp_path / "d.json").write_text(json.dumps(rows))
    (tmp_path / "q.jsonl").write_text(json.dumps({"question": "2+2?", "answer": "4"}) + "\n")
    info = {
        "chat": {
            "file_name": "d.json",
            "formatting": "sharegpt",
            "columns": {"messages": "dialog", "system": "sys"},
            "tags": {"role_tag": "who", "content_tag": "said", "user_tag": "me", "assistant_tag": "bot"},
        },
        "qa": {"file_name": "q.jsonl", "columns": {"prompt": "question", "response": "answer"}},
        "hub": {"hf_hub_url": "someone/remote"},
        "qa3": {
            "file_name": "q.jsonl",
            "columns": {"prompt": "question", "response": "answer"},
            "num_samples": 3,
        },
        "bad_n": {"file_name": "q.jsonl", "num_samples": "all"},
    }
    (tmp_path / "dataset_info.json").write_text(json.dumps(info))
    # num_samples samples like name#N (here: upsampling the one row); an explicit #N wins.
    assert len(load_records(["qa3"], dataset_dir=tmp_path)) == 3
    assert len(load_records(["qa3#2"], dataset_dir=tmp_path)) == 2
    with pytest.raises(DataError, match="num_samples must be a positive integer, got 'all'"):
        load_records(["bad_n"], dataset_dir=tmp_path)
    chat, qa = load_records(["chat", "qa"], dataset_dir=tmp_path)
    assert isinstance(chat, ChatExample) and chat.system == "S"
    assert [(m.role, m.content) for m in chat.messages] == [("user", "hi"), ("assistant", "hello")]
    assert isinstance(qa, ChatExample) and qa.messages[1].content == "4"
    with pytest.raises(DataError) as info_err:
        load_records(["hub", "missing"], dataset_dir=tmp_path)
    assert len(info_err.value.problems) == 2 and "offline" in info_err.value.problems[0]


def test_sampling_is_seeded_and_deterministic(lf: Path) -> None:
    spec = [str(lf / "alpaca_en_demo.json#50")]
    a = [r.source for r in load_records(spec, seed=1)]
    b = [r.source for r in load_records(spec, seed=1)]
    c = [r.source for r in load_records(spec, seed=2)]
    assert a == b and a != c and len(a) == 50 and len(set(a)) == 50
    assert sample(list(range(3)), 7, seed=0)[:6] == [0, 1, 2, 0, 1, 2]  # upsampling repeats the whole set


def test_split_validation() -> None:
    train, val = split_validation(list(range(100)), 0.1, seed=3)
    assert (len(train), len(val)) == (90, 10) and sorted(train + val) == list(range(100))
    assert split_validation(list(range(100)), 0.1, seed=3) == (train, val)
    assert len(split_validation(list(range(100)), 7, seed=3)[1]) == 7
    assert split_validation([1, 2], 0, seed=3) == ([1, 2], [])
    with pytest.raises(DataError):
        split_validation([1, 2], 2, seed=3)


def test_csv_cells_stay_strings_and_empty_cells_are_absent(tmp_path: Path) -> None:
    path = tmp_path / "qa.csv"
    path.write_text(
        'instruction,input,output,system\nWhat is 6*7?,,42,\n"Pad it",7,007,Be exact.\n', encoding="utf-8"
    )
    first, second = load_records([str(path)])
    assert isinstance(first, ChatExample) and isinstance(second, ChatExample)
    assert first.messages[1].content == "42" and first.system is None
    assert second.messages[0].content == "Pad it\n7" and second.messages[1].content == "007"
    assert second.system == "Be exact."


def test_parquet(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"query": ["q1", "q2"], "response": ["r1", "r2"], "system": [None, "S"]}), path)
    records = load_records([str(path)])
    assert [r.system for r in records if isinstance(r, ChatExample)] == [None, "S"]


def test_every_problem_of_every_file_at_once(tmp_path: Path) -> None:
    jsonl = tmp_path / "bad.jsonl"
    lines = [
        json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]}),
        '{"messages": [ this is not json',
        json.dumps({"messages": []}),
        json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}),
        json.dumps({"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "x"}]}),
        json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}),
    ]
    jsonl.write_text("\n".join(lines) + "\n")
    alpaca = tmp_path / "bad.json"
    alpaca.write_text(
        json.dumps(
            [{"instruction": "x", "output": "y"}, {"instruction": "x"}, {"instruction": "x", "output": 3}]
        )
    )
    with pytest.raises(DataError) as err:
        load_records([str(jsonl), str(alpaca)])
    got = err.value.problems
    assert got == [
        f"{jsonl}:2: invalid JSON line (column 16): Expecting value",
        f"{jsonl}:3:messages: empty conversation; expected at least a user and an assistant turn",
        f"{jsonl}:4:messages[1].role: after 'user' expected 'assistant', got 'user'",
        f"{jsonl}:4:messages[1].role: last turn must be 'assistant' (nothing to learn), got 'user'",
        f"{jsonl}:5:messages[0].content: expected a string, got int",
        f"{alpaca}:2:output: missing; expected a non-empty string",
        f"{alpaca}:3:output: expected a string, got int '3'",
    ]


def test_undetectable_format_and_bad_spec(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text('{"foo": 1}\n')
    with pytest.raises(DataError, match="cannot detect the format"):
        load_records([str(path)])
    with pytest.raises(DataError, match="positive row count"):
        load_records([f"{path}#abc"])
    with pytest.raises(DataError, match="no such file"):
        load_records([str(tmp_path / "nope.json")])


@pytest.mark.parametrize("fmt", ["auto", "alpaca"])
def test_empty_files_are_errors(tmp_path: Path, fmt: str) -> None:
    empty_jsonl, empty_list, blank = tmp_path / "empty.jsonl", tmp_path / "empty.json", tmp_path / "blank.txt"
    empty_jsonl.write_text("")
    empty_list.write_text("[]")
    blank.write_text("\n\n")
    with pytest.raises(DataError) as err:  # the loader training uses: nothing to train on is not "0 rows, ok"
        load_records([str(empty_jsonl), str(empty_list), str(blank)], format=fmt)
    assert [p.split(" (", 1)[0] for p in err.value.problems] == [
        f"{empty_jsonl} has no rows",
        f"{empty_list} has no rows",
        f"{blank} has no rows",
    ]


def test_one_problem_per_root_cause(tmp_path: Path) -> None:
    truncated = tmp_path / "cut.jsonl"
    truncated.write_text('{"instruction": "a", "outp\n')
    with pytest.raises(DataError) as err:  # no "cannot detect the format from the keys []" on top
        load_records([str(truncated)])
    assert err.value.problems == [
        f"{truncated}:1: invalid JSON line (column 27): Invalid control character at"
    ]
    robot = tmp_path / "robot.jsonl"
    turns = [{"from": "human", "value": "a"}, {"from": "robot", "value": "b"}]
    robot.write_text(json.dumps({"conversations": turns}) + "\n")
    with pytest.raises(DataError) as err:  # no "last turn must be 'gpt'" for the turn that was not read
        load_records([str(robot)])
    assert err.value.problems == [
        f"{robot}:1:conversations[1].from: unknown role 'robot'; expected one of 'human', 'gpt', 'function_call', "
        "'observation', 'system'"
    ]
    order = tmp_path / "order.jsonl"
    order.write_text(
        json.dumps({"conversations": [{"from": "gpt", "value": "a"}, {"from": "human", "value": "b"}]})
    )
    with pytest.raises(DataError) as err:  # the file's role tags, with temper's roles beside them
        load_records([str(order)])
    assert err.value.problems == [
        f"{order}:1:conversations[0].from: first turn must be 'human' (user), got 'gpt' (assistant)",
        f"{order}:1:conversations[1].from: last turn must be 'gpt' (assistant) (nothing to learn), got 'human' "
        "(user)",
    ]


def test_a_forced_format_that_fits_no_row_names_the_one_that_does(lf: Path, tmp_path: Path) -> None:
    path = lf / "identity.json"
    with pytest.raises(DataError) as err:
        load_records([str(path)], format="sharegpt")
    first, second = err.value.problems[:2]
    assert first == f"{path}: no row is sharegpt; the rows look like alpaca. Pass --format alpaca (or auto)."
    assert second.startswith(f"{path}:1:conversations: missing")
    assert len(err.value.problems) == 92  # that line above the 91 rows' own
    # When some rows convert, the format fits and the other rows are wrong: no such line.
    mixed = tmp_path / "mixed.jsonl"
    good = {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}
    mixed.write_text(json.dumps(good) + "\n" + json.dumps({"instruction": "x", "output": "y"}) + "\n")
    with pytest.raises(DataError) as err:
        load_records([str(mixed)], format="sharegpt")
    assert err.value.problems == [
        f"{mixed}:2:conversations: missing; expected a list of {{from, value}} objects"
    ]


def test_multimodal_rows_are_refused_not_silently_stripped(lf: Path) -> None:
    with pytest.raises(DataError) as err:
        load_records([str(lf / "mllm_demo.json")])
    assert err.value.problems[0].startswith(
        f"{lf / 'mllm_demo.json'}:1:images: multimodal rows are not supported"
    )


def test_reasoning_parts_become_think_blocks(lf: Path) -> None:
    rec = load_records([str(lf / "reason_tool_use_demo_50.jsonl")])[1]
    assert isinstance(rec, ChatExample) and rec.system and rec.tools
    first_reply = rec.messages[1].content
    assert first_reply.startswith("<think>\n") and "\n</think>\n\n{" in first_reply
    assert json.loads(first_reply.split("</think>\n\n", 1)[1])["name"] == "get_movie_details"

"""MCQ csv and QA jsonl readers: real example files, and row-level errors on malformed files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from temper.errors import DataError
from temper.evaluation.datasets import load_mcq, load_qa, read_mcq_csv, read_qa_jsonl

EXAMPLES = "ms-swift/legacy/examples/pytorch/llm/eval_example"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_ms_swift_examples(shared_data: Path) -> None:
    subset = load_mcq("general_mcq", shared_data / EXAMPLES / "custom_ceval", few_shot=2)[0]
    assert subset.name == "default" and subset.lang == "zh"
    assert [i.answer for i in subset.items] == ["C", "C"] and len(subset.dev) == 2
    assert subset.items[0].options == ["4种", "22种", "20种", "19种"]
    qa = load_qa(shared_data / EXAMPLES / "custom_general_qa")[0]
    assert qa.items[0].messages == [{"role": "user", "content": "中国的首都是哪里？"}]
    assert qa.items[0].reference == "中国的首都是北京"


def test_standard_layouts(shared_data: Path) -> None:
    mmlu = load_mcq("mmlu", shared_data / "mmlu", ["sociology"], few_shot=1)[0]
    assert len(mmlu.items) == 201 and mmlu.category == "Social Science" and mmlu.lang == "en"
    assert {i.answer for i in mmlu.items} <= set("ABCD")  # indices 0-3 became letters
    cmmlu = load_mcq("cmmlu", shared_data / "cmmlu", ["agronomy"], limit=5)[0]
    assert [i.id for i in cmmlu.items] == ["0", "1", "2", "3", "4"] and cmmlu.items[0].answer == "B"
    ceval = load_mcq("ceval", shared_data / "ceval", ["logic"])[0]
    assert len(ceval.items) == 22 and ceval.display == "逻辑学" and ceval.category == "Humanities"


def test_ten_options_and_short_rows(tmp_path: Path) -> None:
    header = "id,question," + ",".join("ABCDEFGHIJ") + ",answer\n"
    path = write(
        tmp_path / "x_val.csv", header + "1,q1," + ",".join("0123456789") + ",J\n" + "2,q2,a,b,,,,,,,,,B\n"
    )
    items = read_mcq_csv(path)
    assert len(items[0].options) == 10 and items[0].answer == "J"
    assert items[1].options == ["a", "b"]


def test_malformed_csv_lists_every_row(tmp_path: Path) -> None:
    text = (
        "id,question,A,B,C,D,answer\n"
        "1,ok,a,b,c,d,A\n"
        "2,bad letter,a,b,c,d,E\n"
        "3,,a,b,c,d,B\n"
        '4,"multi\nline",a,b,c,d,Z\n'
        "5,too few fields,a,b\n"
        "6,empty option,a,b,,,C\n"
    )
    with pytest.raises(DataError) as err:
        read_mcq_csv(write(tmp_path / "m_val.csv", text))
    problems = err.value.problems
    assert f"{tmp_path}/m_val.csv:3:answer: got 'E', expected one of A, B, C, D" in problems
    assert f"{tmp_path}/m_val.csv:4:question: empty" in problems
    assert any(
        p.startswith(f"{tmp_path}/m_val.csv:5:answer: got 'Z'") for p in problems
    )  # row starts on line 5
    assert f"{tmp_path}/m_val.csv:7:row: has 4 fields, the header has 7" in problems
    assert any(":8:answer: got 'C', expected one of A, B" in p for p in problems)
    assert len(problems) == 5


def test_missing_column_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        read_mcq_csv(write(tmp_path / "a_val.csv", "id,question,A,B,C,D\n1,q,a,b,c,d\n"))
    assert err.value.problems == [
        f"{tmp_path}/a_val.csv:1:header: missing column 'answer' (header: id,question,a,b,c,d)"
    ]
    with pytest.raises(DataError, match="empty file"):
        read_mcq_csv(write(tmp_path / "e_val.csv", ""))
    with pytest.raises(DataError, match="no rows"):
        read_mcq_csv(write(tmp_path / "h_val.csv", "id,question,A,B,answer\n"))
    with pytest.raises(DataError, match="empty"):
        read_qa_jsonl(write(tmp_path / "e.jsonl", "\n"))


def test_mmlu_index_answers(tmp_path: Path) -> None:
    text = "question,choice0,choice1,choice2,choice3,answer\nq,a,b,c,d,3\nq2,a,b,c,d,4\n"
    with pytest.raises(DataError) as err:
        read_mcq_csv(write(tmp_path / "t.csv", text), index_answers=True)
    assert err.value.problems == [f"{tmp_path}/t.csv:3:answer: got '4', expected an index 0-3"]


def test_missing_subset_and_dev_file(tmp_path: Path) -> None:
    write(tmp_path / "s_val.csv", "id,question,A,B,answer\n1,q,a,b,A\n")
    with pytest.raises(DataError, match="subset 'nope' not found"):
        load_mcq("general_mcq", tmp_path, ["nope"])
    with pytest.raises(DataError, match="few_shot=1"):
        load_mcq("general_mcq", tmp_path, ["s"], few_shot=1)
    assert load_mcq("general_mcq", tmp_path)[0].name == "s"


def test_malformed_jsonl(tmp_path: Path) -> None:
    lines = [
        json.dumps({"query": "q", "response": "r"}),
        "{not json",
        json.dumps({"query": "q"}),
        json.dumps({"messages": [{"role": "user", "content": "hi"}]}),
        json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}),
        json.dumps({"query": "q", "response": "r", "history": [["a"]]}),
        "[1, 2]",
    ]
    with pytest.raises(DataError) as err:
        read_qa_jsonl(write(tmp_path / "d.jsonl", "\n".join(lines)))
    p = [x.split(str(tmp_path) + "/d.jsonl:")[1] for x in err.value.problems]
    assert p[0].startswith("2:json:")
    assert p[1] == "3:response: missing or empty (need query/response or messages)"
    assert p[2].startswith("4:messages:")
    assert p[3] == "6:history: expected [[query, response], ...]"
    assert p[4] == "7:row: expected a JSON object, got list"
    assert len(p) == 5


def test_history_and_system_rows(tmp_path: Path) -> None:
    row = {"system": "be brief", "history": [["q1", "a1"]], "query": "q2", "response": "a2"}
    item = read_qa_jsonl(write(tmp_path / "h.jsonl", json.dumps(row)))[0]
    assert [m["role"] for m in item.messages] == ["system", "user", "assistant", "user"]
    assert item.reference == "a2"

"""Readers on the real GLUE / ChnSentiCorp files, malformed rows, ms-swift rows and embedding pair layouts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from temper.data.cls_formats import (
    label_ids,
    label_space,
    load_task,
    read_cls_file,
    read_embedding_file,
    read_glue_tsv,
)
from temper.data.records import ClsExample
from temper.errors import DataError


def test_mrpc_reads_every_row_with_quotes_intact(shared_data: Path) -> None:
    train, dev = load_task("glue-mrpc", shared_data / "glue_mrpc")
    assert (len(train), len(dev)) == (3668, 408)
    assert sum(int(e.label) for e in train) == 2474 and sum(int(e.label) for e in dev) == 279
    # Bare double quotes survive because quoting is off (a quoting reader would merge rows here).
    assert train[0].text.startswith('Amrozi accused his brother, whom he called "the witness"')
    assert train[0].text_pair is not None and train[0].source.endswith("train.tsv:2")


def test_sst2_and_chnsenticorp(shared_data: Path) -> None:
    train, dev = load_task("glue-sst2", shared_data / "glue_sst2")
    assert (len(train), len(dev)) == (67349, 872)
    assert dev[0] == ClsExample("it 's a charming and often affecting journey .", 1, None, dev[0].source)
    rows, no_dev = load_task("chnsenticorp", shared_data / "chnsenticorp_htl")
    assert no_dev is None and len(rows) == 7766 and sum(int(e.label) for e in rows) == 5322
    assert label_space(rows) == ("single_label_classification", ["0", "1"])


def test_unlabelled_glue_test_file(shared_data: Path) -> None:
    rows = read_glue_tsv(shared_data / "glue_mrpc" / "test.tsv", require_label=False)
    assert len(rows) == 1725 and rows[0].label == -1
    with pytest.raises(DataError, match="missing label"):
        read_glue_tsv(shared_data / "glue_mrpc" / "test.tsv")


def test_malformed_rows_are_all_reported_with_file_row_field(tmp_path: Path) -> None:
    tsv = tmp_path / "bad.tsv"
    tsv.write_text("sentence\tlabel\ngood film\t1\nno label here\n\t\nfine\t0\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        read_cls_file(tsv)
    assert err.value.problems == [f"{tsv}:3:label: missing label", f"{tsv}:4:label: missing label"]
    jl = tmp_path / "bad.jsonl"
    jl.write_text('{"text": "ok", "label": 1}\n{"text": "x"\n[1, 2]\n{"label": 0}\n', encoding="utf-8")
    with pytest.raises(DataError) as err:
        read_cls_file(jl)
    problems = err.value.problems
    assert len(problems) == 3
    assert problems[0].startswith(f"{jl}:2:row: expected a JSON object, got invalid JSON")
    assert problems[1].startswith(f"{jl}:3:row:") and problems[2].startswith(
        f"{jl}:4:text: missing text column"
    )


def test_csv_columns_and_swift_messages(tmp_path: Path) -> None:
    csv_file = tmp_path / "reviews.csv"
    csv_file.write_text('review,stars\n"Great, really great",pos\nmeh,neg\n', encoding="utf-8")
    rows = read_cls_file(csv_file, text_column="review", label_column="stars")
    assert [(r.text, r.label) for r in rows] == [("Great, really great", "pos"), ("meh", "neg")]
    problem, names = label_space(rows)
    assert names == ["neg", "pos"] and label_ids(rows, problem, names) == [1, 0]
    swift = tmp_path / "cls.jsonl"
    row = {
        "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "so good"}],
        "label": 1,
    }
    swift.write_text(json.dumps(row) + "\n", encoding="utf-8")
    assert read_cls_file(swift)[0] == ClsExample("so good", 1, None, f"{swift}:1")


def test_regression_and_unknown_label() -> None:
    rows = [ClsExample("a", 0.5), ClsExample("b", 3.2)]
    assert label_space(rows) == ("regression", ["score"])
    assert label_ids(rows, "regression", ["score"]) == [0.5, 3.2]
    with pytest.raises(DataError, match="outside the label set"):
        label_ids([ClsExample("a", "maybe", source="f:2")], "single_label_classification", ["no", "yes"])


def test_embedding_pair_layouts(tmp_path: Path) -> None:
    f = tmp_path / "pairs.jsonl"
    rows = [
        {"query": "q1", "response": "r1", "label": 0.8},
        {"query": "q2", "response": "r2", "rejected_response": ["n1"]},
        {
            "messages": [{"role": "user", "content": "a3"}],
            "positive_messages": [[{"role": "user", "content": "p3"}]],
            "negative_messages": [[{"role": "user", "content": "n3"}]],
        },
        {"sentence1": "s1", "sentence2": "s2", "score": "0.1"},
    ]
    f.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    got = read_embedding_file(f)
    assert [(e.anchor, e.positive, e.label, e.negatives) for e in got] == [
        ("q1", "r1", 0.8, []),
        ("q2", "r2", None, ["n1"]),
        ("a3", "p3", None, ["n3"]),
        ("s1", "s2", 0.1, []),
    ]
    f.write_text('{"query": "q"}\n{"query": "q", "response": "r", "label": "high"}\n', encoding="utf-8")
    with pytest.raises(DataError) as err:
        read_embedding_file(f)
    assert [p.split(":")[-2] for p in err.value.problems] == ["positive", "label"]

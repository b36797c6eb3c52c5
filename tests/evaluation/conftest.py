"""Evaluation fixtures: a tiny MCQ folder and the tiny llama loaded in fp32."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

MCQ_ROWS = [
    ("1", "What is 2+2?", ["3", "4", "5"], "B"),
    ("2", "Which is a colour?", ["red", "run", "rapid", "rough"], "A"),
    ("3", "Pick the third letter.", ["a", "b", "c", "d"], "C"),
    ("4", "Largest planet?", ["Mars", "Venus", "Jupiter", "Earth"], "C"),
    ("5", "Opposite of up?", ["left", "down", "right", "in"], "B"),
]


def mcq_csv(rows: list[tuple[str, str, list[str], str]]) -> str:
    lines = ["id,question,A,B,C,D,answer"]
    for rid, q, opts, ans in rows:
        cells = [*opts, *[""] * (4 - len(opts))]
        lines.append(",".join([rid, q, *cells, ans]))
    return "\n".join(lines) + "\n"


@pytest.fixture()
def mcq_dir(tmp_path: Path) -> Path:
    d = tmp_path / "mcq"
    d.mkdir()
    (d / "example_val.csv").write_text(mcq_csv(MCQ_ROWS), encoding="utf-8")
    (d / "example_dev.csv").write_text(mcq_csv(MCQ_ROWS[:2]), encoding="utf-8")
    return d


@pytest.fixture(scope="session")
def tiny_lm(tiny_llama_dir: Path) -> tuple[Any, Any]:
    from temper.models.load import load_causal_lm

    return load_causal_lm(str(tiny_llama_dir), dtype="fp32")

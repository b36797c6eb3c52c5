"""Read one data file (json, jsonl, csv, parquet, txt) into numbered rows, collecting what cannot be read.

Rows are 1-based: the record index for json/csv/parquet, the line number for jsonl/txt (a paragraph's first
line for txt). A row that is not an object, an invalid JSON line or an unreadable file becomes a `file:row:`
problem in the caller's list; reading goes on, so every problem of a file is reported at once.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SUFFIXES = (".json", ".jsonl", ".csv", ".parquet", ".txt")


def read_rows(path: Path, problems: list[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (1-based row, row dict); unreadable rows (invalid JSON, non-objects) go to `problems`."""
    readers = {
        ".json": _json_rows,
        ".jsonl": _jsonl_rows,
        ".csv": _csv_rows,
        ".parquet": _parquet_rows,
        ".txt": _txt_rows,
    }
    reader = readers.get(path.suffix.lower())
    if reader is None:
        problems.append(f"{path}: unsupported file type {path.suffix!r}; expected {', '.join(SUFFIXES)}")
        return
    for row_no, row in reader(path, problems):
        if isinstance(row, dict):
            yield row_no, row
        else:
            problems.append(
                f"{path}:{row_no}: expected an object (a row of named fields), got {type(row).__name__}"
            )


def _json_rows(path: Path, problems: list[str]) -> Iterator[tuple[int, Any]]:
    text = path.read_text(encoding="utf-8-sig")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        if e.msg == "Extra data":  # JSON Lines saved as .json
            yield from _jsonl_rows(path, problems)
            return
        problems.append(f"{path}:{e.lineno}: invalid JSON (line {e.lineno}, column {e.colno}): {e.msg}")
        return
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        problems.append(f"{path}: expected a JSON list of rows, got {type(data).__name__}")
        return
    yield from enumerate(data, start=1)


def _jsonl_rows(path: Path, problems: list[str]) -> Iterator[tuple[int, Any]]:
    with path.open(encoding="utf-8-sig") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield line_no, json.loads(line)
            except json.JSONDecodeError as e:
                problems.append(f"{path}:{line_no}: invalid JSON line (column {e.colno}): {e.msg}")


def _csv_rows(path: Path, problems: list[str]) -> Iterator[tuple[int, Any]]:
    # Cells stay strings even when they look like numbers (csv never converts); an empty cell is an absent field.
    with path.open(encoding="utf-8-sig", newline="") as f:
        for row_no, row in enumerate(csv.DictReader(f), start=1):
            if None in row:
                problems.append(f"{path}:{row_no}: more cells than header columns")
            yield row_no, {k: v for k, v in row.items() if k is not None and v not in (None, "")}


def _parquet_rows(path: Path, problems: list[str]) -> Iterator[tuple[int, Any]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several unrelated types for a bad file
        problems.append(f"{path}: cannot read parquet: {e}")
        return
    for row_no, row in enumerate(table.to_pylist(), start=1):
        yield row_no, {k: v for k, v in row.items() if v is not None}


def _txt_rows(path: Path, problems: list[str]) -> Iterator[tuple[int, Any]]:
    """Paragraphs separated by blank lines; a file without blank lines has one record per line."""
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    if not any(not line.strip() for line in lines):
        yield from ((i, {"text": line}) for i, line in enumerate(lines, start=1) if line.strip())
        return
    start, block = 0, []  # type: tuple[int, list[str]]
    for i, line in enumerate([*lines, ""], start=1):
        if line.strip():
            start, block = (start or i), [*block, line]
        elif block:
            yield start, {"text": "\n".join(block)}
            start, block = 0, []

"""Readers for classification and embedding data: files -> ClsExample / EmbeddingExample records.

Supported layouts:
- GLUE TSV (MRPC, SST-2, ...): a header row, tab-separated, read with quoting OFF (`csv.QUOTE_NONE`): MRPC
  sentences contain bare double quotes that a quoting reader would glue across rows.
- csv / tsv / jsonl / json with `text_column`, `text_pair_column`, `label_column` (defaults are guessed from
  common names: text, sentence, review, content, sentence1 ...).
- ms-swift classification rows `{"messages": [{"role": "user", "content": "..."}], "label": 1}`.
- Embedding pairs (see `read_embedding_file`).

Every reader validates all rows first and raises one DataError listing each `file:row:field` problem. Row
numbers are physical line numbers, so the header of a csv/tsv is row 1 and its first data row is row 2.

Example:
    >>> from temper.data.cls_formats import read_glue_tsv
    >>> rows = read_glue_tsv("../shared/data/glue_mrpc/dev.tsv")   # doctest: +SKIP
    >>> rows[0].label, rows[0].text_pair is not None                 # doctest: +SKIP
    (1, True)
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from temper.data.records import ClsExample, EmbeddingExample
from temper.errors import DataError

TEXT_COLUMNS = ("text", "sentence", "review", "content", "sentence1", "question", "query", "#1 String")
PAIR_COLUMNS = ("text_pair", "sentence2", "#2 String")
LABEL_COLUMNS = ("label", "labels", "Quality", "score")
# The checkout's sibling data folder (/work/shared/data in the project layout).
SHARED_DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data"

# csv's default field limit (128 KiB) is too small for long reviews; the platform max is safe.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


def detect_format(path: Path) -> str:
    """File format from the extension: glue_tsv (.tsv), csv, jsonl or json."""
    ext = path.suffix.lower()
    if ext == ".tsv":
        return "glue_tsv"
    if ext in (".csv", ".jsonl", ".json"):
        return ext[1:]
    raise DataError(
        f"{path}: cannot tell the file format from the extension {ext!r}.",
        hint="Name the file .csv, .tsv, .jsonl or .json, or pass --format.",
    )


def iter_rows(path: Path, fmt: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(row number, row dict) for any supported table-like file; a json row that is not an object -> DataError."""
    if not path.is_file():
        raise DataError(
            f"data file {str(path)!r} does not exist.", hint="Check the path (relative to the cwd)."
        )
    if fmt in ("glue_tsv", "tsv", "csv"):
        # utf-8-sig strips the BOM that MRPC's train/dev files start with.
        with path.open(encoding="utf-8-sig", newline="") as f:
            if fmt == "csv":
                reader = csv.DictReader(f)
            else:
                reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            for row in reader:
                yield reader.line_num, {k: v for k, v in row.items() if k is not None}
        return
    if fmt == "json":
        data = json.loads(path.read_text(encoding="utf-8"))
        rows = data if isinstance(data, list) else [data]
        for i, row in enumerate(rows, 1):
            yield i, row if isinstance(row, dict) else {"__invalid__": row}
        return
    with path.open(encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                row = {"__invalid__": f"invalid JSON ({e.msg} at column {e.colno})"}
            yield i, row if isinstance(row, dict) else {"__invalid__": row}


def _pick(row: dict[str, Any], explicit: str | None, candidates: tuple[str, ...]) -> str | None:
    if explicit is not None:
        return explicit
    return next((c for c in candidates if c in row), None)


def parse_label(value: Any) -> int | float | str:
    """'1' -> 1, '0.8' -> 0.8, 'positive' -> 'positive' (class names are mapped to ids later)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float):
        return value
    text = str(value).strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def _messages_text(messages: Any) -> str | None:
    """ms-swift classification rows: the non-system turns joined (usually a single user turn)."""
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        return None
    parts = [str(m.get("content", "")) for m in messages if m.get("role") != "system"]
    return "\n".join(parts) if parts else None


def read_cls_file(
    path: str | Path,
    fmt: str = "auto",
    text_column: str | None = None,
    text_pair_column: str | None = None,
    label_column: str | None = None,
    require_label: bool = True,
) -> list[ClsExample]:
    """Read a classification file into ClsExample records (see the module docstring for the layouts).

    Example:
        >>> rows = read_cls_file("reviews.csv", text_column="review", label_column="label")  # doctest: +SKIP
    """
    p = Path(path)
    fmt = detect_format(p) if fmt == "auto" else fmt
    fmt = {"swift": "jsonl"}.get(fmt, fmt)
    out: list[ClsExample] = []
    problems: list[str] = []
    for line, row in iter_rows(p, fmt):
        where = f"{p}:{line}"
        if "__invalid__" in row:
            problems.append(f"{where}:row: expected a JSON object, got {str(row['__invalid__'])[:80]}")
            continue
        if text_column is None and "messages" in row:
            text = _messages_text(row["messages"])
            if text is None:
                problems.append(f"{where}:messages: expected a list of {{role, content}} objects")
                continue
            pair = None
        else:
            tcol = _pick(row, text_column, TEXT_COLUMNS)
            if tcol is None or tcol not in row:
                problems.append(f"{where}:{tcol or 'text'}: missing text column (columns: {', '.join(row)})")
                continue
            text = row[tcol]
            pcol = _pick(row, text_pair_column, PAIR_COLUMNS if text_column is None else ())
            pair = row.get(pcol) if pcol else None
            if pcol and pcol not in row:
                problems.append(f"{where}:{pcol}: missing text-pair column")
                continue
        lcol = _pick(row, label_column, LABEL_COLUMNS)
        raw = row.get(lcol) if lcol else None
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            if require_label:
                problems.append(f"{where}:{lcol or 'label'}: missing label")
                continue
            raw = -1
        if text is None or not isinstance(text, str):
            problems.append(f"{where}:text: expected a string, got {type(text).__name__}")
            continue
        out.append(ClsExample(text=text.strip(), label=parse_label(raw), text_pair=pair, source=where))
    if problems:
        raise DataError(f"{p}: {len(problems)} invalid row(s).", problems, hint="Fix or remove these rows.")
    if not out:
        raise DataError(f"{p}: no rows found.", hint="The file is empty or has only a header.")
    return out


def read_glue_tsv(path: str | Path, require_label: bool = True) -> list[ClsExample]:
    """A GLUE task file (MRPC: Quality/#1 String/#2 String; SST-2: sentence/label), quoting off."""
    return read_cls_file(path, "glue_tsv", require_label=require_label)


# ---- embedding pairs -------------------------------------------------------------------------------------


def _message_list_text(value: Any) -> str | None:
    """ms-swift positive_messages / negative_messages entries: a list of messages, or a list of such lists."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and isinstance(value[0], list):
        value = value[0]
    return _messages_text(value)


def _embedding_fields(row: dict[str, Any]) -> tuple[Any, Any, Any, list[Any]]:
    """(anchor, positive, label, negatives) from any supported pair layout."""
    if "messages" in row:
        anchor = _messages_text(row["messages"])
        pos = _message_list_text(row.get("positive_messages"))
        negs = row.get("negative_messages") or []
        return anchor, pos, row.get("label"), [_message_list_text(n) for n in negs]
    for a, b in (
        ("query", "response"),
        ("anchor", "positive"),
        ("sentence1", "sentence2"),
        ("text1", "text2"),
    ):
        if a in row:
            negs = row.get("rejected_response") or row.get("negatives") or row.get("negative") or []
            negs = [negs] if isinstance(negs, str) else list(negs)
            label = row.get("label", row.get("score"))
            return row[a], row.get(b), label, negs
    return None, None, None, []


def read_embedding_file(path: str | Path, fmt: str = "auto") -> list[EmbeddingExample]:
    """Read embedding pairs: ms-swift `{"query", "response", "label"?, "rejected_response"?}` or
    `{"messages", "positive_messages", "negative_messages"?, "label"?}`, `{anchor, positive, negative?}`,
    `{sentence1, sentence2, score}` (jsonl, json, csv or tsv). A missing label means anchor/positive.

    Example:
        >>> pairs = read_embedding_file("pairs.jsonl")   # doctest: +SKIP
    """
    p = Path(path)
    fmt = detect_format(p) if fmt == "auto" else fmt
    out: list[EmbeddingExample] = []
    problems: list[str] = []
    for line, row in iter_rows(p, fmt):
        where = f"{p}:{line}"
        anchor, pos, label, negs = _embedding_fields(row)
        if not isinstance(anchor, str) or not anchor.strip():
            problems.append(
                f"{where}:anchor: expected query/anchor/sentence1/messages text, got {anchor!r:.60}"
            )
            continue
        if not isinstance(pos, str) or not pos.strip():
            problems.append(f"{where}:positive: expected response/positive/sentence2 text, got {pos!r:.60}")
            continue
        value: float | None = None
        if label is not None and label != "":
            parsed = parse_label(label)
            if isinstance(parsed, str):
                problems.append(f"{where}:label: expected a number, got {label!r}")
                continue
            value = float(parsed)
        if any(not isinstance(n, str) for n in negs):
            problems.append(f"{where}:negatives: expected strings or message lists")
            continue
        out.append(EmbeddingExample(anchor.strip(), pos.strip(), value, [str(n) for n in negs], where))
    if problems:
        raise DataError(f"{p}: {len(problems)} invalid row(s).", problems, hint="Fix or remove these rows.")
    if not out:
        raise DataError(f"{p}: no pairs found.")
    return out


# ---- named tasks and label spaces ------------------------------------------------------------------------


@dataclass(frozen=True)
class ClsTask:
    """A named dataset: its folder under ../shared/data, files, label names and the metric that picks the best."""

    folder: str
    train_file: str
    dev_file: str | None  # None: split the train file with a fixed seed (no official split exists)
    label_names: tuple[str, ...]
    metric: str
    citation: str


TASKS: dict[str, ClsTask] = {
    "glue-mrpc": ClsTask(
        "glue_mrpc",
        "train.tsv",
        "dev.tsv",
        ("not_equivalent", "equivalent"),
        "f1",
        "Dolan & Brockett 2005, MRPC; Wang et al. 2019, GLUE",
    ),
    "glue-sst2": ClsTask(
        "glue_sst2",
        "train.tsv",
        "dev.tsv",
        ("negative", "positive"),
        "accuracy",
        "Socher et al. 2013, SST; Wang et al. 2019, GLUE",
    ),
    "chnsenticorp": ClsTask(
        "chnsenticorp_htl",
        "ChnSentiCorp_htl_all.csv",
        None,
        ("negative", "positive"),
        "accuracy",
        "Tan Songbo, ChnSentiCorp (SophonPlus ChineseNlpCorpus htl_all)",
    ),
}


def task_dir(name: str, data_dir: str | Path | None = None) -> Path:
    """The folder of a named task: `data_dir`, else ../shared/data/<folder> next to the cwd or this checkout."""
    if name not in TASKS:
        raise DataError(
            f"unknown task {name!r}.", hint=f"Use one of: {', '.join(TASKS)}, or pass --train FILE."
        )
    if data_dir is not None:
        return Path(data_dir)
    folder = TASKS[name].folder
    candidates = [Path.cwd().parent / "shared" / "data" / folder, SHARED_DATA / folder]
    for c in candidates:
        if c.is_dir():
            return c
    raise DataError(
        f"task {name!r}: data folder not found; looked in {', '.join(map(str, candidates))}.",
        hint=f"Pass --data-dir PATH/{folder}.",
    )


def load_task(
    name: str, data_dir: str | Path | None = None
) -> tuple[list[ClsExample], list[ClsExample] | None]:
    """(train, dev) records of a named task; dev is None when the task has no official split.

    Example:
        >>> train, dev = load_task("glue-mrpc")   # doctest: +SKIP
        >>> len(train), len(dev)                   # doctest: +SKIP
        (3668, 408)
    """
    folder = task_dir(name, data_dir)  # raises for an unknown name
    spec = TASKS[name]
    train = read_cls_file(folder / spec.train_file)
    dev = read_cls_file(folder / spec.dev_file) if spec.dev_file else None
    return train, dev


def label_space(
    examples: list[ClsExample], names: list[str] | None = None, problem_type: str = "auto"
) -> tuple[str, list[str]]:
    """(problem_type, label names). Integer labels 0..K-1 keep their ids; strings map to sorted names (or
    `names` order); non-integer numbers mean regression.

    Example:
        >>> label_space([ClsExample("a", "pos"), ClsExample("b", "neg")])
        ('single_label_classification', ['neg', 'pos'])
    """
    labels = [e.label for e in examples]
    is_float = any(isinstance(x, float) and not float(x).is_integer() for x in labels)
    if problem_type == "regression" or (problem_type == "auto" and is_float):
        bad = [e.source for e in examples if isinstance(e.label, str)]
        if bad:
            raise DataError("regression needs numeric labels.", [f"{s}:label: not a number" for s in bad])
        return "regression", ["score"]
    if names:
        return "single_label_classification", list(names)
    if all(isinstance(x, int | float) for x in labels):
        top = int(max(labels))
        bad = [f"{e.source}:label: {e.label!r} is negative" for e in examples if int(e.label) < 0]  # type: ignore[arg-type]
        if bad:
            raise DataError("class ids must be 0..K-1.", bad, hint="Use ids from 0, or class names.")
        return "single_label_classification", [str(i) for i in range(top + 1)]
    return "single_label_classification", sorted({str(x) for x in labels})


def label_ids(examples: list[ClsExample], problem_type: str, names: list[str]) -> list[int | float]:
    """Map each record's label to a class id (or float for regression); unknown names -> DataError."""
    if problem_type == "regression":
        return [float(e.label) for e in examples]
    index = {n: i for i, n in enumerate(names)}
    out: list[int | float] = []
    problems = []
    for e in examples:
        key = str(e.label)
        numeric = isinstance(e.label, int | float) and not isinstance(e.label, bool)
        if key in index:
            out.append(index[key])
        elif numeric and float(e.label).is_integer() and 0 <= int(e.label) < len(names):
            out.append(int(e.label))  # a class id next to named classes (e.g. 1 with names [neg, pos])
        else:
            problems.append(f"{e.source}:label: {e.label!r} is not one of {names}")
    if problems:
        raise DataError(f"{len(problems)} label(s) outside the label set.", problems, hint="Check --labels.")
    return out

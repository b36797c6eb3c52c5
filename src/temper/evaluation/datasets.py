"""Evaluation items: MCQ csv folders (general_mcq, C-Eval, CMMLU, MMLU) and QA jsonl folders, validated row by row.

Every reader collects all problems as `file:line:field: message` and raises one DataError, so a user fixes a
file in one pass. `line` is the physical line where the row starts (the header is line 1).

Example:
    >>> from temper.evaluation.datasets import load_mcq
    >>> subsets = load_mcq("ceval", "../shared/data/ceval", subsets=["logic"], limit=3)  # doctest: +SKIP
    >>> subsets[0].items[0].answer  # doctest: +SKIP
    'B'
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from temper.errors import DataError
from temper.evaluation import subjects

LETTERS = "ABCDEFGHIJ"  # up to 10 options, as in EvalScope's general_mcq


@dataclass
class MCQItem:
    id: str
    question: str
    options: list[str]  # options[i] belongs to LETTERS[i]
    answer: str  # gold letter
    source: str = ""  # file:line


@dataclass
class MCQSubset:
    name: str
    items: list[MCQItem]
    dev: list[MCQItem] = field(default_factory=list)  # few-shot exemplars
    display: str = ""  # subject name used in the prompt header
    category: str = "-"  # Cat.0
    lang: str = "en"  # prompt language: en or zh


@dataclass
class QAItem:
    id: str
    messages: list[dict[str, str]]  # the prompt conversation, ending with a user turn
    reference: str
    source: str = ""


@dataclass
class QASubset:
    name: str
    items: list[QAItem]


@dataclass(frozen=True)
class Benchmark:
    """Where a benchmark keeps its files and how its rows read."""

    eval_file: str  # path pattern under the data dir; {s} is the subset
    dev_file: str
    table: dict[str, tuple[str, str]]  # subject -> (display name, category); empty = discover from files
    lang: str  # en, zh, or auto (decided from the questions)
    index_answers: bool = False  # MMLU stores 0-3 instead of A-D


# Plain dict registry of the MCQ benchmarks; general_mcq is the user's own folder of {subset}_val.csv files.
BENCHMARKS: dict[str, Benchmark] = {
    "general_mcq": Benchmark("{s}_val.csv", "{s}_dev.csv", {}, "auto"),
    "ceval": Benchmark("val/{s}_val.csv", "dev/{s}_dev.csv", subjects.CEVAL, "zh"),
    "cmmlu": Benchmark("test/{s}.csv", "dev/{s}.csv", subjects.CMMLU, "zh"),
    "mmlu": Benchmark("test/{s}_test.csv", "dev/{s}_dev.csv", subjects.MMLU, "en", index_answers=True),
}


def has_cjk(text: str) -> bool:
    return any("\u4e00" <= ch <= "\u9fff" or "\u3400" <= ch <= "\u4dbf" for ch in text)


def _csv_records(path: Path, problems: list[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """(line, row) pairs with lower-cased header names; header problems go to `problems`."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        problems.append(f"{path}:1:file: not UTF-8 ({e.reason} at byte {e.start})")
        return
    # StringIO with newline="": str.splitlines would also split on U+0085 (NEL), which MMLU has inside cells.
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if not header or not any(h.strip() for h in header):
        problems.append(f"{path}:1:file: empty file, expected a header such as id,question,A,B,C,D,answer")
        return
    names = [h.strip().lower() for h in header]
    names[0] = names[0] or "id"  # CMMLU's header starts with a blank column (the row index)
    start = reader.line_num + 1
    for row in reader:
        line, start = start, reader.line_num + 1
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(names):
            problems.append(f"{path}:{line}:row: has {len(row)} fields, the header has {len(names)}")
            continue
        yield line, dict(zip(names, row, strict=True))


def _option_columns(names: list[str], index_answers: bool) -> list[str]:
    if index_answers:
        return [c for c in (f"choice{i}" for i in range(len(LETTERS))) if c in names]
    return [c for c in LETTERS.lower() if c in names]


def read_mcq_csv(path: Path, index_answers: bool = False, limit: int | None = None) -> list[MCQItem]:
    """Read one MCQ csv (id,question,A..J,answer; MMLU: question,choice0..3,answer index). Raises DataError."""
    problems: list[str] = []
    items: list[MCQItem] = []
    header_checked = False
    for line, row in _csv_records(path, problems):
        if not header_checked:
            header_checked = True
            opts = _option_columns(list(row), index_answers)
            missing = [c for c in ("question", "answer") if c not in row]
            if len(opts) < 2:
                missing.append("choice0,choice1" if index_answers else "A,B (option columns)")
            if missing:
                raise DataError(
                    f"{path}: cannot read MCQ rows.",
                    [f"{path}:1:header: missing column {m!r} (header: {','.join(row)})" for m in missing],
                    hint="An MCQ csv needs the columns id,question,A,B[,C..J],answer with answer a letter.",
                )
        item = _mcq_row(path, line, row, opts, index_answers, problems)
        if item is not None:
            items.append(item)
        if limit is not None and len(items) >= limit:
            break
    if not problems and not items:
        problems.append(f"{path}:1:file: no rows (only a header or empty)")
    if problems:
        raise DataError(f"{path}: {len(problems)} problem(s) in MCQ data.", problems)
    return items


def _mcq_row(
    path: Path, line: int, row: dict[str, str], opts: list[str], index_answers: bool, problems: list[str]
) -> MCQItem | None:
    where = f"{path}:{line}"
    options = [row[c].strip() for c in opts]
    while options and not options[-1]:
        options.pop()  # rows may use fewer options than the header offers
    question = row["question"].strip()
    raw = row["answer"].strip()
    answer = raw.upper()
    if index_answers and raw.isdigit() and int(raw) < len(LETTERS):
        answer = LETTERS[int(raw)]
    valid = LETTERS[: len(options)]
    ok = True
    if not question:
        problems.append(f"{where}:question: empty")
        ok = False
    if len(options) < 2:
        problems.append(f"{where}:options: {len(options)} non-empty option(s), expected at least 2")
        ok = False
    if len(answer) != 1 or answer not in valid:
        want = f"an index 0-{len(valid) - 1}" if index_answers else f"one of {', '.join(valid)}"
        problems.append(f"{where}:answer: got {raw!r}, expected {want}")
        ok = False
    elif not options[valid.index(answer)]:
        problems.append(f"{where}:{answer}: the answer's option is empty")
        ok = False
    if not ok:
        return None
    item_id = row.get("id", "").strip() or str(line)
    return MCQItem(item_id, question, options, answer, where)


def mcq_subsets_in(bench: Benchmark, root: Path) -> list[str]:
    """Subset names found on disk (for general_mcq) or the benchmark's own subject list."""
    if bench.table:
        return list(bench.table)
    prefix, _, suffix = bench.eval_file.partition("{s}")
    return sorted(p.name[len(prefix) : -len(suffix)] for p in root.glob(f"{prefix}*{suffix}"))


def load_mcq(
    name: str, root: str | Path, subsets: list[str] | None = None, limit: int | None = None, few_shot: int = 0
) -> list[MCQSubset]:
    """Load the eval split (and `few_shot` dev rows) of each subset of an MCQ benchmark folder."""
    bench = BENCHMARKS[name]
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{name}: data folder {root} does not exist.", hint=_where_hint(name))
    names = list(subsets or mcq_subsets_in(bench, root))
    if not names:
        raise DataError(
            f"{name}: no {bench.eval_file.format(s='*')} files in {root}.", hint=_where_hint(name)
        )
    out: list[MCQSubset] = []
    problems: list[str] = []
    for s in names:
        path = root / bench.eval_file.format(s=s)
        if not path.is_file():
            known = ", ".join(mcq_subsets_in(bench, root)[:8])
            problems.append(f"{path}:0:file: subset {s!r} not found (available: {known} ...)")
            continue
        try:
            items = read_mcq_csv(path, bench.index_answers, limit)
            dev = _read_dev(root / bench.dev_file.format(s=s), bench, few_shot)
        except DataError as e:
            problems.extend(e.problems or [e.message])
            continue
        display, category = bench.table.get(s, (s.replace("_", " "), "-"))
        lang = bench.lang if bench.lang != "auto" else ("zh" if has_cjk(items[0].question) else "en")
        out.append(MCQSubset(s, items, dev, display, category, lang))
    if problems:
        raise DataError(f"{name}: {len(problems)} problem(s) loading {root}.", problems)
    return out


def _read_dev(path: Path, bench: Benchmark, few_shot: int) -> list[MCQItem]:
    if few_shot <= 0:
        return []
    if not path.is_file():
        raise DataError(
            f"{path}: few-shot needs this dev file.", [f"{path}:0:file: missing (few_shot={few_shot})"]
        )
    dev = read_mcq_csv(path, bench.index_answers)
    if len(dev) < few_shot:
        raise DataError(
            f"{path}: only {len(dev)} dev rows.", [f"{path}:0:file: {len(dev)} rows < few_shot={few_shot}"]
        )
    return dev[:few_shot]


def _where_hint(name: str) -> str:
    if name in ("general_mcq", "general_qa"):
        return f'Pass --dataset-args \'{{"{name}": {{"local_path": "DIR"}}}}\' or --data-dir DIR.'
    return f"Pass --data-dir pointing at the {name} folder (with its dev/ and test/ or val/ folders)."


def qa_row(row: Any, where: str, problems: list[str]) -> QAItem | None:
    """One QA row: {"query","response"[,"history","system"]} or {"messages": [...]} ending in the reference."""
    if not isinstance(row, dict):
        problems.append(f"{where}:row: expected a JSON object, got {type(row).__name__}")
        return None
    item_id = str(row.get("id", where.rsplit(":", 1)[-1]))
    if "messages" in row:
        msgs = row["messages"]
        ok = isinstance(msgs, list) and all(
            isinstance(m, dict) and "role" in m and "content" in m for m in msgs
        )
        if not ok or len(msgs) < 2 or msgs[-1]["role"] != "assistant" or msgs[-2]["role"] != "user":
            problems.append(f"{where}:messages: expected [..., user, assistant] turns with role/content")
            return None
        prompt = [{"role": str(m["role"]), "content": str(m["content"])} for m in msgs[:-1]]
        return QAItem(item_id, prompt, str(msgs[-1]["content"]), where)
    missing = [k for k in ("query", "response") if not isinstance(row.get(k), str) or not row[k].strip()]
    if missing:
        problems.append(f"{where}:{missing[0]}: missing or empty (need query/response or messages)")
        return None
    prompt = [{"role": "system", "content": str(row["system"])}] if row.get("system") else []
    for pair in row.get("history") or []:
        if not (isinstance(pair, list | tuple) and len(pair) == 2):
            problems.append(f"{where}:history: expected [[query, response], ...]")
            return None
        prompt += [{"role": "user", "content": str(pair[0])}, {"role": "assistant", "content": str(pair[1])}]
    prompt.append({"role": "user", "content": row["query"]})
    return QAItem(item_id, prompt, row["response"], where)


def read_qa_jsonl(path: Path, limit: int | None = None) -> list[QAItem]:
    """Read a general_qa jsonl file; raises DataError listing every bad line."""
    problems: list[str] = []
    items: list[QAItem] = []
    lines = path.read_text(encoding="utf-8").split("\n")  # not splitlines(): U+2028 may sit inside a string
    for n, text in enumerate(lines, 1):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as e:
            problems.append(f"{path}:{n}:json: {e.msg} at column {e.colno}")
            continue
        item = qa_row(row, f"{path}:{n}", problems)
        if item is not None and (limit is None or len(items) < limit):
            items.append(item)
    if not problems and not items:
        problems.append(f"{path}:1:file: empty (expected one JSON object per line)")
    if problems:
        raise DataError(f"{path}: {len(problems)} problem(s) in QA data.", problems)
    return items


def load_qa(root: str | Path, subsets: list[str] | None = None, limit: int | None = None) -> list[QASubset]:
    """Load {subset}.jsonl files of a general_qa folder (all of them when `subsets` is empty)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"general_qa: data folder {root} does not exist.", hint=_where_hint("general_qa"))
    names = list(subsets or sorted(p.stem for p in root.glob("*.jsonl")))
    if not names:
        raise DataError(f"general_qa: no *.jsonl files in {root}.", hint=_where_hint("general_qa"))
    problems: list[str] = []
    out: list[QASubset] = []
    for s in names:
        path = root / f"{s}.jsonl"
        try:
            out.append(QASubset(s, read_qa_jsonl(path, limit)))
        except FileNotFoundError:
            problems.append(f"{path}:0:file: subset {s!r} not found")
        except DataError as e:
            problems.extend(e.problems)
    if problems:
        raise DataError(f"general_qa: {len(problems)} problem(s) loading {root}.", problems)
    return out

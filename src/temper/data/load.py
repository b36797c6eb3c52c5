"""Read data files (json, jsonl, csv, parquet, txt) and LLaMA-Factory data dirs into validated records.

Every problem in every file is collected as `file:row:field: message` and raised once as a DataError; no row is
ever dropped silently. Rows are 1-based: the record index for json/csv/parquet, the line number for jsonl/txt.

    >>> records = load_records(["../shared/data/llamafactory/identity.json"], model_name="Ember")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from temper.data.formats import FORMATS, Format, RowError, detect_format
from temper.data.mix import mix
from temper.data.placeholders import PLACEHOLDER, fill_row, placeholder_values
from temper.data.readers import SUFFIXES, read_rows
from temper.data.records import Record
from temper.errors import DataError

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class Source:
    """One dataset to read: a file plus what dataset_info.json (if any) says about it."""

    spec: str  # what the user wrote, e.g. "identity.json#50" or "alpaca_en_demo"
    path: Path
    limit: int | None = None  # the N of `file#N`
    format: str | None = None  # None: explicit --format, else auto-detect
    columns: dict[str, str] = field(default_factory=dict)  # LLaMA-Factory column name -> file column
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class Loaded:
    """The outcome of one source: the format used and its records (already sampled by `#N`)."""

    source: Source
    format: str
    records: list[Record]
    n_rows: int  # rows in the file before `#N` sampling


def load_records(
    datasets: Sequence[str],
    *,
    dataset_dir: str | Path | None = None,
    format: str = "auto",  # noqa: A002 - the user-facing key is `format`
    model_name: str | Sequence[str] | None = None,
    model_author: str | Sequence[str] | None = None,
    seed: int = 42,
    converters: Mapping[str, Format] = FORMATS,
    max_samples: int | None = None,
    mix_strategy: str = "concat",
    interleave_probs: Sequence[float] = (),
) -> list[Record]:
    """Read, convert and validate datasets; several datasets are concatenated in the given order, or
    interleaved (data/mix.py: LLaMA-Factory's mix_strategy, seeded by `seed`).

    `converters` is the format registry (preference/KTO recipes pass their own). Raises DataError listing
    every problem of every file.

    >>> rows = load_records(["data/identity.json#16"], model_name="Ember", model_author="us")  # doctest: +SKIP
    """
    loaded = load_datasets(
        datasets,
        dataset_dir=dataset_dir,
        format=format,
        model_name=model_name,
        model_author=model_author,
        seed=seed,
        converters=converters,
        max_samples=max_samples,
    )
    return mix([item.records for item in loaded], mix_strategy, interleave_probs, seed)


def load_config_records(data: Any, seed: int, converters: Mapping[str, Format] = FORMATS) -> list[Record]:
    """The records a recipe trains on, from its data config (dataset, dataset_dir, format, name/author)."""
    return load_records(
        data.dataset,
        dataset_dir=data.dataset_dir,
        format=data.format,
        model_name=data.model_name,
        model_author=data.model_author,
        seed=seed,
        converters=converters,
        max_samples=data.max_samples,
        mix_strategy=data.mix_strategy,
        interleave_probs=data.interleave_probs,
    )


def load_train_val(
    data: Any, seed: int, converters: Mapping[str, Format] = FORMATS
) -> tuple[list[Record], list[Record]]:
    """A data config's (train, validation) records: val_dataset's own rows when given (sampled and cut like
    the training data), else a seeded `val_size` split of the training rows."""
    records = load_config_records(data, seed, converters)
    if data.val_dataset:
        return records, load_config_records(replace(data, dataset=list(data.val_dataset)), seed, converters)
    return split_validation(records, data.val_size, seed)


def load_datasets(
    datasets: Sequence[str],
    *,
    dataset_dir: str | Path | None = None,
    format: str = "auto",  # noqa: A002
    model_name: str | Sequence[str] | None = None,
    model_author: str | Sequence[str] | None = None,
    seed: int = 42,
    converters: Mapping[str, Format] = FORMATS,
    max_samples: int | None = None,
) -> list[Loaded]:
    """Like load_records but keeps one Loaded per dataset (format, row count) for reports like `data check`.

    Each dataset is sampled by its `#N` (or dataset_info num_samples) and then cut to its first `max_samples`
    records, in that order, as LLaMA-Factory does.
    """
    if format != "auto" and format not in converters:
        raise DataError(f"unknown format {format!r}; expected auto or one of {', '.join(converters)}")
    sources = resolve_sources(datasets, dataset_dir)
    fill = placeholder_values(model_name, model_author)
    problems: list[str] = []
    out: list[Loaded] = []
    for src in sources:
        fmt_name = src.format or (None if format == "auto" else format)
        item = _load_one(src, fmt_name, converters, fill, problems)
        if item is not None:
            item.records = sample(item.records, src.limit, seed)[:max_samples]
            out.append(item)
    if problems:
        raise DataError(
            f"{len(problems)} problem(s) in the data; nothing was loaded.",
            problems,
            hint="Fix the rows listed (file:row:field), or pass --format if the format was mis-detected.",
        )
    return out


def _other_task(path: Path, rows: list[tuple[int, dict[str, Any]]], converters: Mapping[str, Format]) -> str:
    """The line for preference or KTO rows given to a loader of another task (`temper sft --dataset
    dpo_en_demo.json`), or "". Without it the report is one "last turn must be assistant" line per row."""
    from temper.data.pref_formats import preference_task

    task = next((t for _, r in rows[:50] if (t := preference_task(r))), None)
    if task is None or task in converters:
        return ""
    fields, verbs = {
        "preference": ("chosen/rejected replies", "temper dpo, orpo, simpo or rm"),
        "kto": ("a kto_tag/label", "temper kto"),
    }[task]
    return (
        f"{path}: these rows hold {fields}: they are {task} data, for {verbs}, not this task "
        f"(`temper data check {path}` checks them as {task} data; --format FORMAT reads them as that format)."
    )


def _load_one(
    src: Source,
    fmt_name: str | None,
    converters: Mapping[str, Format],
    fill: Mapping[str, tuple[str | None, str | None]],
    problems: list[str],
) -> Loaded | None:
    rows: list[tuple[int, dict[str, Any]]] = []
    for row_no, row in read_rows(src.path, problems):
        rows.append((row_no, _rename(row, src.columns, converters.get(fmt_name or "", None))))
    detected = fmt_name is None and src.path.suffix != ".txt"
    if src.path.suffix == ".txt" and fmt_name is None:
        fmt_name = "text"
    if fmt_name is None:
        fmt_name = next((f for _, r in rows if (f := detect_format(r, converters))), None)
        if fmt_name is None:
            keys = sorted({k for _, r in rows[:50] for k in r})
            problems.append(
                _other_task(src.path, rows, converters)
                or f"{src.path}:1: cannot detect the format from the keys {keys}; expected the fields of one of "
                f"{', '.join(converters)}. Pass --format."
            )
            return None
    if fmt_name not in converters:
        problems.append(
            f"{src.path}: format {fmt_name!r} is not handled here; expected one of {', '.join(converters)}"
        )
        return None
    fmt = converters[fmt_name]
    records: list[Record] = []
    unfilled = 0
    first_problem = len(problems)
    for row_no, row in rows:
        filled = fill_row(row, fill)
        unfilled += bool(PLACEHOLDER.search(json.dumps(filled, ensure_ascii=False)))
        try:
            rec = fmt.convert(filled, src.tags)
        except RowError as e:
            problems += [f"{src.path}:{row_no}:{f}: {m}" for f, m in e.problems]
            continue
        records.append(replace(rec, source=f"{src.path}:{row_no}"))
    looks_like = None if records else next((f for _, r in rows if (f := detect_format(r, converters))), None)
    if looks_like not in (None, fmt_name):
        # A forced format that fits no row: say so once, above the per-row lines, with the likely fix.
        problems.insert(
            first_problem,
            f"{src.path}: no row is {fmt_name}; the rows look like {looks_like}. Pass --format {looks_like} "
            "(or auto).",
        )
    elif detected and (line := _other_task(src.path, rows, converters)):
        # DPO pairs given to sft fail row by row: say why, and what to run. KTO rows read as SFT conversations
        # would train their undesirable replies as targets, so they are refused too (a forced --format takes them).
        problems.insert(first_problem, line)
    if unfilled:
        log.warning(
            "%s: %d of the file's %d row(s) keep {{name}}/{{author}} placeholders; pass --model-name/--model-author",
            src.path,
            unfilled,
            len(rows),
        )
    return Loaded(src, fmt_name, records, len(rows))


def _rename(row: dict[str, Any], columns: Mapping[str, str], fmt: Format | None) -> dict[str, Any]:
    """Apply dataset_info `columns` (LLaMA-Factory name -> file column) onto the format's own field names."""
    if not columns:
        return row
    out = dict(row)
    lf_names = fmt.lf_columns if fmt else {}
    for lf_name, file_col in columns.items():
        if file_col in row:
            out[lf_names.get(lf_name, lf_name)] = row[file_col]
    return out


def sample(records: list[T], limit: int | None, seed: int) -> list[T]:
    """`file#N`: N rows chosen with a seeded RNG (original order kept); N > rows repeats the set (upsampling).

    >>> sample(list(range(10)), 3, seed=42) == sample(list(range(10)), 3, seed=42)
    True
    """
    if limit is None or limit == len(records):
        return records
    rng = random.Random(seed)
    whole, rest = divmod(limit, len(records)) if records else (0, 0)
    picked = sorted(rng.sample(range(len(records)), rest))
    return records * whole + [records[i] for i in picked]


def split_validation(records: list[T], val_size: float, seed: int = 42) -> tuple[list[T], list[T]]:
    """Hold out a seeded random validation split: a fraction (< 1) or a row count (>= 1).

    >>> train, val = split_validation(list(range(10)), 0.2, seed=1); (len(train), len(val))
    (8, 2)
    """
    if val_size <= 0:
        return records, []
    n_val = int(val_size) if val_size >= 1 else max(1, round(len(records) * val_size))
    if n_val >= len(records):
        raise DataError(
            f"val_size={val_size} leaves no training rows ({len(records)} rows in all).",
            hint="Use a fraction below 1 (e.g. 0.1) or a smaller row count.",
        )
    held = set(random.Random(seed).sample(range(len(records)), n_val))
    train = [r for i, r in enumerate(records) if i not in held]
    return train, [r for i, r in enumerate(records) if i in held]


# ---------------------------------------------------------------- which files: plain paths or dataset_info names
def parse_spec(spec: str) -> tuple[str, int | None]:
    """'file.json#200' -> ('file.json', 200).

    >>> parse_spec("a.json#5")
    ('a.json', 5)
    """
    name, sep, count = spec.rpartition("#")
    if not sep:
        return spec, None
    if not count.isdigit() or int(count) == 0:
        raise DataError(
            f"bad dataset spec {spec!r}: the part after '#' must be a positive row count, got {count!r}"
        )
    return name, int(count)


def resolve_sources(datasets: Sequence[str], dataset_dir: str | Path | None) -> list[Source]:
    """Expand comma lists, `#N` and dataset_info.json names into Sources; every bad name is reported at once."""
    info = _dataset_info(Path(dataset_dir)) if dataset_dir else {}
    specs = [s.strip() for item in datasets for s in str(item).split(",") if s.strip()]
    if not specs:
        raise DataError(
            "no dataset given.", hint="Pass --dataset FILE (json, jsonl, csv, parquet, txt) or a name."
        )
    sources, problems, hints = [], [], []
    for spec in specs:
        name, limit = parse_spec(spec)
        try:
            sources.append(_source(spec, name, limit, info, dataset_dir))
        except DataError as e:
            problems.append(f"{spec}: {e.message}")
            hints += [e.hint] if e.hint else []
    if problems:
        raise DataError("cannot find the dataset(s):", problems, hint=" ".join(dict.fromkeys(hints)) or None)
    return sources


def _source(
    spec: str, name: str, limit: int | None, info: dict[str, Any], dataset_dir: str | Path | None
) -> Source:
    if name in info:
        entry = info[name]
        if "file_name" not in entry:
            hub = entry.get("hf_hub_url") or entry.get("ms_hub_url") or "a hub"
            raise DataError(
                f"dataset_info entry {name!r} is hosted on {hub}; temper works offline and reads local files only"
            )
        path = Path(dataset_dir or ".") / entry["file_name"]
        if not path.exists():
            raise DataError(f"dataset_info entry {name!r} points at {path}, which does not exist")
        wanted = entry.get("num_samples")  # LLaMA-Factory's per-dataset sample count; `name#N` overrides it
        if wanted is not None and (isinstance(wanted, bool) or not isinstance(wanted, int) or wanted < 1):
            raise DataError(
                f"dataset_info entry {name!r}: num_samples must be a positive integer, got {wanted!r}"
            )
        return Source(
            spec,
            path,
            limit if limit is not None else wanted,
            _info_format(entry),
            dict(entry.get("columns", {})),
            dict(entry.get("tags", {})),
        )
    for candidate in (Path(name), Path(dataset_dir or ".") / name):
        if candidate.is_file():
            if candidate.name == "dataset_info.json":
                local = [k for k, v in _dataset_info(candidate.parent).items() if "file_name" in v]
                raise DataError(
                    "LLaMA-Factory's index of datasets, not a dataset",
                    hint=f"Name its datasets: --dataset-dir {candidate.parent} --dataset NAME[,NAME] (local ones: "
                    f"{', '.join(local[:12])}{', ...' if len(local) > 12 else ''}).",
                )
            if candidate.suffix not in SUFFIXES:
                raise DataError(
                    f"{candidate}: unsupported file type {candidate.suffix!r}; expected {', '.join(SUFFIXES)}"
                )
            return Source(spec, candidate, limit)
    known = f" or one of the dataset_info names ({', '.join(list(info)[:12])}, ...)" if info else ""
    if re.fullmatch(r"[\w.-]+/[\w.-]+(:[\w.-]+)?", name) and Path(name).suffix not in SUFFIXES:
        # ms-swift's `--dataset AI-ModelScope/alpaca-gpt4-data-en#500`: a hub id, which offline cannot be fetched.
        raise DataError(
            f"no such file {name!r}: it looks like a ModelScope / Hugging Face dataset id, and temper reads "
            "local files only (it never downloads)",
            hint="Download it where a network is (modelscope download --dataset ID, or hf download ID --repo-type "
            "dataset) and pass the json/jsonl/csv/parquet file, as --dataset FILE#N.",
        )
    raise DataError(f"no such file {name!r}; expected a {'/'.join(SUFFIXES)} file{known}")


def _dataset_info(dataset_dir: Path) -> dict[str, Any]:
    path = dataset_dir / "dataset_info.json"
    if not path.is_file():
        raise DataError(
            f"--dataset-dir {dataset_dir}: no dataset_info.json there",
            hint="Point it at a LLaMA-Factory data dir.",
        )
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: invalid JSON: {e.msg}") from e
    if not isinstance(info, dict):
        raise DataError(f"{path}: expected an object of dataset name -> entry, got {type(info).__name__}")
    return info


def _info_format(entry: Mapping[str, Any]) -> str:
    """The converter name for a dataset_info entry (preference/KTO converters come from their recipes)."""
    columns = entry.get("columns", {})
    if entry.get("ranking"):
        return "preference"
    if "kto_tag" in columns:
        return "kto"
    if entry.get("formatting") == "sharegpt":
        return "sharegpt"
    if columns and set(columns) <= {"prompt"}:
        return "text"  # LLaMA-Factory's pre-training sets map only `prompt`
    return "alpaca"

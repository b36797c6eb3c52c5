"""Read data files (json, jsonl, csv, parquet, txt) and LLaMA-Factory data dirs into validated records.

Every problem in every file is collected as `file:row:field: message` and raised once as a DataError; no row is
ever dropped silently. Rows are 1-based: the record index for json/csv/parquet, the line number for jsonl/txt.

    >>> records = load_records(["../shared/data/llamafactory/identity.json"], model_name="Ember")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from temper.data.formats import FORMATS, Format, RowError, detect_format
from temper.data.mix import mix
from temper.data.placeholders import PLACEHOLDER, fill_row, placeholder_values
from temper.data.readers import read_rows
from temper.data.records import Record
from temper.data.sources import Source, column_fields, file_field, rename_columns, resolve_sources
from temper.errors import DataError

log = logging.getLogger(__name__)
T = TypeVar("T")


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
    fields = column_fields(src.columns, converters.get(fmt_name or ""))  # dataset_info `columns`
    unreadable = len(problems)
    rows = [(row_no, rename_columns(row, fields)) for row_no, row in read_rows(src.path, problems)]
    if not rows:
        # Nothing to detect a format from or to train on. Rows that could not be read (invalid JSON) are
        # already reported: a second line about the format would only restate them.
        if len(problems) == unreadable:
            problems.append(
                f"{src.path} has no rows (an empty file, an empty JSON list or only blank lines); "
                "add rows or leave it out of --dataset"
            )
        return None
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
            problems += [f"{src.path}:{row_no}:{file_field(f, fields)}: {m}" for f, m in e.problems]
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

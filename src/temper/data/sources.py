"""Which files to read: plain paths (`file.json#N`) and the names of a LLaMA-Factory dataset_info.json, resolved
into Sources before any row is read, and the entry's `columns` map applied to each row.

Every bad name is reported at once; a misspelled dataset_info key is an error rather than a silent default.

    >>> parse_spec("identity.json#50")
    ('identity.json', 50)
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from temper.data.formats import Format
from temper.data.readers import SUFFIXES
from temper.errors import DataError

# The keys LLaMA-Factory's parser.py (DatasetAttr and get_dataset_list) reads from a dataset_info entry; it
# ignores any other key, so a typo there ("colums") silently trains on the default columns. `revision` was read
# by older releases for hub datasets. temper reads file_name, formatting, ranking, num_samples, columns and
# tags; the others only matter for hub datasets, which it refuses with its own message.
ENTRY_KEYS = (
    "file_name",
    "formatting",
    "ranking",
    "subset",
    "split",
    "folder",
    "num_samples",
    "columns",
    "tags",
    "hf_hub_url",
    "ms_hub_url",
    "om_hub_url",
    "script_url",
    "cloud_file_name",
    "revision",
)
# LLaMA-Factory's `formatting` values (DatasetAttr.formatting); anything else it would fail on.
FORMATTINGS = ("alpaca", "sharegpt", "openai")
COLUMN_KEYS = (
    "prompt",
    "query",
    "response",
    "history",
    "messages",
    "system",
    "tools",
    "images",
    "videos",
    "audios",
    "chosen",
    "rejected",
    "kto_tag",
)
TAG_KEYS = (
    "role_tag",
    "content_tag",
    "user_tag",
    "assistant_tag",
    "observation_tag",
    "function_tag",
    "system_tag",
)


@dataclass
class Source:
    """One dataset to read: a file plus what dataset_info.json (if any) says about it."""

    spec: str  # what the user wrote, e.g. "identity.json#50" or "alpaca_en_demo"
    path: Path
    limit: int | None = None  # the N of `file#N`
    format: str | None = None  # None: explicit --format, else auto-detect
    columns: dict[str, str] = field(default_factory=dict)  # LLaMA-Factory column name -> file column
    tags: dict[str, str] = field(default_factory=dict)


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
    info = dataset_info(Path(dataset_dir)) if dataset_dir else {}
    specs = [s.strip() for item in datasets for s in str(item).split(",") if s.strip()]
    if not specs:
        local = _names_hint(Path(dataset_dir), info) if dataset_dir else ""
        raise DataError(
            "no dataset given.",
            hint=f"Pass --dataset FILE (json, jsonl, csv, parquet, txt) or a name{local}.",
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
        return _info_source(spec, name, limit, info[name], Path(dataset_dir or "."))
    for candidate in (Path(name), Path(dataset_dir or ".") / name):
        if candidate.is_dir():
            raise _directory_error(candidate)
        if candidate.is_file():
            if candidate.name == "dataset_info.json":
                raise DataError(
                    "LLaMA-Factory's index of datasets, not a dataset",
                    hint=f"Name its datasets: --dataset-dir {candidate.parent} --dataset NAME[,NAME]"
                    f"{_names_hint(candidate.parent, dataset_info(candidate.parent))}.",
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


def _info_source(spec: str, name: str, limit: int | None, entry: Any, dataset_dir: Path) -> Source:
    """A Source from one dataset_info entry, after checking its keys against LLaMA-Factory's."""
    check_entry(dataset_dir / "dataset_info.json", name, entry)
    if "file_name" not in entry:
        hub = entry.get("hf_hub_url") or entry.get("ms_hub_url") or "a hub"
        raise DataError(
            f"dataset_info entry {name!r} is hosted on {hub}; temper works offline and reads local files only"
        )
    path = dataset_dir / entry["file_name"]
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
        info_format(entry),
        dict(entry.get("columns", {})),
        dict(entry.get("tags", {})),
    )


def check_entry(path: Path, name: str, entry: Any) -> None:
    """Raise a DataError naming every unknown key of a dataset_info entry (and of its columns and tags), with
    the closest valid key; LLaMA-Factory itself would ignore them and read its defaults instead.

    >>> try:
    ...     check_entry(Path("dataset_info.json"), "mine", {"file_name": "a.json", "colums": {}})
    ... except DataError as e:
    ...     print(e.message)
    dataset_info.json: entry 'mine': unknown key 'colums' (did you mean 'columns'?)
    """
    if not isinstance(entry, dict):
        raise DataError(f"{path}: entry {name!r} must be an object of settings, got {type(entry).__name__}")
    bad = _unknown(entry, ENTRY_KEYS, "")
    formatting = entry.get("formatting", "alpaca")
    if formatting not in FORMATTINGS:
        close = difflib.get_close_matches(str(formatting), FORMATTINGS, n=1, cutoff=0.6)
        guess = f"did you mean {close[0]!r}?" if close else f"expected one of {', '.join(FORMATTINGS)}"
        bad.append(f"formatting {formatting!r} ({guess})")
    for section, allowed in (("columns", COLUMN_KEYS), ("tags", TAG_KEYS)):
        value = entry.get(section, {})
        if not isinstance(value, dict):
            bad.append(
                f"{section!r} must be an object of {section[:-1]} name -> name, got {type(value).__name__}"
            )
        else:
            bad += _unknown(value, allowed, f" in {section}")
    if bad:
        raise DataError(
            f"{path}: entry {name!r}: {'; '.join(bad)}",
            hint="LLaMA-Factory ignores unknown keys and reads its defaults, so a typo would train on the wrong "
            "columns; fix the key (see LLaMA-Factory's data/README.md).",
        )


def _unknown(settings: Mapping[str, Any], allowed: Sequence[str], where: str) -> list[str]:
    out = []
    for key in settings:
        if key in allowed:
            continue
        close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
        guess = f"did you mean {close[0]!r}?" if close else f"expected one of {', '.join(allowed)}"
        out.append(f"unknown key {key!r}{where} ({guess})")
    return out


def _directory_error(folder: Path) -> DataError:
    """A folder given where a data file goes: a LLaMA-Factory data folder is read by dataset name."""
    if (folder / "dataset_info.json").is_file():
        return DataError(
            f"{folder} is a LLaMA-Factory data folder (it holds dataset_info.json), not a data file",
            hint=f"Name its datasets: --dataset-dir {folder} --dataset NAME[,NAME]"
            f"{_names_hint(folder, dataset_info(folder))}; check one with "
            f"`temper data check --dataset-dir {folder} --dataset NAME`.",
        )
    files = sorted(str(p) for p in folder.iterdir() if p.is_file() and p.suffix in SUFFIXES)
    shown = f": {', '.join(files[:5])}{', ...' if len(files) > 5 else ''}" if files else ""
    return DataError(
        f"{folder} is a directory; expected a data file ({', '.join(SUFFIXES)})",
        hint=f"Pass one of its data files{shown}." if files else "Pass a data file, not the folder it is in.",
    )


def local_names(dataset_dir: Path, info: Mapping[str, Any]) -> list[str]:
    """The dataset_info names whose files are there (LLaMA-Factory's index lists demo files it does not ship)."""
    return [
        name
        for name, entry in info.items()
        if isinstance(entry, dict)
        and isinstance(entry.get("file_name"), str)
        and (dataset_dir / entry["file_name"]).exists()
    ]


def _names_hint(dataset_dir: Path, info: Mapping[str, Any]) -> str:
    local = local_names(dataset_dir, info)
    return f" (local ones: {', '.join(local[:12])}{', ...' if len(local) > 12 else ''})" if local else ""


def dataset_info(dataset_dir: Path) -> dict[str, Any]:
    """The parsed dataset_info.json of a LLaMA-Factory data dir."""
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


def info_format(entry: Mapping[str, Any]) -> str:
    """The converter name for a dataset_info entry (preference/KTO converters come from their recipes)."""
    columns = entry.get("columns", {})
    if entry.get("ranking"):
        return "preference"
    if "kto_tag" in columns:
        return "kto"
    if entry.get("formatting") in ("sharegpt", "openai"):
        # LLaMA-Factory's `openai` converter reads the same message list through the same tags (an OpenAI-style
        # file names them: role/content/user/assistant/system); a leading system message becomes the system.
        return "sharegpt"
    if columns and set(columns) <= {"prompt"}:
        return "text"  # LLaMA-Factory's pre-training sets map only `prompt`
    return "alpaca"


# ---------------------------------------------------------------- dataset_info `columns` on each row
def column_fields(columns: Mapping[str, str], fmt: Format | None) -> dict[str, str]:
    """dataset_info `columns` as {field the converter reads: the file's column}, e.g. alpaca's
    {"response": "a"} -> {"output": "a"}.

    >>> from temper.data.formats import FORMATS
    >>> column_fields({"prompt": "q", "response": "a"}, FORMATS["alpaca"])
    {'instruction': 'q', 'output': 'a'}
    """
    lf_names = fmt.lf_columns if fmt else {}
    return {lf_names.get(lf_name, lf_name): file_col for lf_name, file_col in columns.items()}


def rename_columns(row: dict[str, Any], fields: Mapping[str, str]) -> dict[str, Any]:
    """The row with each mapped field read from its own column only: when `response` maps to `a`, a row
    without `a` misses its reply even if it has an `output` column (as in LLaMA-Factory, which never falls back
    to the default name)."""
    if not fields:
        return row
    out = {k: v for k, v in row.items() if k not in fields}
    out.update({name: row[col] for name, col in fields.items() if col in row})
    return out


def file_field(problem_field: str, fields: Mapping[str, str]) -> str:
    """A converter's field name in a problem, spelled as the file's column: `output` -> `a`, and
    `conversations[2].from` -> `dialog[2].from` when `messages` maps to `dialog`.

    >>> file_field("history[0][1]", {"history": "past"})
    'past[0][1]'
    """
    head = re.match(r"[A-Za-z_]\w*", problem_field)
    if head is None or head.group() not in fields:
        return problem_field
    return fields[head.group()] + problem_field[head.end() :]

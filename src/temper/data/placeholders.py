"""{{name}}/{{author}} placeholders (LLaMA-Factory's identity.json, ms-swift's {{NAME}}/{{AUTHOR}}
self-cognition data), filled from --model-name / --model-author as rows are read (temper.data.load)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

PLACEHOLDER = re.compile(r"\{\{(name|author|NAME|AUTHOR)\}\}")


def placeholder_values(
    name: str | Sequence[str] | None, author: str | Sequence[str] | None
) -> dict[str, tuple[str | None, str | None]]:
    """placeholder -> (value for rows tagged zh, value for the others); one value serves both (ms-swift's
    self-cognition convention: `--model_name 小黄 'Xiao Huang'`)."""

    def pair(value: str | Sequence[str] | None) -> tuple[str | None, str | None]:
        values = [value] if isinstance(value, str) else list(value or [])
        return (values[0], values[-1]) if values else (None, None)

    return {"name": pair(name), "NAME": pair(name), "author": pair(author), "AUTHOR": pair(author)}


def fill_row(row: dict[str, Any], fill: Mapping[str, tuple[str | None, str | None]]) -> Any:
    """`row` with its placeholders filled: the zh value for rows tagged zh, the other value otherwise."""
    side = 0 if row.get("tag") == "zh" else 1
    return _fill(row, {k: v[side] for k, v in fill.items()})


def _fill(value: Any, fill: Mapping[str, str | None]) -> Any:
    """Replace {{name}}/{{author}}/{{NAME}}/{{AUTHOR}} in every string of a row; unknown values stay as-is."""
    if isinstance(value, str):
        if "{{" not in value:
            return value
        return PLACEHOLDER.sub(lambda m: fill.get(m.group(1)) or m.group(0), value)
    if isinstance(value, dict):
        return {k: _fill(v, fill) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, fill) for v in value]
    return value

"""Eval reports: EvalScope's table (| Model | Dataset | Metric | Subset | Num | Score | Cat.0 |), a JSON report
and per-sample jsonl files in an `eval-<dataset>-<time>/` folder.

Example:
    >>> s = SubsetScore("logic", 10, {"AverageAccuracy": 0.3}, "Humanities")
    >>> [r["subset"] for r in summary_rows("m", "ceval", [s])]
    ['logic', 'OVERALL']
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from temper.runs import write_json_atomic

COLUMNS = ("Model", "Dataset", "Metric", "Subset", "Num", "Score", "Cat.0")


@dataclass
class SubsetScore:
    name: str
    num: int
    metrics: dict[str, float]  # metric -> score
    category: str = "-"
    samples: list[dict[str, Any]] = field(default_factory=list)  # per-item rows for the jsonl


def summary_rows(
    model: str, dataset: str, subsets: Sequence[SubsetScore], overall: dict[str, float] | None = None
) -> list[dict[str, Any]]:
    """One row per (subset, metric), then OVERALL rows per category (when there are several) and for all.

    OVERALL is the item-weighted mean (accuracy over all items), unless `overall` gives it (perplexity).
    """
    rows: list[dict[str, Any]] = []
    metrics = list(subsets[0].metrics) if subsets else []

    def add(subset: str, num: int, metric: str, score: float, cat: str) -> None:
        rows.append({"model": model, "dataset": dataset, "metric": metric, "subset": subset, "num": num,
                     "score": score, "cat0": cat})  # fmt: skip

    for s in subsets:
        for m in metrics:
            add(s.name, s.num, m, s.metrics[m], s.category)
    cats = sorted({s.category for s in subsets if s.category != "-"})
    groups = [(c, [s for s in subsets if s.category == c]) for c in cats] if len(cats) > 1 else []
    for label, group in [*groups, ("-" if not cats else "ALL", list(subsets))]:
        num = sum(s.num for s in group)
        for m in metrics:
            score = (overall or {}).get(m) if label in ("-", "ALL") and overall else None
            if score is None:
                score = sum(s.metrics[m] * s.num for s in group) / num if num else 0.0
            add("OVERALL", num, m, score, label)
    return rows


def _fmt(score: float) -> str:
    return f"{score:.4f}" if abs(score) < 1000 else f"{score:.1f}"


def render_table(rows: Sequence[dict[str, Any]], title: str | None = None) -> Any:
    from rich.table import Table

    table = Table(title=title)
    for col in COLUMNS:
        table.add_column(col, justify="right" if col in ("Num", "Score") else "left")
    for r in rows:
        table.add_row(
            r["model"], r["dataset"], r["metric"], r["subset"], str(r["num"]), _fmt(r["score"]), r["cat0"]
        )
    return table


def compare_rows(rows_a: Sequence[dict[str, Any]], rows_b: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Join two models' rows on (metric, subset, cat0): both scores and B - A."""
    index = {(r["metric"], r["subset"], r["cat0"]): r for r in rows_b}
    out = []
    for a in rows_a:
        b = index.get((a["metric"], a["subset"], a["cat0"]))
        if b is not None:
            out.append({**a, "model_b": b["model"], "score_b": b["score"], "delta": b["score"] - a["score"]})
    return out


def render_compare(rows: Sequence[dict[str, Any]], title: str | None = None) -> Any:
    from rich.table import Table

    if not rows:
        return Table(title=title)
    table = Table(title=title)
    for col in (
        "Dataset",
        "Metric",
        "Subset",
        "Num",
        rows[0]["model"],
        rows[0]["model_b"],
        "Diff (B-A)",
        "Cat.0",
    ):
        table.add_column(col, justify="left" if col in ("Dataset", "Metric", "Subset", "Cat.0") else "right")
    for r in rows:
        delta = f"{r['delta']:+.4f}"
        table.add_row(r["dataset"], r["metric"], r["subset"], str(r["num"]), _fmt(r["score"]), _fmt(r["score_b"]),
                      delta, r["cat0"])  # fmt: skip
    return table


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        cells = [
            r["model"],
            r["dataset"],
            r["metric"],
            r["subset"],
            str(r["num"]),
            _fmt(r["score"]),
            r["cat0"],
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def new_output_dir(base: Path, dataset: str) -> Path:
    """base/eval-<dataset>-<YYYYmmdd-HHMMSS>/ (a numeric suffix when two runs start in the same second)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = base / f"eval-{dataset}-{stamp}"
    n = 1
    while out.exists():
        n += 1
        out = base / f"eval-{dataset}-{stamp}-{n}"
    out.mkdir(parents=True)
    return out


def safe_name(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(label).name or label)


def write_samples(path: Path, model: str, subsets: Sequence[SubsetScore]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for s in subsets:
            for row in s.samples:
                f.write(json.dumps({"model": model, "subset": s.name, **row}, ensure_ascii=False) + "\n")


def write_report(out_dir: Path, report: dict[str, Any], rows: Sequence[dict[str, Any]]) -> Path:
    """report.json (config, timing, rows) and table.md; returns the JSON path."""
    path = out_dir / "report.json"
    write_json_atomic(path, {**report, "rows": list(rows)})
    (out_dir / "table.md").write_text(markdown_table(rows), encoding="utf-8")
    return path

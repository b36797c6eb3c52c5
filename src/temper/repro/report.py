"""The report every repro recipe writes: `report.json` for programs and `report.md` for people.

Each result row puts our number beside the published one with its citation and the difference, and the
report states which model actually ran (the bundled MiniLM is not BERT-base) and the pinned protocol.

Example:
    >>> r = Report("demo", "A demo", model="minilm-l6", protocol={"seed": 1})
    >>> r.add("accuracy", 0.80, 0.845, "Devlin et al. 2019")
    >>> r.rows[0]["difference"]
    -0.045
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from temper.runs import library_versions, write_json_atomic


@dataclass
class Report:
    name: str
    title: str
    model: str  # what actually ran, said plainly
    protocol: dict[str, Any] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # extra tables, title -> rows
    notes: list[str] = field(default_factory=list)
    quick: bool = False
    seconds: float = 0.0

    def add(self, metric: str, ours: float, paper: float | None, source: str, note: str = "") -> None:
        """One comparison row; difference = ours - paper, rounded for reading."""
        diff = None if paper is None else round(ours - paper, 4)
        self.rows.append(
            {
                "metric": metric,
                "ours": round(ours, 4),
                "paper": paper,
                "source": source,
                "difference": diff,
                "note": note,
            }
        )


def _table(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for r in rows:
        cells = [f"{v:.4g}" if isinstance(v, float) else ("" if v is None else str(v)) for v in r.values()]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def write_report(report: Report, out_dir: str | Path) -> Path:
    """Write report.json and report.md into out_dir; returns the markdown path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = {**asdict(report), "versions": library_versions(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    write_json_atomic(out / "report.json", data)
    lines = [f"# {report.title}", "", f"**Model that ran:** {report.model}", ""]
    if report.quick:
        lines += [
            "> QUICK run (reduced protocol for CI): the numbers below are a smoke test, not a result.",
            "",
        ]
    lines += ["## Protocol", ""] + [f"- {k}: {v}" for k, v in report.protocol.items()] + [""]
    lines += ["## Results", ""] + _table(report.rows) + [""]
    for title, rows in report.tables.items():
        lines += [f"## {title}", ""] + _table(rows) + [""]
    if report.notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in report.notes] + [""]
    lines += [
        f"Ran in {report.seconds:.1f} s with torch {data['versions'].get('torch', '?')}, "
        f"transformers {data['versions'].get('transformers', '?')}."
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path

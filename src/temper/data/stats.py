"""Token statistics of a run's data (`temper data stats`): length histogram, truncation, padding ratio.

>>> s = data_stats("runs/identity")  # doctest: +SKIP
>>> print_stats(s)  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from temper.data.collate import batches_of, length_grouped_order, pack_samples, padding_ratio
from temper.data.load import load_records
from temper.data.templates import prepare_tokenizer
from temper.data.tokenize import EncodeStats, encode_dataset
from temper.errors import TemperError


@dataclass
class DataStats:
    """What `temper data stats` reports; padding ratios are fractions of the padded batch tensors."""

    source: str
    encode: EncodeStats
    max_length: int
    batch_size: int
    padding_random: float  # batches in random order
    padding_grouped: float  # batches grouped by length (what training does without packing)
    padding_packed: float  # packed rows of max_length
    n_packed_rows: int
    trained: dict[str, Any] | None = None  # a run dir's manifest "batches": the layout training used


def _trained_batches(target: str | Path) -> dict[str, Any] | None:
    """The batch layout a run dir's training recorded (runs from before it was recorded have none)."""
    from temper.runs import MANIFEST, read_manifest

    if not (Path(target) / MANIFEST).is_file():
        return None
    batches = read_manifest(target).get("batches")
    return batches if isinstance(batches, dict) else None


def _config_and_tokenizer(target: str | Path) -> tuple[Any, Any]:
    from temper.config import SFTConfig
    from temper.models.load import RUN_MANIFEST, load_tokenizer, resolve_model

    path = Path(target)
    if path.is_dir():
        if not (path / "config.yaml").is_file():
            raise TemperError(
                f"{path} has no config.yaml.", hint="Pass a temper run dir or an SFT YAML config."
            )
        cfg = SFTConfig.from_sources(path / "config.yaml")
        # A run dir's saved tokenizer carries any template override (load_tokenizer prefers it); a folder with
        # only a config.yaml (a run that crashed early) falls back to the configured model.
        if (path / RUN_MANIFEST).is_file():
            return cfg, load_tokenizer(str(path))
        return cfg, load_tokenizer(resolve_model(cfg.model.model, cfg.model.adapter))
    if path.is_file() and path.suffix in (".yaml", ".yml"):
        cfg = SFTConfig.from_sources(path)
        return cfg, load_tokenizer(resolve_model(cfg.model.model, cfg.model.adapter))
    raise TemperError(
        f"{target!r} is neither a run directory nor a YAML config.",
        hint="e.g. temper data stats runs/identity",
    )


def data_stats(target: str | Path, batch_size: int | None = None) -> DataStats:
    """Load and tokenize a run's (or config's) data with its tokenizer and measure lengths and padding.

    >>> data_stats("configs/sft_lora_identity.yaml").encode.n_truncated  # doctest: +SKIP
    0
    """
    cfg, tok = _config_and_tokenizer(target)
    d = cfg.data
    tok = prepare_tokenizer(tok, cfg.model.template)
    records = load_records(
        d.dataset,
        dataset_dir=d.dataset_dir,
        format=d.format,
        model_name=d.model_name,
        model_author=d.model_author,
        seed=cfg.train.seed,
        max_samples=d.max_samples,
    )
    samples, stats = encode_dataset(
        records,
        tok,
        d.max_length,
        d.truncation,
        system=d.system,
        train_on_prompt=d.train_on_prompt,
        mask_history=d.mask_history,
    )
    bs = batch_size or cfg.train.per_device_train_batch_size
    lengths = [len(s["input_ids"]) for s in samples]
    rows = pack_samples(samples, d.max_length) if samples else []
    row_lengths = [len(r["input_ids"]) for r in rows]
    return DataStats(
        source=str(target),
        encode=stats,
        max_length=d.max_length,
        batch_size=bs,
        padding_random=padding_ratio(batches_of(lengths, range(len(lengths)), bs)),
        padding_grouped=padding_ratio(
            batches_of(lengths, length_grouped_order(lengths, bs, cfg.train.seed), bs)
        ),
        padding_packed=padding_ratio(batches_of(row_lengths, range(len(rows)), bs)),
        n_packed_rows=len(rows),
        trained=_trained_batches(target),
    )


def histogram(lengths: list[int], bins: int = 10) -> list[tuple[int, int, int]]:
    """(low, high, count) for `bins` equal-width bins over the lengths.

    >>> histogram([1, 2, 3, 10], bins=3)
    [(1, 4, 3), (5, 8, 0), (9, 10, 1)]
    """
    if not lengths:
        return []
    lo, hi = min(lengths), max(lengths)
    width = max(1, -(-(hi - lo + 1) // bins))
    out = []
    for b in range(bins):
        a = lo + b * width
        if a > hi:
            break
        z = min(hi, a + width - 1)
        out.append((a, z, sum(a <= n <= z for n in lengths)))
    return out


def print_stats(s: DataStats) -> None:
    """Print the histogram and counts with rich."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    e = s.encode
    table = Table(title=f"token lengths of {s.source} ({e.n_rows} rows, before truncation)")
    table.add_column("tokens", justify="right")
    table.add_column("rows", justify="right")
    table.add_column("")
    hist = histogram(e.lengths)
    top = max((c for _, _, c in hist), default=1) or 1
    for a, z, c in hist:
        over = " (> max_length)" if a > s.max_length else ""
        table.add_row(f"{a}-{z}", str(c), "█" * round(40 * c / top) + over)
    console.print(table)
    longest = max(e.lengths, default=0)
    console.print(f"max_length {s.max_length}: longest row {longest} tokens; {e.summary()}")
    console.print(
        f"padding at batch size {s.batch_size}: random order {s.padding_random:.1%}, "
        f"grouped by length {s.padding_grouped:.1%}, packed ({s.n_packed_rows} rows) {s.padding_packed:.1%}"
    )
    if s.trained:
        t = s.trained
        console.print(
            f"this run trained on {t.get('layout')} batches of {t.get('per_device_batch_size')} per device, "
            f"order {t.get('order')}: padding {t.get('padding', 0):.1%}"
            + (
                f" (padded batches would have been {t.get('padding_if_padded', 0):.1%})"
                if t.get("layout") == "padding-free"
                else ""
            )
        )

"""Encoder inference throughput on this machine: sequences/s at lengths 128 and 512.

Contenders: the real bundled MiniLM-L6 (22.7M parameters) and randomly initialised BERT-base- and
DistilBERT-shaped models built from their published configurations (speed does not depend on the weights,
and no BERT-base weights are available offline). Every contender runs fp32, under torch.no_grad, with the
same thread count and batch, after one warm-up batch; the report states the thread count.

The published reference is DistilBERT's CPU inference time (Sanh et al. 2019, Table 3: BERT-base 668 s,
DistilBERT 410 s on STS-B, batch 1), i.e. a 1.63x speed-up; we compare our measured ratio with it.

Example:
    >>> from temper.repro.efficiency import run   # doctest: +SKIP
    >>> run("reports/efficiency", quick=True)     # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from temper.repro.report import Report, write_report

DISTIL_PAPER = (
    668 / 410,
    "Sanh et al. 2019, DistilBERT, Table 3 (CPU inference: BERT-base 668 s, DistilBERT 410 s)",
)


def _minilm() -> Any:
    from transformers import AutoModel

    from temper.models.load import resolve

    return AutoModel.from_pretrained(resolve("minilm-l6").path, local_files_only=True)


def _bert_base() -> Any:
    from transformers import BertConfig, BertModel

    return BertModel(BertConfig())  # the BERT-base shape: 12 layers, hidden 768, 12 heads, 110M parameters


def _distilbert() -> Any:
    from transformers import DistilBertConfig, DistilBertModel

    return DistilBertModel(DistilBertConfig())  # 6 layers, hidden 768, 66M parameters


# name -> (builder, label stating where the weights come from)
CONTENDERS: dict[str, tuple[Callable[[], Any], str]] = {
    "minilm-l6": (_minilm, "real weights (bundled all-MiniLM-L6-v2)"),
    "distilbert-base-shaped": (_distilbert, "random init, DistilBERT-base config"),
    "bert-base-shaped": (_bert_base, "random init, BERT-base config"),
}


@torch.no_grad()
def throughput(model: Any, length: int, batch: int, iters: int) -> float:
    """Sequences per second over `iters` timed batches of random token ids (after one warm-up batch)."""
    model.eval()
    ids = torch.randint(1000, 2000, (batch, length))
    mask = torch.ones_like(ids)
    model(input_ids=ids, attention_mask=mask)
    start = time.perf_counter()
    for _ in range(iters):
        model(input_ids=ids, attention_mask=mask)
    return batch * iters / (time.perf_counter() - start)


def run(out_dir: str | Path, quick: bool = False, contenders: list[str] | None = None) -> Report:
    """Measure every contender at each length and write report.md / report.json.

    quick: length 128 only, batch 2, one timed batch, MiniLM and the DistilBERT shape (CI smoke form).
    """
    start = time.perf_counter()
    torch.manual_seed(0)
    names = contenders or (["minilm-l6", "distilbert-base-shaped"] if quick else list(CONTENDERS))
    lengths = [128] if quick else [128, 512]
    batch, iters = (2, 1) if quick else (8, 3)
    report = Report(
        "efficiency",
        "Encoder inference throughput on this machine (sequences/s)",
        model="; ".join(f"{n}: {CONTENDERS[n][1]}" for n in names),
        protocol={
            "threads": torch.get_num_threads(),
            "dtype": "fp32",
            "batch": batch,
            "timed_batches": iters,
            "lengths": lengths,
            "inputs": "random token ids, no padding",
            "grad": "torch.no_grad",
        },
        quick=quick,
    )
    table = []
    speed: dict[tuple[str, int], float] = {}
    for name in names:
        model = CONTENDERS[name][0]()
        params = sum(p.numel() for p in model.parameters()) / 1e6
        for length in lengths:
            speed[(name, length)] = throughput(model, length, batch, iters)
            table.append(
                {
                    "model": name,
                    "weights": CONTENDERS[name][1],
                    "params_M": round(params, 1),
                    "length": length,
                    "seq_per_s": round(speed[(name, length)], 2),
                }
            )
        del model
    report.tables["Throughput"] = table
    if ("bert-base-shaped", 128) in speed and ("distilbert-base-shaped", 128) in speed:
        ratio = speed[("distilbert-base-shaped", 128)] / speed[("bert-base-shaped", 128)]
        report.add(
            "DistilBERT / BERT-base speed ratio (len 128)",
            ratio,
            round(DISTIL_PAPER[0], 3),
            DISTIL_PAPER[1],
            note="paper: full STS-B dev inference, batch 1, their CPU; ours: random-init shapes",
        )
    if ("bert-base-shaped", 128) in speed and ("minilm-l6", 128) in speed:
        ratio = speed[("minilm-l6", 128)] / speed[("bert-base-shaped", 128)]
        report.add("MiniLM-L6 / BERT-base speed ratio (len 128)", ratio, None, "no published CPU number used")
    report.notes.append(
        "Throughput depends on the machine and its load; compare rows of one report, not across machines."
    )
    report.seconds = time.perf_counter() - start
    write_report(report, out_dir)
    return report

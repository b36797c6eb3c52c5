"""Time a C-Eval val pass (logits MCQ scoring) of the bundled model with temper: wall and process CPU seconds.

On a shared machine the wall time depends on the other load; process CPU time (user+sys) with one thread is
close to what a quiet core needs, so both are printed, with the load average, and written as JSON. With
`--limit N` each of the 52 subjects contributes its first N questions (a representative sample of lengths) and
the full 1,346-question time is extrapolated from the per-item cost.

    .venv/bin/python bench/eval_speed.py --threads 1 --limit 2 --out bench/results/eval_speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

import torch

from temper.evaluation.datasets import load_mcq
from temper.evaluation.mcq import score_mcq_logits
from temper.models.load import load_causal_lm

CEVAL_VAL_ITEMS = 1346


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--data", default="../shared/data/ceval")
    ap.add_argument("--limit", type=int, default=None, help="questions per subject (default: all)")
    ap.add_argument("--subjects", default="", help="comma-separated subjects (default: all 52)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--no-prefix-cache", action="store_true")
    ap.add_argument("--out", default="bench/results/eval_speed.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, tok = load_causal_lm(args.model, dtype=args.dtype)
    subsets = load_mcq("ceval", args.data, [s for s in args.subjects.split(",") if s], limit=args.limit)
    n = sum(len(s.items) for s in subsets)
    load0, wall0, cpu0 = os.getloadavg()[0], time.perf_counter(), cpu_seconds()
    correct = 0.0
    for s in subsets:
        rows = score_mcq_logits(model, tok, s, batch_size=args.batch, prefix_cache=not args.no_prefix_cache)
        correct += sum(r["score"] for r in rows)
    wall, cpu = time.perf_counter() - wall0, cpu_seconds() - cpu0
    res = {
        "model": args.model, "subjects": [s.name for s in subsets], "dtype": str(model.dtype), "threads": args.threads, "batch": args.batch,
        "prefix_cache": not args.no_prefix_cache, "items": n, "accuracy": correct / n,
        "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "cpu_s_per_item": round(cpu / n, 3),
        "extrapolated_full_val_cpu_s": round(cpu / n * CEVAL_VAL_ITEMS, 1),
        "loadavg_start": load0, "loadavg_end": os.getloadavg()[0],
    }  # fmt: skip
    for k, v in res.items():
        print(f"{k:30} {v}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()

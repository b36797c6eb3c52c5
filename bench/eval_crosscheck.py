"""Cross-check temper's MCQ accuracy against a standalone plain-transformers scorer, item by item.

The reference below shares no code with temper.evaluation: it reads the CSVs with the csv module, writes the
prompt from the documented format (C-Eval's Chinese header / MMLU's English header, "A. ..." options, the answer
cue), wraps it with `tokenizer.apply_chat_template`, runs ONE unbatched, uncached forward per question over the
full sequence, and takes the argmax of the option letters' logits at the last position. temper runs its batched,
prefix-cached, logits_to_keep path. The script asserts that every prediction agrees and prints a table
(subject, items, accuracy of each, agreement, max |log-prob difference|), and writes JSON.

    .venv/bin/python bench/eval_crosscheck.py --data ../shared/data --threads 2 --limit 20 --out bench/results/eval_crosscheck.json
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

CEVAL = {"computer_network": "计算机网络", "operating_system": "操作系统", "marxism": "马克思主义基本原理",
         "logic": "逻辑学", "high_school_geography": "高中地理"}  # fmt: skip
MMLU = ["abstract_algebra", "anatomy", "astronomy", "business_ethics", "college_chemistry"]


def read_rows(path: Path, limit: int) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    return rows[:limit]


def ceval_items(root: Path, subject: str, limit: int) -> list[tuple[str, str]]:
    out = []
    for r in read_rows(root / "val" / f"{subject}_val.csv", limit):
        body = "\n".join([r["question"].strip()] + [f"{k}. {r[k].strip()}" for k in "ABCD"])
        text = f"以下是中国关于{CEVAL[subject]}考试的单项选择题，请选出其中的正确答案。\n\n{body}\n答案："
        out.append((text, r["answer"].strip()))
    return out


def mmlu_items(root: Path, subject: str, limit: int) -> list[tuple[str, str]]:
    out = []
    for r in read_rows(root / "test" / f"{subject}_test.csv", limit):
        options = [r[f"choice{i}"].strip() for i in range(4)]
        body = "\n".join([r["question"].strip()] + [f"{'ABCD'[i]}. {o}" for i, o in enumerate(options)])
        header = f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"
        out.append((header + body + "\nAnswer:", "ABCD"[int(r["answer"])]))
    return out


@torch.no_grad()
def reference_scores(model, tok, items: list[tuple[str, str]]) -> list[dict[str, float]]:  # type: ignore[no-untyped-def]
    letters = [tok.encode(x, add_special_tokens=False) for x in "ABCD"]
    assert all(len(t) == 1 for t in letters), letters
    out = []
    for text, _ in items:
        prompt = tok.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
        )
        ids = tok(prompt, add_special_tokens=False, return_tensors="pt").input_ids
        logits = model(ids).logits[0, -1].float()
        logp = torch.log_softmax(logits, -1)
        out.append({x: float(logp[t[0]]) for x, t in zip("ABCD", letters, strict=True)})
    return out


def temper_scores(
    model, tok, name: str, root: Path, subject: str, limit: int, batch: int
) -> list[dict[str, float]]:  # type: ignore[no-untyped-def]
    from temper.evaluation.datasets import load_mcq
    from temper.evaluation.mcq import score_mcq_logits

    subset = load_mcq(name, root, [subject], limit=limit)[0]
    return [r["logprobs"] for r in score_mcq_logits(model, tok, subset, chat=True, batch_size=batch)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--limit", type=int, default=20, help="items per subject")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--out", default="bench/results/eval_crosscheck.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from temper.models.load import resolve

    path = resolve(args.model).path
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, local_files_only=True).eval()
    data = Path(args.data)
    jobs = [("ceval", s, ceval_items) for s in CEVAL] + [("mmlu", s, mmlu_items) for s in MMLU]
    results, disagreements = [], 0
    print(
        f"{'dataset':7} {'subject':24} {'n':>4} {'ref acc':>8} {'temper acc':>10} {'agree':>6} {'max|dlogp|':>11} {'ref s':>7} {'temper s':>8}"
    )
    for name, subject, reader in jobs:
        items = reader(data / name, subject, args.limit)
        t0 = time.perf_counter()
        ref = reference_scores(model, tok, items)
        t1 = time.perf_counter()
        got = temper_scores(model, tok, name, data / name, subject, args.limit, args.batch)
        t2 = time.perf_counter()
        ref_pred = [max(r, key=r.get) for r in ref]  # type: ignore[arg-type]
        got_pred = [max(g, key=g.get) for g in got]  # type: ignore[arg-type]
        agree = sum(a == b for a, b in zip(ref_pred, got_pred, strict=True))
        diff = max(abs(r[k] - g[k]) for r, g in zip(ref, got, strict=True) for k in "ABCD")
        gold = [g for _, g in items]
        row = {"dataset": name, "subject": subject, "n": len(items),
               "ref_acc": sum(p == g for p, g in zip(ref_pred, gold, strict=True)) / len(items),
               "temper_acc": sum(p == g for p, g in zip(got_pred, gold, strict=True)) / len(items),
               "agree": agree, "max_abs_logp_diff": diff, "ref_seconds": t1 - t0, "temper_seconds": t2 - t1}  # fmt: skip
        results.append(row)
        disagreements += len(items) - agree
        print(f"{name:7} {subject:24} {len(items):4d} {row['ref_acc']:8.3f} {row['temper_acc']:10.3f} {agree:6d} "
              f"{diff:11.2e} {row['ref_seconds']:7.1f} {row['temper_seconds']:8.1f}", flush=True)  # fmt: skip
    total = sum(r["n"] for r in results)
    print(f"items {total}, disagreements {disagreements}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    summary = {"model": args.model, "threads": args.threads, "limit": args.limit, "dtype": "fp32",
               "items": total, "disagreements": disagreements, "subjects": results}  # fmt: skip
    Path(args.out).write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    assert disagreements == 0, f"{disagreements} items disagree"


if __name__ == "__main__":
    main()

"""DPO training speed: `temper dpo` against LLaMA-Factory `stage: dpo` on the same pairs (optional).

Both contenders train LoRA r8 (all linear layers) on the first N pairs of LLaMA-Factory's dpo_en_demo for one
epoch (same pairs, same order-independent total), batch 2 pairs, cutoff 512, sigmoid loss beta 0.1, bf16 when
the CPU has it, the reference model being the base with adapters off in both. Each runs as a subprocess with
the same thread pinning; we report pairs/s over the training loop (the Trainer's `train_runtime`, so model
loading and tokenization are excluded for both) and tokens/s = the non-padding tokens of those pairs (prompt +
chosen + prompt + rejected, tokenized by temper) / train_runtime. LLaMA-Factory truncates long pairs slightly
differently, so pairs/s is the exact comparison and tokens/s the readable one.

Example:
    .venv/bin/python bench/dpo.py --pairs 16 --threads 2                 # temper only
    .venv/bin/python bench/dpo.py --pairs 16 --threads 2 --llamafactory  # + /work/peers/llamafactory-venv
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from common import load_conditions, machine_info, print_table, run_tracked, thread_env, write_json

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "llamafactory" / "dpo_en_demo.json"
LF_VENV = REPO.parent / "peers" / "llamafactory-venv"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", type=int, default=16, help="first N pairs of dpo_en_demo (one epoch over them)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    p.add_argument("--llamafactory", action="store_true", help=f"also run LLaMA-Factory from {LF_VENV}")
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "dpo.json"))
    return p.parse_args(argv)


def subset_tokens(data: Path, max_length: int) -> int:
    """Non-padding tokens of every pair as temper feeds them (prompt + chosen, prompt + rejected)."""
    from temper.data.load import load_records
    from temper.data.pref_formats import PREFERENCE_FORMATS
    from temper.data.pref_tokenize import encode_pairs
    from temper.data.templates import prepare_tokenizer
    from temper.models.load import load_tokenizer

    tok = prepare_tokenizer(load_tokenizer("smollm2-135m-instruct"))
    rows, _ = encode_pairs(load_records([str(data)], converters=PREFERENCE_FORMATS), tok, max_length)
    return sum(2 * len(r["prompt_ids"]) + len(r["chosen_ids"]) + len(r["rejected_ids"]) for r in rows)


def run_temper(args: argparse.Namespace, data: Path, work: Path) -> dict[str, Any]:
    out = work / "temper"
    cmd = [sys.executable, "-m", "temper", "dpo", "--model", "smollm2-135m-instruct", "--dataset", str(data)]
    cmd += [
        "--output-dir",
        str(out),
        "--tuning",
        "lora",
        "--lora-rank",
        "8",
        "--beta",
        "0.1",
        "--epochs",
        "1",
    ]
    cmd += ["--batch-size", str(args.batch_size), "--max-length", str(args.max_length), "--lr", "5e-6"]
    cmd += [
        "--bf16",
        "true" if args.dtype == "bf16" else "false",
        "--save-steps",
        "100000",
        "--logging-steps",
        "1",
    ]
    run = run_tracked(cmd, thread_env(args.threads), work / "temper.log", cwd=REPO)
    manifest = json.loads((out / "temper_run.json").read_text()) if run.returncode == 0 else {}
    metrics = manifest.get("result", {}).get("metrics", {})
    return {
        "rc": run.returncode,
        "wall_s": run.wall_s,
        "peak_rss_mb": run.peak_rss_mb,
        "train_runtime": metrics.get("train_runtime"),
    }


def run_llamafactory(args: argparse.Namespace, data: Path, work: Path) -> dict[str, Any]:
    from temper.models.load import resolve

    (work / "lf_data").mkdir(exist_ok=True)
    (work / "lf_data" / "pairs.json").write_text(data.read_text())
    info = {"pairs": {"file_name": "pairs.json", "ranking": True, "formatting": "sharegpt"}}
    info["pairs"]["columns"] = {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"}
    (work / "lf_data" / "dataset_info.json").write_text(json.dumps(info))
    cfg = {
        "model_name_or_path": str(resolve("smollm2-135m-instruct").path),
        "stage": "dpo",
        "do_train": True,
        "finetuning_type": "lora",
        "lora_rank": 8,
        "lora_target": "all",
        "pref_beta": 0.1,
        "pref_loss": "sigmoid",
        "dataset": "pairs",
        "dataset_dir": str(work / "lf_data"),
        "template": "chatml",
        "cutoff_len": args.max_length,
        "overwrite_cache": True,
        "preprocessing_num_workers": 1,
        "output_dir": str(work / "lf_out"),
        "logging_steps": 1,
        "per_device_train_batch_size": args.batch_size,
        "gradient_accumulation_steps": 1,
        "learning_rate": 5e-6,
        "num_train_epochs": 1,
        "bf16": args.dtype == "bf16",
        "report_to": "none",
        "save_strategy": "no",
        "use_cpu": True,
    }
    (work / "lf.yaml").write_text(yaml.safe_dump(cfg))
    cmd = [str(LF_VENV / "bin" / "llamafactory-cli"), "train", str(work / "lf.yaml")]
    run = run_tracked(cmd, thread_env(args.threads), work / "llamafactory.log", cwd=work)
    results = work / "lf_out" / "all_results.json"
    runtime = json.loads(results.read_text()).get("train_runtime") if results.exists() else None
    return {
        "rc": run.returncode,
        "wall_s": run.wall_s,
        "peak_rss_mb": run.peak_rss_mb,
        "train_runtime": runtime,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-dpo-"))
    data = work / "pairs.json"
    data.write_text(json.dumps(json.loads(DATA.read_text())[: args.pairs], ensure_ascii=False))
    tokens = subset_tokens(data, args.max_length)
    results = {"temper": run_temper(args, data, work)}
    if args.llamafactory:
        results["llamafactory"] = run_llamafactory(args, data, work)
    rows = []
    for name, r in results.items():
        rt = r["train_runtime"]
        r["pairs_per_s"] = args.pairs / rt if rt else None
        r["tokens_per_s"] = tokens / rt if rt else None
        rows.append([name, r["rc"], rt, r["pairs_per_s"], r["tokens_per_s"], r["wall_s"], r["peak_rss_mb"]])
    report = {
        "bench": "dpo",
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "settings": vars(args) | {"tokens": tokens, "data": str(DATA)},
        "machine": machine_info(),
        "load": load_conditions(),
        "results": results,
        "work_dir": str(work),
    }
    write_json(Path(args.out), report)
    print_table(
        f"DPO LoRA r8, {args.pairs} pairs x 1 epoch, batch {args.batch_size}, {args.dtype}, {args.threads} threads",
        ["contender", "rc", "train s", "pairs/s", "tokens/s", "wall s", "peak RSS MB"],
        rows,
        caption=f"{tokens} tokens in the pairs; logs in {work}",
    )
    return 0 if all(r["rc"] == 0 for r in results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""Decoding speed of a LoRA run dir in `temper chat` / `temper infer`: its adapter folded into the fp32 weights
(what they do now) against peft's unmerged adapter (what `temper serve` keeps, to switch adapters per request),
with the bare base model as the floor.

The run dir is made here: a LoRA adapter (r8, all linear layers, non-zero B so it changes the answers) on the
bundled model, saved as `temper sft` saves one. Each variant is an Engine, the same greedy prompt and token count;
the variants take turns, round after round, so a slow spell of the machine falls on all of them. Reported:
decoded tokens/s (median over the rounds, prompt prefill included) and whether the merged engine's tokens equal
the unmerged one's.

    .venv/bin/python bench/chat_decode.py                        # 1 thread, 5 rounds of 64 tokens
    .venv/bin/python bench/chat_decode.py --threads 2 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from common import machine_info, print_table, write_json  # noqa: E402

VARIANTS = ("merged", "unmerged", "base")


def make_run(model: str, out: Path) -> Path:
    """A LoRA run dir (adapter, tokenizer, temper_run.json) whose adapter visibly changes the output."""
    import torch
    from peft import LoraConfig, get_peft_model

    from temper.models.load import load_causal_lm, resolve
    from temper.runs import write_manifest

    torch.manual_seed(0)
    base, tok = load_causal_lm(resolve(model), dtype="fp32")
    lora = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear"))
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    lora.save_pretrained(out)
    tok.save_pretrained(out)
    write_manifest(out, kind="sft", base_model=model, weights="adapter")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--tokens", type=int, default=64, help="tokens decoded per answer")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=BENCH / "results" / "chat_decode.json")
    args = ap.parse_args()

    import torch

    from temper.inference.engine import Engine, SamplingParams

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        run = make_run(args.model, Path(tmp) / "run")
        engines = {
            "merged": Engine.load(run, dtype="fp32", max_batch_size=1, merge_adapter=True),
            "unmerged": Engine.load(run, dtype="fp32", max_batch_size=1),
            "base": Engine.load(args.model, dtype="fp32", max_batch_size=1),
        }
    messages = [{"role": "user", "content": "Tell me a long story about a lighthouse keeper."}]
    params = SamplingParams(max_tokens=args.tokens, temperature=0.0)  # a long story: all --tokens are used
    speeds: dict[str, list[float]] = {v: [] for v in VARIANTS}
    answers: dict[str, list[int]] = {}
    for r in range(args.rounds + 1):  # round 0 warms up
        order = VARIANTS[r % 3 :] + VARIANTS[: r % 3]
        for variant in order:
            eng = engines[variant]
            adapter = None if variant == "base" else eng.default_adapter
            start = time.perf_counter()
            out = eng.generate(eng.chat_prompt(messages), params, adapter)
            seconds = time.perf_counter() - start
            answers[variant] = out.token_ids
            if r > 0:
                speeds[variant].append(out.completion_tokens / seconds)
    for eng in engines.values():
        eng.close()
    results: dict[str, Any] = {
        v: {"tokens_per_s": round(statistics.median(s), 2), "rounds": s} for v, s in speeds.items()
    }
    same = answers["merged"] == answers["unmerged"]
    ratio = results["merged"]["tokens_per_s"] / results["unmerged"]["tokens_per_s"]
    print_table(
        f"greedy decoding of {args.tokens} tokens, {args.model} + LoRA r8 all-linear, fp32, "
        f"{args.threads} thread(s), median of {args.rounds} rounds",
        ["engine", "tokens/s", "vs unmerged"],
        [
            [v, r["tokens_per_s"], r["tokens_per_s"] / results["unmerged"]["tokens_per_s"]]
            for v, r in results.items()
        ],
        f"merged / unmerged: {ratio:.2f}x; same tokens: {same}",
    )
    write_json(
        args.out,
        {
            "args": vars(args),
            "machine": machine_info(),
            "results": results,
            "ratio": ratio,
            "same_tokens": same,
        },
    )


if __name__ == "__main__":
    main()

"""Export bench: size on disk, greedy tokens/s and perplexity of each export of one model, before and after.

    .venv/bin/python bench/export.py [--source smollm2-135m-instruct] [--threads 1] [--new-tokens 32]

Variants: the fp32 HF model, temper's int8 export (weight-only, `load_int8`), and GGUF f16 / q8_0 / q4_0 read
back through transformers (dequantized to float, so their tokens/s is the fp32 speed and only their size and
perplexity say something). When llama-cpp-python is importable by --llama-cpp-python (a separate venv; see
docs/export.md) the GGUF files also run in llama.cpp for real quantized tokens/s and greedy tokens.
Speed is over exactly --new-tokens per prompt; the match column compares each variant's own greedy answer
(ending at its EOS, as a user sees it) with fp32's: matching tokens / fp32's answer length, per prompt.
Writes bench/results/export.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

# A fixed English paragraph (written for this bench) so perplexities compare across runs and machines.
TEXT = (
    "The river town grew slowly. In the early years a few families farmed the flat land near the water, and "
    "every spring the floods carried away fences, tools and sometimes whole barns. Later a bridge was built, "
    "and with the bridge came a market, a school and a small railway station. Merchants sold grain, cloth and "
    "salt; children learned to read and to count; travellers stopped for a night and told stories about the "
    "cities in the north. By the end of the century the town had a library, two newspapers and a hospital, "
    "and most people could not remember the time when the river decided everything."
)
PROMPTS = ["What is the capital of France?", "Write one sentence about the sea.", "Name three fruits."]
RESULTS = Path(__file__).parent / "results" / "export.json"


def perplexity(model: Any, tok: Any) -> float:
    ids = tok(TEXT, return_tensors="pt").input_ids
    with torch.no_grad():
        return math.exp(float(model(input_ids=ids, labels=ids).loss))


def chat_prompts(tok: Any) -> list[str]:
    return [
        tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False)
        for p in PROMPTS
    ]


def tokens_per_s(model: Any, tok: Any, prompts: list[str], n: int) -> tuple[float, list[list[int]]]:
    """Speed over exactly n tokens per prompt; the tokens returned are the model's own answers (EOS allowed)."""
    from temper.export.parity import greedy_tokens

    greedy_tokens(model, tok, prompts[:1], 2)  # warm-up
    start = time.perf_counter()
    greedy_tokens(model, tok, prompts, n)
    speed = len(prompts) * n / (time.perf_counter() - start)
    return speed, greedy_tokens(model, tok, prompts, n, stop_at_eos=True)


def cut_at_eos(tokens: list[list[int]], eos: set[int]) -> list[list[int]]:
    """llama.cpp's loop does not stop at EOS; its answer is what comes up to and including the first one."""
    return [t[: next((i + 1 for i, x in enumerate(t) if x in eos), len(t))] for t in tokens]


def llama_cpp_row(python: str, gguf: Path, prompts: list[str], n: int, threads: int) -> dict[str, Any] | None:
    """Run the GGUF in llama.cpp (llama-cpp-python in another interpreter); None when it is not available."""
    script = f"""
import json, sys, time
from llama_cpp import Llama
llm = Llama(model_path={str(gguf)!r}, n_ctx=512, n_threads={threads}, verbose=False)
out, elapsed = [], 0.0
for p in json.loads(sys.argv[1]):
    ids = llm.tokenize(p.encode(), add_bos=False, special=True)
    llm.reset(); t = time.perf_counter(); toks = []
    for tok in llm.generate(ids, top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0):
        toks.append(tok)
        if len(toks) == {n}: break
    elapsed += time.perf_counter() - t; out.append(toks)
print(json.dumps({{"tokens": out, "tok_s": len(out) * {n} / elapsed}}))
"""
    try:
        probe = subprocess.run([python, "-c", "import llama_cpp"], capture_output=True, timeout=60)
        if probe.returncode != 0:
            return None  # not installed there: the table simply has no llama.cpp rows
        res = subprocess.run(
            [python, "-c", script, json.dumps(prompts)], capture_output=True, text=True, timeout=900
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if res.returncode != 0:
        print(f"llama.cpp run failed for {gguf.name}: {res.stderr[-400:]}", file=sys.stderr)
        return None
    data: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
    return data


def measure(
    variant: str, runtime: str, model: Any, tok: Any, size: int, prompts: list[str], n: int
) -> dict[str, Any]:
    speed, tokens = tokens_per_s(model, tok, prompts, n)
    row = {
        "variant": variant,
        "runtime": runtime,
        "size_mb": size / 1e6,
        "tok_s": speed,
        "ppl": perplexity(model, tok),
        "tokens": tokens,
    }
    print(f"{variant}: {speed:.1f} tok/s, ppl {row['ppl']:.3f}", file=sys.stderr)
    return row


def run_variants(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    """One row per (export, runtime); rows keep their greedy tokens for the comparison with fp32."""
    from transformers import AutoModelForCausalLM

    from temper.export import export_gguf, load_int8, quantize_int8
    from temper.export.merge import load_source

    src = load_source(args.source)
    tok, n = src.tokenizer, args.new_tokens
    prompts = chat_prompts(tok)
    fp32_size = sum(p.numel() * 4 for p in src.model.parameters())  # tied weights are counted once
    rows = [measure("fp32", "torch", src.model, tok, fp32_size, prompts, n)]
    quantize_int8(args.source, work / "int8")
    model, _ = load_int8(work / "int8")
    size = (work / "int8" / "model-int8.safetensors").stat().st_size
    rows.append(measure("int8 (temper)", "torch int8 kernel", model, tok, size, prompts, n))
    for method in [m for m in args.bnb.split(",") if m]:  # bitsandbytes, where its runtime works here
        from temper.export.quantize import quantize_external
        from temper.models.load import load_causal_lm

        out = work / method
        quantize_external(args.source, out, method)
        model, _ = load_causal_lm(str(out))
        size = sum(f.stat().st_size for f in out.glob("*.safetensors"))
        rows.append(measure(method, "bitsandbytes", model, tok, size, prompts, n))
    for qtype in args.gguf.split(","):
        out = work / f"gguf-{qtype}"
        export_gguf(args.source, out, qtype)
        path = out / f"model-{qtype}.gguf"
        model = AutoModelForCausalLM.from_pretrained(out, gguf_file=path.name).eval()
        size = path.stat().st_size
        rows.append(measure(f"gguf {qtype}", "transformers (dequantized)", model, tok, size, prompts, n))
        cpp = llama_cpp_row(args.llama_cpp_python, path, prompts, n, args.threads)
        if cpp:
            eos = src.model.generation_config.eos_token_id
            cpp["tokens"] = cut_at_eos(cpp["tokens"], set(eos if isinstance(eos, list) else [eos]))
            rows.append(
                {
                    "variant": f"gguf {qtype}",
                    "runtime": "llama.cpp",
                    "size_mb": size / 1e6,
                    "tok_s": cpp["tok_s"],
                    "ppl": None,
                    "tokens": cpp["tokens"],
                }
            )
    return rows


def main() -> None:
    from temper.export.parity import compare_token_lists

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--source", default="smollm2-135m-instruct")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--gguf", default="f16,q8_0,q4_0")
    ap.add_argument("--bnb", default="bnb-4bit,bnb-8bit", help="bitsandbytes exports ('' for none)")
    ap.add_argument("--llama-cpp-python", default=sys.executable, help="interpreter with llama_cpp")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = run_variants(args, Path(tempfile.mkdtemp(prefix="temper-export-bench-")))
    ref = rows[0]["tokens"]
    for row in rows:
        row["answer_tokens"] = row.pop("tokens")
        row["greedy_prefix_match"] = compare_token_lists(ref, row["answer_tokens"])["prefix_match"]
    report = {
        "source": args.source,
        "threads": args.threads,
        "new_tokens": args.new_tokens,
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "rows": rows,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2))
    print(
        f"\n{'variant':14s} {'runtime':28s} {'size MB':>8s} {'tok/s':>7s} {'ppl':>7s}  "
        "greedy answer tokens matching fp32's (answers end at EOS)"
    )
    lengths = [len(t) for t in ref]
    for r in rows:
        ppl = f"{r['ppl']:.3f}" if r["ppl"] is not None else "-"
        print(
            f"{r['variant']:14s} {r['runtime']:28s} {r['size_mb']:8.1f} {r['tok_s']:7.1f} {ppl:>7s}  "
            + ", ".join(f"{m}/{n}" for m, n in zip(r["greedy_prefix_match"], lengths, strict=True))
        )
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()

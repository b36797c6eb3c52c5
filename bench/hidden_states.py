"""Peak memory of the SFT loss's forward + backward under bf16 mixed precision: the decoder's last hidden state
taken by a hook (temper's `final_hidden_states`) against `output_hidden_states=True` with the last one kept.

Under accelerate's mixed precision the model's outputs are converted to fp32; with `output_hidden_states=True`
that is an fp32 copy of every layer's output, all alive at the end of the forward, to keep one. Each variant runs
in a fresh process (peak RSS is per process) on a random Llama-shaped model with a frozen bf16 base and fp32
trainable weights (LoRA's layout), on the same batch; the loss must be the same bits. bf16 matmuls are emulated
(slow) on CPUs without AVX512-BF16/AMX, which makes the seconds meaningless there but not the memory.

    .venv/bin/python bench/hidden_states.py                       # 30 layers, hidden 128, 4 x 2048 tokens
    .venv/bin/python bench/hidden_states.py --hidden 576 --tokens 512 --batch 2
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from common import machine_info, print_table, thread_env, write_json  # noqa: E402

VARIANTS = ("temper", "every-layer")


def measure(args: argparse.Namespace) -> dict[str, float]:
    """One forward + backward of sft_loss in this process; the peak RSS it added, in MB."""
    import torch
    from accelerate import Accelerator
    from transformers import LlamaConfig, LlamaForCausalLM

    from temper.objectives import sft

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    heads = max(1, args.hidden // 64)
    config = LlamaConfig(
        hidden_size=args.hidden, intermediate_size=2 * args.hidden, num_hidden_layers=args.layers,
        num_attention_heads=heads, num_key_value_heads=heads, vocab_size=args.vocab,
        max_position_embeddings=args.tokens,
    )  # fmt: skip
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    for p in model.parameters():
        p.requires_grad_(False)
    for layer in model.model.layers:  # a trainable fp32 weight per layer, so the backward reaches every layer
        layer.mlp.down_proj.weight = torch.nn.Parameter(layer.mlp.down_proj.weight.float())
    accelerator = Accelerator(mixed_precision="bf16", cpu=True)
    model = accelerator.prepare(model)
    ids = torch.randint(0, args.vocab, (args.batch, args.tokens))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}

    def every_layer(m: Any, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        kwargs = {k: inputs[k] for k in sft.MODEL_INPUTS if k in inputs}
        no_logits = torch.zeros(0, dtype=torch.long)
        out = m(**kwargs, use_cache=False, logits_to_keep=no_logits, output_hidden_states=True)
        last: torch.Tensor = out.hidden_states[-1]
        return last

    hidden_fn = sft.final_hidden_states if args.variant == "temper" else every_layer
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    with accelerator.autocast():
        hidden = hidden_fn(model, batch)
        keep = batch["labels"][:, 1:].ne(-100)
        rows = hidden[:, :-1][keep].float()
        lm = sft.unwrap_model(model)
        loss = torch.nn.functional.cross_entropy(sft.head_logits(lm, rows), batch["labels"][:, 1:][keep])
    del hidden, rows
    loss.backward()
    seconds = time.perf_counter() - start
    peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
    return {"peak_rss_added_mb": round(peak, 1), "seconds": round(seconds, 2), "loss": float(loss)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", type=int, default=30)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--vocab", type=int, default=512)
    ap.add_argument("--tokens", type=int, default=2048, help="tokens per row")
    ap.add_argument("--batch", type=int, default=4, help="rows")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # set in the child processes
    ap.add_argument("--out", type=Path, default=BENCH / "results" / "hidden_states.json")
    args = ap.parse_args()
    if args.variant:
        print(json.dumps(measure(args)))
        return
    shape = ["--layers", str(args.layers), "--hidden", str(args.hidden), "--vocab", str(args.vocab)]
    shape += ["--tokens", str(args.tokens), "--batch", str(args.batch), "--threads", str(args.threads)]
    results = {}
    for variant in VARIANTS:
        cmd = [sys.executable, __file__, *shape, "--variant", variant]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=thread_env(args.threads), check=False)
        if proc.returncode != 0:
            sys.exit(f"{variant} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        results[variant] = json.loads(proc.stdout.strip().splitlines()[-1])
    rows = [[v, r["peak_rss_added_mb"], r["seconds"], r["loss"]] for v, r in results.items()]
    ratio = results["temper"]["peak_rss_added_mb"] / max(results["every-layer"]["peak_rss_added_mb"], 1e-9)
    caption = f"temper / every-layer peak memory: {ratio:.2f}; same loss: {rows[0][3] == rows[1][3]}"
    print_table(
        f"SFT loss forward + backward, bf16 mixed precision, {args.layers} layers x hidden {args.hidden}, "
        f"{args.batch} x {args.tokens} tokens, {args.threads} thread(s)",
        ["final hidden state", "peak RSS added MB", "seconds", "loss"],
        rows,
        caption,
    )
    write_json(
        args.out, {"args": vars(args), "machine": machine_info(), "results": results, "memory_ratio": ratio}
    )


if __name__ == "__main__":
    main()

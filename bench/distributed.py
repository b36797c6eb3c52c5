"""2-process CPU DDP against 1 process: the same LoRA SFT on the bundled model, one thread per process.

    python bench/distributed.py [--steps 6] [--max-length 256]

Prints a table and writes bench/results/distributed.json. Tokens/s is the whole job's (all ranks), measured by
temper's engine over the training steps (model load and tokenization excluded). With 2 cores, 2 x 1 thread is
the fair comparison with 1 x 1 thread; the ideal speed-up is 2.0.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).parent))
from common import thread_env  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "llamafactory" / "alpaca_en_demo.json"


def run(nproc: int, steps: int, max_length: int, out: Path) -> dict[str, float]:
    cmd = [
        sys.executable, "-m", "temper", "sft", "--dataset", f"{DATA}#64", "--output-dir", str(out),
        "--max-length", str(max_length), "--batch-size", str(4 // nproc), "--max-steps", str(steps),
        "--nproc", str(nproc), "--num-threads", "1", "--save-steps", "100000", "--logging-steps", "1",
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=thread_env(1), capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"nproc={nproc} failed:\n{proc.stderr[-3000:]}")
    manifest = json.loads((out / "temper_run.json").read_text())
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    # Skip the first step (warm-up: allocator, first sdpa call) when averaging the per-step rates.
    rates = [r["tokens_per_second"] for r in rows if "tokens_per_second" in r][1:]
    return {
        "nproc": nproc,
        "tokens_per_second": sum(rates) / max(len(rates), 1),
        "overall_tokens_per_second": manifest["result"]["tokens_per_second"],
        "final_loss": rows[-1].get("loss") or manifest["result"]["train_loss"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--output", default="bench/results/distributed.json")
    args = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for nproc in (1, 2):
            results.append(run(nproc, args.steps, args.max_length, Path(tmp) / f"n{nproc}"))
    speedup = results[1]["tokens_per_second"] / max(results[0]["tokens_per_second"], 1e-9)
    table = Table(
        title=f"LoRA SFT, bundled SmolLM2, global batch 4, 1 thread per process ({args.steps} steps)"
    )
    for col in ("processes", "tokens/s (steps 2..)", "tokens/s (overall)", "last loss"):
        table.add_column(col, justify="right")
    for r in results:
        table.add_row(
            str(r["nproc"]), f"{r['tokens_per_second']:.1f}", f"{r['overall_tokens_per_second']:.1f}",
            f"{r['final_loss']:.4f}",
        )  # fmt: skip
    Console().print(table)
    Console().print(f"speed-up 2 processes / 1 process: {speedup:.2f}x")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps({"runs": results, "speedup": speedup}, indent=2))


if __name__ == "__main__":
    main()

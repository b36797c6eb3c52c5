"""SFT speed bench (issue 2, part 10): the same LoRA SFT with temper, a plain Trainer + peft, LLaMA-Factory, ms-swift.

Every contender gets the bundled SmolLM2-135M-Instruct, the first `--rows` rows of alpaca_en_demo.json in file
order, `--steps` optimizer steps of batch 2 x accumulation 4 (10 x 8 = 80 rows: one epoch, every row once),
max length 512, LoRA r8 / alpha 16 / dropout 0 on all linear layers, lr 1e-4 cosine, no warmup, seed 42,
gradient checkpointing as each tool defaults (on for the peers and the plain script), and the same thread count
(OMP_NUM_THREADS and torch threads = `--threads`). Each runs as a subprocess in its own venv.

Throughput = non-padding tokens (attention-mask ones, labels not considered) / seconds, counted from the end
of the first optimizer step to the end of the last one, so model load, tokenization and the first (warm-up)
step are excluded. The HF-Trainer-based tools log `num_input_tokens_seen` (non_padding) and `train_runtime`
at every step; temper's metrics.jsonl has a wall time and tokens/s per step. Peak RSS is the whole process
tree's, sampled every 0.2 s. MFU = 6·N·tokens/s over the large-matmul ceiling of the run's dtype, measured
at the same thread count right before that run (N = base parameters; 6N is the usual train-step estimate; a
frozen-base LoRA step does only ~4N of useful FLOPs, so `mfu_4n` is also stored). Recomputation from gradient
checkpointing is not counted.

Example:
    .venv/bin/python bench/sft.py                         # everything installed, fp32 and bf16
    .venv/bin/python bench/sft.py --tools temper --merge  # rerun one contender, keep the others' rows
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import shutil
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    TrackedRun,
    load_conditions,
    machine_info,
    matmul_ceiling,
    print_table,
    run_tracked,
    thread_env,
    write_json,
)

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
DATA = REPO.parent / "shared" / "data" / "llamafactory" / "alpaca_en_demo.json"
PEERS = Path("/work/peers")
SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"  # SmolLM2's own default
TOOLS = ("plain", "llamafactory", "swift", "temper", "temper-compile", "temper-sequential")
# temper-compile: temper with regional torch.compile on (the one CPU speed option not on by default); its first
# step pays the compile, which the timed window (steps 2..N) leaves out and the "total s" column keeps.
# temper-sequential: temper with --train-sampling-strategy sequential: file order, the batches every peer here trains
# on (their configs turn shuffling off), the like-for-like held-out loss. `--padding-free auto` is on in this order
# (27.6% padding if padded): each batch runs as one row of its samples, so the mixed lengths cost no padding.


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tools", default=",".join(TOOLS), help="comma list from " + ",".join(TOOLS))
    p.add_argument("--dtypes", default="fp32,bf16", help="comma list: fp32, bf16")
    p.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS and torch threads for every run")
    p.add_argument("--rows", type=int, default=80, help="first N rows of alpaca_en_demo.json")
    p.add_argument("--steps", type=int, default=10, help="optimizer steps (>= 2: the first is not timed)")
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--grad-accum", type=int, default=4)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--lf-venv", type=Path, default=PEERS / "llamafactory-venv")
    p.add_argument("--swift-venv", type=Path, default=PEERS / "swift-venv")
    p.add_argument("--work-dir", type=Path, default=Path("/tmp/temper-bench-sft"), help="run dirs and logs")
    p.add_argument("--out", type=Path, default=BENCH / "results" / "sft.json")
    p.add_argument(
        "--heldout", type=int, default=40, help="alpaca rows after the training rows for held-out loss"
    )
    p.add_argument(
        "--merge", action="store_true", help="keep rows of --out that this invocation does not rerun"
    )
    p.add_argument(
        "--force-bf16", action="store_true", help="run bf16 even where its matmul is slower than fp32"
    )
    p.add_argument("--parallel", action="store_true", help="launch all runs at once (see the README first)")
    p.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="rounds of every contender, interleaved (A B C A B C ...); each row is its median run",
    )
    p.add_argument("--timeout", type=float, default=3600, help="seconds per run before it is killed")
    return p.parse_args(argv)


# ---------------------------------------------------------------- contenders: command line per tool and dtype


def plain_cmd(a: argparse.Namespace, model: Path, data: Path, out: Path, dtype: str) -> list[str]:
    return [
        sys.executable, str(BENCH / "sft_plain.py"), "--model", str(model), "--data", str(data / "rows.json"),
        "--output-dir", str(out), "--steps", str(a.steps), "--dtype", dtype, "--max-length", str(a.max_length),
        "--batch-size", str(a.batch_size), "--grad-accum", str(a.grad_accum),
    ]  # fmt: skip


def llamafactory_cmd(a: argparse.Namespace, model: Path, data: Path, out: Path, dtype: str) -> list[str]:
    return [
        str(a.lf_venv / "bin" / "llamafactory-cli"), "train", str(BENCH / "peers" / "llamafactory_lora_sft.yaml"),
        f"model_name_or_path={model}", f"dataset_dir={data}", f"output_dir={out}", f"max_steps={a.steps}",
        f"cutoff_len={a.max_length}", f"per_device_train_batch_size={a.batch_size}",
        f"gradient_accumulation_steps={a.grad_accum}", f"bf16={str(dtype == 'bf16').lower()}",
    ]  # fmt: skip


def swift_cmd(a: argparse.Namespace, model: Path, data: Path, out: Path, dtype: str) -> list[str]:
    args = (BENCH / "peers" / "swift_lora_sft.args").read_text().split()
    bf16 = dtype == "bf16"
    return [
        str(a.swift_venv / "bin" / "swift"), "sft", *args, "--model", str(model), "--dataset",
        str(data / "rows.json"), "--output_dir", str(out), "--max_steps", str(a.steps), "--save_steps", str(a.steps),
        "--max_length", str(a.max_length), "--per_device_train_batch_size", str(a.batch_size),
        "--gradient_accumulation_steps", str(a.grad_accum), "--system", SYSTEM,
        "--torch_dtype", "bfloat16" if bf16 else "float32", "--bf16", str(bf16).lower(),
    ]  # fmt: skip


def temper_cmd(a: argparse.Namespace, model: Path, data: Path, out: Path, dtype: str) -> list[str]:
    return [
        str(Path(sys.executable).parent / "temper"), "sft", "--model", "smollm2-135m-instruct",
        "--dataset", str(data / "rows.json"), "--max-length", str(a.max_length),
        "--per-device-train-batch-size", str(a.batch_size), "--gradient-accumulation-steps", str(a.grad_accum),
        "--max-steps", str(a.steps), "--learning-rate", "1e-4", "--lr-scheduler-type", "cosine",
        "--lora-rank", "8", "--lora-alpha", "16", "--seed", "42", "--num-threads", str(a.threads),
        "--bf16", str(dtype == "bf16").lower(), "--output-dir", str(out), "--overwrite-output-dir", "true",
    ]  # fmt: skip


def temper_compile_cmd(a: argparse.Namespace, model: Path, data: Path, out: Path, dtype: str) -> list[str]:
    return [*temper_cmd(a, model, data, out, dtype), "--torch-compile", "true"]


def temper_sequential_cmd(a: argparse.Namespace, model: Path, data: Path, out: Path, dtype: str) -> list[str]:
    return [*temper_cmd(a, model, data, out, dtype), "--train-sampling-strategy", "sequential"]


def installed(a: argparse.Namespace, tool: str) -> str | None:
    """None when `tool` can run, else why not."""
    exe = {
        "llamafactory": a.lf_venv / "bin" / "llamafactory-cli",
        "swift": a.swift_venv / "bin" / "swift",
        "temper": Path(sys.executable).parent / "temper",
        "temper-compile": Path(sys.executable).parent / "temper",
        "temper-sequential": Path(sys.executable).parent / "temper",
    }.get(tool)
    return None if exe is None or exe.exists() else f"not installed ({exe} missing; see bench/README.md)"


COMMANDS: dict[str, Callable[[argparse.Namespace, Path, Path, Path, str], list[str]]] = {
    "plain": plain_cmd,
    "llamafactory": llamafactory_cmd,
    "swift": swift_cmd,
    "temper": temper_cmd,
    "temper-compile": temper_compile_cmd,
    "temper-sequential": temper_sequential_cmd,
}

# ---------------------------------------------------------------- reading each tool's per-step logs


STEP_LINE = re.compile(
    r"^\{'loss': "
)  # the Trainer's per-step log dict as printed (the summary starts otherwise)


def trainer_steps(out: Path, run: TrackedRun) -> list[dict[str, Any]]:
    """Per-step loss and cumulative tokens from the Trainer's log dicts as they reached our pipe, timed on arrival
    (one clock for every tool, and the one the CPU samples use). `out` is unused: the stdout has it all."""
    steps = []
    for t, line in run.lines:
        if STEP_LINE.match(line):
            logs = ast.literal_eval(line)  # values are printed as strings ('1.679') in transformers 5
            step = len(steps) + 1
            tokens = float(logs["num_input_tokens_seen"]) if "num_input_tokens_seen" in logs else None
            steps.append({"step": step, "loss": float(logs["loss"]), "tokens": tokens, "t": t})
    return steps


def temper_steps(out: Path, run: TrackedRun) -> list[dict[str, Any]]:
    """temper's metrics.jsonl: wall `time` and `tokens_per_second` since the previous log, per step."""
    path = out / "metrics.jsonl"
    if not path.exists():
        return []
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    rows = [r for r in rows if r.get("loss") is not None and "tokens_per_second" in r and "time" in r]
    steps, tokens, prev = [], 0.0, None
    for r in rows:
        if prev is not None:  # tokens of this step = its rate x the time since the previous step's log
            tokens += r["tokens_per_second"] * (r["time"] - prev)
        prev = r["time"]
        steps.append(
            {"step": r["step"], "loss": r["loss"], "tokens": tokens, "t": r["time"] - run.epoch_start}
        )
    return steps


def file_order_tokens(steps: list[dict[str, Any]], lengths: list[int], per_step: int) -> None:
    """Fill cumulative non-padding tokens for a tool that counts padding too (ms-swift's flag is a bool that
    means "all"): with shuffling off, step k trains rows [(k-1)*per_step, k*per_step) of the file."""
    for s in steps:
        s["tokens_with_padding"] = s["tokens"]
        s["tokens"] = sum(lengths[: s["step"] * per_step])


def summarize(steps: list[dict[str, Any]], run: TrackedRun, n_params: int, ceil: dict, threads: int) -> dict:
    """Throughput from the end of the first step to the end of the last; losses; MFU against the ceiling.

    tokens_per_s is wall-clock. tokens_per_cpu_s x threads is what the run does on cores of its own (CPU seconds
    of the process tree in the same window): on this shared machine it is the figure to compare, and MFU uses
    it against the ceiling measured the same way (gflops_cpu)."""
    if len(steps) < 2:
        return {"error": f"need >= 2 logged steps, found {len(steps)}"}
    first, last = steps[0], steps[-1]
    dt = last["t"] - first["t"]
    cpu = run.cpu_at(last["t"]) - run.cpu_at(first["t"])
    tokens = last["tokens"] - first["tokens"]
    tps = tokens / dt if dt > 0 else 0.0
    own = tokens / cpu * threads if cpu > 0 else 0.0
    losses = [s["loss"] for s in steps]
    return {
        "steps_logged": len(steps),
        "timed_steps": len(steps) - 1,
        "timed_tokens": round(tokens),
        "timed_seconds": round(dt, 2),
        "timed_cpu_seconds": round(cpu, 2),
        "tokens_per_s": round(tps, 2),
        "tokens_per_s_own_cores": round(own, 2),
        "window_cpu_share": round(cpu / dt, 2) if dt > 0 else None,
        "s_per_step": round(dt / (len(steps) - 1), 2),
        "final_loss": round(last["loss"], 4),
        "mean_loss": round(sum(losses) / len(losses), 4),
        "losses": losses,
        "mfu": round(6 * n_params * own / (ceil["gflops_cpu"] * 1e9), 4),
        "mfu_4n": round(4 * n_params * own / (ceil["gflops_cpu"] * 1e9), 4),
        "mfu_wall": round(6 * n_params * tps / (ceil["gflops"] * 1e9), 4),
    }


def row_lengths(model: Path, rows_path: Path, max_length: int) -> list[int]:
    """Tokens per row with the model's chat template and SYSTEM, capped at max_length (for ms-swift's count)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model, local_files_only=True)
    out = []
    for r in json.loads(rows_path.read_text(encoding="utf-8")):
        query = r["instruction"] + ("\n" + r["input"] if r.get("input") else "")
        msgs = [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": query},
            {"role": "assistant", "content": r["output"]},
        ]
        out.append(
            min(len(tok.apply_chat_template(msgs, tokenize=True, return_dict=True)["input_ids"]), max_length)
        )
    return out


# ---------------------------------------------------------------- the bench


def prepare_data(work: Path, rows: int) -> Path:
    """rows.json (first N rows, file order) plus a dataset_info.json so LLaMA-Factory reads the same file."""
    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    picked = json.loads(DATA.read_text(encoding="utf-8"))[:rows]
    (data / "rows.json").write_text(json.dumps(picked, ensure_ascii=False, indent=1), encoding="utf-8")
    info = {"bench_rows": {"file_name": "rows.json"}}  # alpaca columns are LLaMA-Factory's default
    (data / "dataset_info.json").write_text(json.dumps(info), encoding="utf-8")
    return data


def model_info() -> tuple[Path, int]:
    """The bundled model's HF dir and its parameter count (read from the safetensors headers, no load)."""
    from safetensors import safe_open

    from temper.models.load import resolve

    path = resolve("smollm2-135m-instruct").path
    n = 0
    for f in path.glob("*.safetensors"):
        with safe_open(str(f), "pt") as st:
            for k in st.keys():  # noqa: SIM118 - safe_open is not a Mapping
                shape = st.get_slice(k).get_shape()
                count = 1
                for dim in shape:
                    count *= dim
                n += count
    return path, n


def run_one(a: argparse.Namespace, tool: str, dtype: str, model: Path, data: Path, ceil: dict) -> dict:
    out = a.work_dir / f"{tool}-{dtype}"
    shutil.rmtree(out, ignore_errors=True)
    cmd = COMMANDS[tool](a, model, data, out, dtype)
    # The ceiling again right before this run: on a shared VM the matmul speed moved 2-3x within minutes
    # (2026-12-06, bench/README.md), so the start-of-bench figure can be far from what this run had.
    ceil = {**ceil, dtype: matmul_ceiling(dtype, a.threads, seconds=2.0)}
    print(
        f"[bench] {tool} {dtype} (ceiling now {ceil[dtype]['gflops_cpu']:.1f} GFLOP/s): {' '.join(cmd)}",
        flush=True,
    )
    run: TrackedRun = run_tracked(
        cmd, thread_env(a.threads), a.work_dir / f"{tool}-{dtype}.log", timeout=a.timeout
    )
    row: dict[str, Any] = {
        "tool": tool,
        "dtype": dtype,
        "returncode": run.returncode,
        "wall_s": round(run.wall_s, 1),
        "peak_rss_mb": round(run.peak_rss_mb),
        "cpu_s": round(run.cpu_s, 1),
        "cpu_share": round(run.cpu_share, 2),
        "load_before": run.load_before,
        "load_after": run.load_after,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "matmul_ceiling_before": ceil[dtype],
        "log": str(a.work_dir / f"{tool}-{dtype}.log"),
        "cmd": cmd,
    }
    if run.returncode != 0:
        tail = " | ".join(t for _, t in run.lines[-5:])
        row["error"] = f"exit code {run.returncode}; last lines: {tail}"
        return row
    try:
        steps = temper_steps(out, run) if tool.startswith("temper") else trainer_steps(out, run)
        if tool == "swift":
            file_order_tokens(steps, a.row_lengths, a.batch_size * a.grad_accum)
            row["tokens_note"] = (
                "non-padding tokens computed from file order (swift's counter includes padding)"
            )
    except (RuntimeError, KeyError, ValueError, SyntaxError) as e:
        row["error"] = f"could not read its step logs: {e}"
        return row
    row.update(summarize(steps, run, a.n_params, ceil[dtype], a.threads))
    return row


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    tools = [t for t in a.tools.split(",") if t]
    dtypes = [d for d in a.dtypes.split(",") if d]
    bad = [t for t in tools if t not in COMMANDS] + [d for d in dtypes if d not in ("fp32", "bf16")]
    if bad or a.steps < 2 or a.repeats < 1:
        raise SystemExit(
            f"unknown tools/dtypes {bad} (tools: {TOOLS}; dtypes: fp32,bf16), --steps < 2 or --repeats < 1"
        )
    a.work_dir.mkdir(parents=True, exist_ok=True)
    model, a.n_params = model_info()
    data = prepare_data(a.work_dir, a.rows)
    a.row_lengths = row_lengths(model, data / "rows.json", a.max_length)
    print(f"[bench] measuring matmul ceilings at {a.threads} thread(s)...", flush=True)
    ceil = {d: matmul_ceiling(d, a.threads) for d in ("fp32", "bf16")}
    old = json.loads(a.out.read_text()) if a.merge and a.out.exists() else {}
    results = {(r["tool"], r["dtype"]): r for r in old.get("runs", [])}
    jobs = []
    for dtype in dtypes:
        b, f = ceil["bf16"]["gflops_cpu"], ceil["fp32"]["gflops_cpu"]
        slow = dtype == "bf16" and b < f and not a.force_bf16
        for tool in tools:
            why = installed(a, tool)
            if slow:
                why = (
                    f"skipped: bf16 matmul {b:.1f} GFLOP/s < fp32 {f:.1f} here (no native bf16); --force-bf16"
                )
            if why:
                results[(tool, dtype)] = {"tool": tool, "dtype": dtype, "error": why}
            else:
                jobs.append((tool, dtype))
    # --parallel: every run at once. Only for a machine already crowded by others, where waiting for a quiet
    # moment is hopeless; compare the own-core columns then (CPU-time based), not the wall-clock ones.
    # --repeats: whole rounds, so that a slow spell of the VM hits every contender alike, not one of them.
    runs: dict[tuple[str, str], list[dict]] = {}
    for _ in range(a.repeats):
        with ThreadPoolExecutor(max_workers=len(jobs) if a.parallel and jobs else 1) as pool:
            futures = {pool.submit(run_one, a, t, d, model, data, ceil): (t, d) for t, d in jobs}
            for fut in as_completed(futures):
                key = futures[fut]
                runs.setdefault(key, []).append(fut.result())
                results[key] = median_run(runs[key])
                report(a, ceil, results)
    if a.heldout:
        add_held_out_losses(a, model, results)
    report(a, ceil, results)
    return 0


def median_run(rows: list[dict]) -> dict:
    """The run with the median own-core tokens/s (the lower middle of an even count), every run's speed kept
    beside it; a row's other numbers all come from that one run. Failed runs only count if all failed."""
    key = "tokens_per_s_own_cores"

    def ran(r: dict) -> bool:
        return not r.get("error") and bool(r.get(key))

    ok = sorted(filter(ran, rows), key=lambda r: r[key])
    if not ok:
        return rows[-1]
    row = dict(ok[(len(ok) - 1) // 2])
    row["runs"] = len(rows)
    row["failed_runs"] = len(rows) - len(ok)
    # In round order, None for a failed run: speedups_each_round pairs them across contenders by position.
    row["tokens_per_s_own_cores_each"] = [r[key] if ran(r) else None for r in rows]
    row["tokens_per_s_each"] = [r.get("tokens_per_s") if ran(r) else None for r in rows]
    return row


def add_held_out_losses(a: argparse.Namespace, model: Path, results: dict) -> None:
    """Each finished run's adapter scored on the same unseen rows (see sft_heldout.py)."""
    from sft_heldout import find_adapter, held_out_losses

    adapters = {}
    for (tool, dtype), row in results.items():
        found = find_adapter(a.work_dir / f"{tool}-{dtype}") if not row.get("error") else None
        if found is not None:
            adapters[f"{tool}-{dtype}"] = found
    rows = json.loads(DATA.read_text(encoding="utf-8"))[a.rows : a.rows + a.heldout]
    print(f"[bench] held-out loss of {len(adapters)} adapters on {len(rows)} unseen rows...", flush=True)
    import torch

    torch.set_num_threads(a.threads)
    losses = held_out_losses(model, rows, adapters, SYSTEM, a.max_length, a.work_dir)
    for (tool, dtype), row in results.items():
        row["heldout_loss"] = losses.get(f"{tool}-{dtype}")
        row["heldout_base_loss"] = losses["base"]


def report(a: argparse.Namespace, ceil: dict, results: dict) -> None:
    rows = sorted(results.values(), key=lambda r: (r["dtype"], TOOLS.index(r["tool"])))
    doc = {
        "bench": "sft",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine_info(),
        "load_now": load_conditions(),
        "threads": a.threads,
        "setup": {
            "rows": a.rows,
            "steps": a.steps,
            "batch_size": a.batch_size,
            "grad_accum": a.grad_accum,
            "max_length": a.max_length,
            "lora": "r8 alpha16 dropout0 all-linear",
            "lr": 1e-4,
            "data": str(DATA),
            "n_params": a.n_params,
        },  # fmt: skip
        "matmul_ceiling_gflops": ceil,
        "mfu_definition": "mfu = 6*N*own-core tokens/s / gflops_cpu(dtype); mfu_4n: 4*N (frozen-base LoRA); "
        "mfu_wall: 6*N*wall tokens/s / gflops (wall); N = base parameters; recompute not counted",
        "runs": rows,
    }
    doc["temper_vs_best_peer"] = speedups(rows)
    doc["repeats"] = a.repeats
    doc["temper_vs_best_peer_each_round"] = speedups_each_round(rows)
    write_json(a.out, doc)
    table = [
        [r["tool"], r["dtype"], r.get("tokens_per_s"), r.get("tokens_per_s_own_cores"), r.get("s_per_step"),
         r.get("peak_rss_mb"), r.get("final_loss"), r.get("mean_loss"), r.get("heldout_loss"), r.get("mfu"),
         r.get("wall_s"), spread(r),
         r.get("window_cpu_share"),
         (r.get("load_before") or {}).get("loadavg_1m"), (r.get("error") or "")[:50]]
        for r in rows
    ]  # fmt: skip
    fb, ff = ceil["bf16"]["gflops_cpu"], ceil["fp32"]["gflops_cpu"]
    cap = (
        f"{a.threads} thread(s) each. Matmul ceiling per own core at the start: fp32 {ff:.1f}, bf16 {fb:.1f} GFLOP/s. "
        "tok/s: non-padding tokens, steps 2..N, wall clock; own-core: per CPU-second x threads. "
        "MFU = 6N x own-core tok/s / the ceiling measured right before each run. "
        + "total s: the whole process, start-up and compiling included. "
        + "; ".join(f"{k}/best peer: {x:.2f}x" for k, x in doc["temper_vs_best_peer"].items())
    )
    if a.repeats > 1:
        rounds = doc["temper_vs_best_peer_each_round"].items()
        cap += f". Median of {a.repeats} interleaved rounds; per round: " + "; ".join(
            f"{k} " + " ".join(f"{x:.2f}x" for x in xs) for k, xs in rounds
        )
    cols = ["tool", "dtype", "tok/s", "tok/s own core", "s/step", "peak RSS MB", "final loss", "mean loss",
            "held-out loss", "MFU", "total s", "own core range", "cpu share", "load 1m", "note"]  # fmt: skip
    print_table(f"LoRA SFT: {a.rows} rows, {a.steps} steps", cols, table, caption=cap)


def speedups(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Each temper row's own-core tokens/s over the best of LLaMA-Factory, ms-swift and the plain script, per
    dtype; keys like "temper bf16" and "temper-compile bf16"."""
    out = {}
    key = "tokens_per_s_own_cores"
    for dtype in ("fp32", "bf16"):
        peers = peer_values(rows, dtype, key)
        for r in rows:
            if r["dtype"] == dtype and r["tool"].startswith("temper") and r.get(key) and peers:
                out[f"{r['tool']} {dtype}"] = round(r[key] / max(peers), 2)
    return out


def peer_values(rows: list[dict[str, Any]], dtype: str, key: str) -> list[Any]:
    """row[key] of every peer row (LLaMA-Factory, ms-swift, the plain script) of this dtype that has it."""
    return [r[key] for r in rows if r["dtype"] == dtype and not r["tool"].startswith("temper") and r.get(key)]


def spread(row: dict[str, Any]) -> str:
    """min-max of a repeated row's own-core tokens/s ('' for a single run)."""
    each = [x for x in row.get("tokens_per_s_own_cores_each") or [] if x]
    return f"{min(each):.0f}-{max(each):.0f}" if len(each) > 1 else ""


def speedups_each_round(rows: list[dict[str, Any]]) -> dict[str, list[float]]:
    """speedups() per round of --repeats: temper's run of round i over the best peer's run of the same round."""
    out: dict[str, list[float]] = {}
    key = "tokens_per_s_own_cores_each"
    for dtype in ("fp32", "bf16"):
        peers = peer_values(rows, dtype, key)
        for r in rows:
            if r["dtype"] != dtype or not r["tool"].startswith("temper") or not r.get(key) or not peers:
                continue
            ratios = []
            for i, x in enumerate(r[key]):
                best = max((p[i] for p in peers if i < len(p) and p[i]), default=None)
                if x and best:
                    ratios.append(round(x / best, 2))
            out[f"{r['tool']} {dtype}"] = ratios
    return out


if __name__ == "__main__":
    raise SystemExit(main())

"""Serving throughput: temper's continuous-batching server vs sequential HF generate (and LLaMA-Factory's `api`).

Closed-loop clients: C threads each send their requests one after another (greedy chat completions, streamed,
the same prompts and max_tokens for every contender). Reported per contender and client count: aggregate
generated tokens/s (completion texts re-tokenized with one tokenizer, so every contender is counted alike),
p50/p95 request latency and p50/p95 time to first token.

Contenders:
  temper          `temper serve` in a subprocess, driven over HTTP (SSE).
  hf-sequential   transformers `generate` on the same weights, one request at a time (no batching), in this
                  process; a request's latency includes its wait for the model.
  llamafactory    `llamafactory-cli api` from --llamafactory-venv, when that venv has llamafactory installed.

Every contender runs with the same torch thread count (--threads, also OMP_NUM_THREADS) and dtype.

    .venv/bin/python bench/serve.py                       # table + bench/results/serve.json
    .venv/bin/python bench/serve.py --levels 1,4 --max-tokens 32
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
TOPICS = [
    "the sea",
    "mountains",
    "a cat",
    "coffee",
    "rain",
    "the moon",
    "bicycles",
    "music",
    "a library",
    "winter",
    "bread",
    "trains",
    "gardens",
    "clocks",
    "bees",
    "rivers",
]
Call = Callable[[list[dict[str, str]]], tuple[float, float, str]]  # messages -> (ttft s, latency s, text)


def prompts(n: int) -> list[list[dict[str, str]]]:
    # An explicit system turn: every contender then renders the same ChatML text (templates differ in defaults).
    system = {"role": "system", "content": "You are a helpful assistant."}
    return [
        [system, {"role": "user", "content": f"Write two sentences about {TOPICS[i % len(TOPICS)]} (#{i})."}]
        for i in range(n)
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_call(url: str, model: str, max_tokens: int) -> Call:
    """One streamed chat completion over HTTP; TTFT is the first chunk carrying text."""

    def call(messages: list[dict[str, str]]) -> tuple[float, float, str]:
        body = {
            "model": model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": 0,
            "stream": True,
        }
        start, ttft, parts = time.perf_counter(), None, []
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=600) as r:
            r.raise_for_status()
            for line in r.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                text = (chunk.get("choices") or [{}])[0].get("delta", {}).get("content") or ""
                if text and ttft is None:
                    ttft = time.perf_counter() - start
                parts.append(text)
        latency = time.perf_counter() - start
        return ttft if ttft is not None else latency, latency, "".join(parts)

    return call


def run_level(call: Call, clients: int, per_client: int, count: Callable[[str], int]) -> dict[str, Any]:
    """C closed-loop clients, each sending `per_client` requests back to back."""
    jobs = prompts(clients * per_client)
    results: list[tuple[float, float, str]] = []
    lock = threading.Lock()

    def client(c: int) -> None:
        for r in range(per_client):
            out = call(jobs[c * per_client + r])
            with lock:
                results.append(out)

    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    tokens = sum(count(text) for _, _, text in results)
    lat = sorted(r[1] for r in results)
    ttft = sorted(r[0] for r in results)
    return {
        "clients": clients,
        "requests": len(results),
        "tokens": tokens,
        "wall_s": round(wall, 2),
        "tokens_per_s": round(tokens / wall, 2),
        "latency_p50_s": round(statistics.median(lat), 3),
        "latency_p95_s": round(_p95(lat), 3),
        "ttft_p50_s": round(statistics.median(ttft), 3),
        "ttft_p95_s": round(_p95(ttft), 3),
    }


def _p95(xs: list[float]) -> float:
    return xs[min(len(xs) - 1, round(0.95 * (len(xs) - 1)))]


def wait_healthy(url: str, proc: subprocess.Popen[bytes], path: str, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url + path, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError("server did not become healthy")


def bench_server(
    cmd: list[str], env: dict[str, str], url: str, health: str, model: str, args: Any, count: Any
) -> list[dict[str, Any]]:
    # The server's own log, for when it fails to start: kept out of bench/results.
    log = Path(tempfile.gettempdir()) / f"temper-bench-serve-{Path(cmd[0]).name}-{len(cmd)}.log"
    proc = subprocess.Popen(cmd, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    try:
        wait_healthy(url, proc, health)
        call = http_call(url, model, args.max_tokens)
        call(prompts(1)[0])  # warm-up
        return [run_level(call, c, per_client(c), count) for c in args.levels]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def per_client(clients: int) -> int:
    # Enough requests for stable medians without making the sequential baseline take forever.
    return {1: 3, 4: 2}.get(clients, 1)


def bench_temper(model_dir: str, args: Any, count: Any, env: dict[str, str]) -> list[dict[str, Any]]:
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "temper",
        "serve",
        model_dir,
        "--port",
        str(port),
        "--threads",
        str(args.threads),
    ]
    cmd += ["--dtype", args.dtype, "--max-batch-size", str(max(args.levels))]
    return bench_server(cmd, env, f"http://127.0.0.1:{port}", "/health", "base", args, count)


def bench_llamafactory(
    model_dir: str, args: Any, count: Any, env: dict[str, str]
) -> list[dict[str, Any]] | None:
    cli = Path(args.llamafactory_venv) / "bin" / "llamafactory-cli"
    if not cli.exists():
        print(f"llamafactory: {cli} not found, skipped", file=sys.stderr)
        return None
    port = free_port()
    cmd = [str(cli), "api", "--model_name_or_path", model_dir, "--template", args.llamafactory_template]
    cmd += [
        "--infer_backend",
        "huggingface",
        "--infer_dtype",
        {"auto": "auto", "fp32": "float32"}.get(args.dtype, "bfloat16"),
    ]
    lf_env = env | {"API_PORT": str(port), "API_HOST": "127.0.0.1", "DISABLE_VERSION_CHECK": "1"}
    return bench_server(cmd, lf_env, f"http://127.0.0.1:{port}", "/v1/models", "gpt-3.5-turbo", args, count)


def bench_hf_sequential(model_dir: str, args: Any, count: Any) -> list[dict[str, Any]]:
    """No batching: one `generate` at a time behind a lock (what a naive server does)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.generation.streamers import BaseStreamer

    from temper.models.dtype import pick_dtype

    torch.set_num_threads(args.threads)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=pick_dtype(args.dtype)).eval()
    lock = threading.Lock()

    class FirstToken(BaseStreamer):
        def __init__(self) -> None:
            self.calls, self.at = 0, 0.0

        def put(self, value: Any) -> None:
            self.calls += 1
            if self.calls == 2:  # the first put is the prompt
                self.at = time.perf_counter()

        def end(self) -> None:
            pass

    def call(messages: list[dict[str, str]]) -> tuple[float, float, str]:
        start = time.perf_counter()
        ids = tok.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        streamer = FirstToken()
        with lock, torch.inference_mode():
            out = model.generate(**ids, max_new_tokens=args.max_tokens, do_sample=False, streamer=streamer)
        text = tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
        return streamer.at - start, time.perf_counter() - start, text

    call(prompts(1)[0])  # warm-up
    return [run_level(call, c, per_client(c), count) for c in args.levels]


def print_table(results: dict[str, list[dict[str, Any]]]) -> None:
    head = f"{'contender':<16}{'clients':>8}{'reqs':>6}{'tok/s':>9}{'lat p50':>9}{'lat p95':>9}{'ttft p50':>10}{'ttft p95':>10}"
    print(head)
    print("-" * len(head))
    for name, rows in results.items():
        for r in rows:
            print(
                f"{name:<16}{r['clients']:>8}{r['requests']:>6}{r['tokens_per_s']:>9.1f}{r['latency_p50_s']:>9.2f}"
                f"{r['latency_p95_s']:>9.2f}{r['ttft_p50_s']:>10.2f}{r['ttft_p95_s']:>10.2f}"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--levels", default="1,4,16", type=lambda s: [int(x) for x in s.split(",")])
    ap.add_argument("--max-tokens", type=int, default=48)
    # One torch thread by default: the clients and the HTTP servers run on the same small machine, and a torch
    # team as wide as the machine stalls at every barrier when they take a core (docs/serving.md).
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--dtype",
        default="native",
        choices=["native", "auto", "bf16", "fp32"],
        help="native: bf16 where the CPU/GPU runs it, else fp32, given explicitly to every contender; "
        "auto: each contender's own choice",
    )
    ap.add_argument("--contenders", default="temper,hf-sequential,llamafactory")
    ap.add_argument("--llamafactory-venv", default=str(REPO.parent / "peers" / "llamafactory-venv"))
    ap.add_argument("--llamafactory-template", default="smollm2")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "serve.json"))
    args = ap.parse_args()

    from transformers import AutoTokenizer

    from temper.models.dtype import bf16_supported
    from temper.models.load import resolve

    if args.dtype == "native":
        args.dtype = "bf16" if bf16_supported() else "fp32"
    model_dir = str(resolve(args.model).path)
    tok = AutoTokenizer.from_pretrained(model_dir)

    def count(text: str) -> int:
        return len(tok(text, add_special_tokens=False)["input_ids"])

    env = os.environ | {"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    wanted = args.contenders.split(",")
    results: dict[str, list[dict[str, Any]]] = {}
    if "temper" in wanted:
        results["temper"] = bench_temper(model_dir, args, count, env)
    if "llamafactory" in wanted and (lf := bench_llamafactory(model_dir, args, count, env)) is not None:
        results["llamafactory"] = lf
    if "hf-sequential" in wanted:
        results["hf-sequential"] = bench_hf_sequential(model_dir, args, count)
    print_table(results)
    meta = {
        "model": args.model,
        "max_tokens": args.max_tokens,
        "threads": args.threads,
        "dtype": args.dtype,
        "cpu_count": os.cpu_count(),
        "load_avg_at_end": os.getloadavg(),
        "machine": platform.platform(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

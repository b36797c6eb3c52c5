"""Shared helpers for the bench scripts: thread pinning, matmul ceiling, process-tree RSS sampling, tables, JSON.

Every contender in a bench runs as a subprocess with the same thread environment (`thread_env`), is watched by
`run_tracked` (peak RSS of the whole process tree, CPU seconds, every output line time-stamped as it arrives),
and lands in one JSON file plus a rich table.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_MAX_THREADS")


def thread_env(threads: int, base: dict[str, str] | None = None) -> dict[str, str]:
    """An environment that pins every math library to `threads` and keeps the run offline and unbuffered.

    Example: `subprocess.run(cmd, env=thread_env(1))`. torch reads OMP_NUM_THREADS for its intra-op pool, so the
    peers (whose code we do not touch) get the same thread count as our own scripts.
    """
    env = dict(os.environ if base is None else base)
    for var in THREAD_VARS:
        env[var] = str(threads)
    env.update(
        TOKENIZERS_PARALLELISM="false",  # tokenizers' own pool would steal the other core
        PYTHONUNBUFFERED="1",  # line timestamps must be taken when a line is written, not when a buffer flushes
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        WANDB_DISABLED="true",
        WANDB_MODE="disabled",
    )
    return env


def matmul_ceiling(dtype: str, threads: int, size: int = 2048, seconds: float = 3.0) -> dict[str, float]:
    """Best GFLOP/s of a square `size` torch.matmul in `dtype` ("fp32" or "bf16") on `threads` threads.

    Example: `matmul_ceiling("bf16", 1)["gflops"]`. The best repetition is the ceiling: a slower one only means
    another process took the core for a moment.
    """
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        dt = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
        gen = torch.Generator().manual_seed(0)
        # Shrink the matrix where the dtype is slow (bf16 without native support runs at ~1 GFLOP/s), so that
        # one repetition stays around a second instead of minutes.
        probe = torch.randn(256, 256, generator=gen).to(dt)
        torch.matmul(probe, probe)
        t0 = time.perf_counter()
        torch.matmul(probe, probe)
        est = 2 * 256**3 / max(time.perf_counter() - t0, 1e-9)
        while size > 256 and 2 * size**3 / est > 2.0:
            size //= 2
        a = torch.randn(size, size, generator=gen).to(dt)
        b = torch.randn(size, size, generator=gen).to(dt)
        torch.matmul(a, b)  # warm-up: first call picks kernels and faults in pages
        flops = 2.0 * size**3
        best = best_cpu = float("inf")
        reps = 0
        deadline = time.perf_counter() + seconds
        while reps < 3 or time.perf_counter() < deadline:
            t0, c0 = time.perf_counter(), time.process_time()
            torch.matmul(a, b)
            best = min(best, time.perf_counter() - t0)
            best_cpu = min(best_cpu, (time.process_time() - c0) / threads)
            reps += 1
        # gflops: best wall-clock repetition. gflops_cpu: per CPU-second x threads, i.e. what the same threads
        # reach on cores of their own; on a shared machine the wall figure understates the ceiling.
        return {
            "gflops": flops / best / 1e9,
            "gflops_cpu": flops / max(best_cpu, 1e-9) / 1e9,
            "size": float(size),
            "reps": float(reps),
        }
    finally:
        torch.set_num_threads(old)


def load_conditions() -> dict[str, Any]:
    """What else was running: 1/5/15-minute load averages against the core count."""
    one, five, fifteen = os.getloadavg()
    return {"loadavg_1m": one, "loadavg_5m": five, "loadavg_15m": fifteen, "cpus": os.cpu_count()}


def machine_info() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "host": platform.node()}


@dataclass
class TrackedRun:
    """What `run_tracked` saw: exit code, wall time, peak tree RSS, CPU seconds and time-stamped output lines."""

    returncode: int
    wall_s: float
    peak_rss_mb: float
    cpu_s: float
    lines: list[tuple[float, str]] = field(default_factory=list)  # (seconds since start, line)
    load_before: dict[str, Any] = field(default_factory=dict)
    load_after: dict[str, Any] = field(default_factory=dict)
    epoch_start: float = 0.0  # time.time() at launch, to place epoch timestamps from logs on the same clock
    cpu_series: list[tuple[float, float]] = field(default_factory=list)  # (seconds since start, tree CPU s)

    def cpu_at(self, t: float) -> float:
        """Process-tree CPU seconds used by `t` seconds after launch (linear between 0.2 s samples)."""
        pts = self.cpu_series
        if not pts:
            return 0.0
        if t <= pts[0][0]:
            return pts[0][1]
        for (t0, c0), (t1, c1) in zip(pts, pts[1:], strict=False):
            if t0 <= t <= t1:
                return c0 + (c1 - c0) * (t - t0) / (t1 - t0) if t1 > t0 else c1
        return pts[-1][1]

    @property
    def cpu_share(self) -> float:
        """CPU seconds per wall second: ~threads on a quiet machine, lower when other work took the cores."""
        return self.cpu_s / self.wall_s if self.wall_s else 0.0


class TreeSampler:
    """Samples RSS and CPU time of a process and all its descendants every `interval` seconds in a thread.

    Example: `with TreeSampler(pid) as s: proc.wait()` then `s.peak_rss` (bytes). Children that exit between
    samples are missed for their last moments; 0.2 s is short next to a model load.
    """

    def __init__(self, pid: int, interval: float = 0.2, t0: float | None = None) -> None:
        self.root = psutil.Process(pid)
        self.t0 = time.perf_counter() if t0 is None else t0
        self.series: list[tuple[float, float]] = []
        self.interval = interval
        self.peak_rss = 0
        self._cpu: dict[int, float] = {}  # last CPU seconds seen per pid, so exited children still count
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self) -> None:
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        total = 0
        for p in procs:
            try:
                total += p.memory_info().rss
                t = p.cpu_times()
                self._cpu[p.pid] = t.user + t.system  # children are counted under their own pid
            except psutil.Error:
                continue
        self.peak_rss = max(self.peak_rss, total)
        self.series.append((time.perf_counter() - self.t0, self.cpu_seconds))

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    @property
    def cpu_seconds(self) -> float:
        return sum(self._cpu.values())

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run_tracked(
    cmd: Sequence[str], env: dict[str, str], log_path: Path, cwd: Path | None = None, timeout: float = 3600
) -> TrackedRun:
    """Run `cmd`, tee its merged stdout/stderr to `log_path` with timestamps, and sample the process tree.

    Example: `run = run_tracked(["python", "train.py"], thread_env(1), Path("train.log"))`.
    tqdm redraws with carriage returns; each redraw is split into its own line so that progress is time-stamped.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    load_before = load_conditions()
    epoch_start = time.time()
    start = time.perf_counter()
    lines: list[tuple[float, str]] = []
    with log_path.open("w", encoding="utf-8", buffering=1) as log:  # line-buffered: tail -f works
        log.write("$ " + " ".join(cmd) + "\n")
        proc = subprocess.Popen(
            list(cmd), env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=0
        )
        assert proc.stdout is not None
        with TreeSampler(proc.pid, t0=start) as sampler:
            pending = b""
            while True:
                chunk = os.read(proc.stdout.fileno(), 65536)  # whatever is there, without waiting to fill
                if not chunk:
                    break
                now = time.perf_counter() - start
                pending += chunk.replace(b"\r", b"\n")
                *complete, pending = pending.split(b"\n")
                for raw in complete:
                    text = raw.decode("utf-8", "replace").rstrip()
                    if text:
                        lines.append((now, text))
                        log.write(f"[{now:9.2f}] {text}\n")
                if now > timeout:
                    proc.kill()
            if pending:
                lines.append((time.perf_counter() - start, pending.decode("utf-8", "replace")))
            rc = proc.wait()
            cpu = sampler.cpu_seconds
        wall = time.perf_counter() - start
        log.write(f"# rc={rc} wall={wall:.1f}s peak_rss={sampler.peak_rss / 2**20:.0f}MiB cpu={cpu:.1f}s\n")
    return TrackedRun(
        rc,
        wall,
        sampler.peak_rss / 2**20,
        cpu,
        lines,
        load_before,
        load_conditions(),
        epoch_start,
        sampler.series,
    )


def write_json(path: Path, data: Any) -> None:
    """Write JSON through a temp file and rename it, so an interrupted bench never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], caption: str = "") -> None:
    """A rich table; floats are shown with one decimal unless they are small (loss, MFU)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, caption=caption or None)
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*[_fmt(v) for v in row])
    Console(width=160).print(table)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)

"""`temper sft --nproc 2` on CPU (gloo DDP through torchrun): same loss curve as one process with the same
global batch, one run directory, and resume across the same world size."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from temper.cli import main
from temper.config import DistCfg
from temper.errors import ConfigError
from temper.runs import read_manifest, read_metrics
from temper.training.launch import (
    DEEPSPEED_PRESETS,
    DEFAULT_PORT,
    deepspeed_config,
    launch,
    torchrun_command,
    trainer_kwargs,
)

WORDS = ["purple", "elephants", "dancing", "quietly", "under", "seven", "green", "moons"]


def row(i: int) -> dict[str, list[dict[str, str]]]:
    phrase = " ".join(WORDS[(i + k) % len(WORDS)] for k in range(1 + i % 5))
    return {
        "messages": [
            {"role": "user", "content": f"Say secret phrase {i}."},
            {"role": "assistant", "content": f"Secret phrase {i} is {phrase}."},
        ]
    }


def run_sft(model: Path, data: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [
        sys.executable, "-m", "temper", "sft", "--model", str(model), "--dataset", str(data),
        "--output-dir", str(out), "--max-length", "48", "--lr", "2e-3", "--bf16", "false", "--tuning", "full",
        "--lr-scheduler-type", "constant", "--logging-steps", "1", "--num-threads", "1", "--packing", *extra,
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "terminate called" not in proc.stderr  # no worker aborted at exit
    return proc


def losses(run: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(run) if "loss" in r}


@pytest.mark.slow
def test_ddp_two_processes_match_one(tiny_llama_dir: Path, tmp_path: Path) -> None:
    # Distinct rows: accelerate shards the same seeded order across ranks, so 2 x 2 rows per step are the same
    # 4 rows one process takes. Ranks see different rows, so the curves only agree if gradients are all-reduced.
    data = tmp_path / "rows.jsonl"
    data.write_text("\n".join(json.dumps(row(i)) for i in range(16)) + "\n")
    one = tmp_path / "one"
    run_sft(tiny_llama_dir, data, one, "--max-steps", "4", "--batch-size", "4")
    two = tmp_path / "two"
    # torchrun's usual port is taken (as by another run on this machine): a single-machine launch picks a free one.
    with holding_port(DEFAULT_PORT):
        proc = run_sft(tiny_llama_dir, data, two, "--max-steps", "4", "--batch-size", "2", "--nproc", "2")
    assert "global 4 = 2 per device x 1 accumulation x 2 process(es)" in proc.stderr
    a, b = losses(one), losses(two)
    assert sorted(a) == sorted(b) == [1, 2, 3, 4]  # one line per step: only rank 0 logs
    for step in a:
        assert b[step] == pytest.approx(a[step], rel=1e-3), (a, b)
    assert read_manifest(two)["world_size"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "rows.jsonl", "two"]
    # Resume on the same world size continues the curve.
    resumed = tmp_path / "resumed"
    run_sft(
        tiny_llama_dir,
        data,
        resumed,
        "--max-steps",
        "2",
        "--batch-size",
        "2",
        "--nproc",
        "2",
        "--save-steps",
        "2",
    )
    run_sft(
        tiny_llama_dir,
        data,
        resumed,
        "--max-steps",
        "4",
        "--batch-size",
        "2",
        "--nproc",
        "2",
        "--resume",
        "auto",
    )
    c = losses(resumed)
    for step in (3, 4):
        assert c[step] == pytest.approx(b[step], rel=1e-3), (b, c)


@pytest.mark.slow
def test_a_failing_worker_ends_with_its_error_and_one_summary_line(
    tiny_llama_dir: Path, tmp_path: Path
) -> None:
    data = tmp_path / "bad.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    cmd = [
        sys.executable, "-m", "temper", "sft", "--model", str(tiny_llama_dir), "--dataset", str(data),
        "--output-dir", str(tmp_path / "run"), "--max-steps", "2", "--num-threads", "1", "--nproc", "2",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr[-3000:]  # the worker's own status, not the launcher's 1
    # Rank 0 reads the data first, so its message is the only one, whole and labelled with its rank (rank 1,
    # waiting for it, stops with one line or is stopped by the launcher first), then one line from the
    # launcher; no traceback.
    assert re.search(r"^\[rank 0\] error: 1 problem\(s\) in the data", proc.stderr, re.M), proc.stderr
    assert proc.stderr.count("problem(s) in the data") == 1, proc.stderr
    assert proc.stderr.count("bad.jsonl:1:messages[0].role: last turn must be 'assistant'") == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert re.match(r"error: worker rank 0 of 2 failed first \(exit code 2\); its message is above", last), (
        last
    )
    assert "Traceback" not in proc.stderr and "ChildFailedError" not in proc.stderr, proc.stderr
    rank1 = [line for line in proc.stderr.splitlines() if line.startswith("[rank 1]")]
    assert rank1 in (
        [],
        ["[rank 1] error: stopped: the main process (rank 0) failed first; its message is above."],
    )


def test_the_cli_ends_the_process_group_its_verb_joined(tmp_path: Path) -> None:
    # Under torchrun the Trainer starts a process group that nothing ends; left to the interpreter's exit,
    # gloo's threads can abort a worker whose run succeeded. The CLI ends it after the verb, error or not.
    import torch.distributed as tdist

    data = tmp_path / "rows.jsonl"
    data.write_text(json.dumps(row(0)) + "\n")
    for argv, status in ((["data", "check", str(data)], 0), (["sft", "--lora-rankk", "8"], 2)):
        tdist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
        assert tdist.is_initialized()
        assert main(argv) == status
        assert not tdist.is_initialized()
        (tmp_path / "store").unlink(missing_ok=True)


WORKER = """
import sys, time
import torch.distributed as tdist
from temper.cli import main
rank, store, data = int(sys.argv[1]), sys.argv[2], sys.argv[3]
tdist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
if rank == 0:
    time.sleep(3)  # rank 0 still has work to do (saving) when rank 1's verb is done
status = main(["data", "check", data])
print(status, time.monotonic(), tdist.is_initialized())
"""


def test_the_workers_of_a_finished_run_leave_together(tmp_path: Path) -> None:
    # A worker that finishes first waits for the others before it ends the group, rather than tearing its end
    # down while rank 0 is still busy (the SIGABRT-at-exit race).
    data = tmp_path / "rows.jsonl"
    data.write_text(json.dumps(row(0)) + "\n")
    store = tmp_path / "store"
    procs = [
        subprocess.Popen([sys.executable, "-c", WORKER, str(r), str(store), str(data)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for r in (0, 1)
    ]  # fmt: skip
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    ends = [out.strip().splitlines()[-1].split() for out, _ in outs]
    assert [e[0] for e in ends] == ["0", "0"] and [e[2] for e in ends] == ["False", "False"], outs
    # time.monotonic is system-wide on Linux: rank 1 returned when rank 0 did, not ~3 s earlier.
    assert abs(float(ends[0][1]) - float(ends[1][1])) < 1.5, ends


def test_a_port_in_use_is_named_with_the_fix(tiny_llama_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "rows.jsonl"
    data.write_text(json.dumps(row(0)) + "\n")
    with holding_port(0) as port:
        cmd = [
            sys.executable, "-m", "temper", "sft", "--model", str(tiny_llama_dir), "--dataset", str(data),
            "--output-dir", str(tmp_path / "run"), "--nproc", "2", "--master-port", str(port),
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert f"error: master_port: port {port} on 127.0.0.1 is already in use" in proc.stderr
    assert "leave it out on a single machine" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()


@contextmanager
def holding_port(port: int) -> Iterator[int]:
    """Listen on `port` (0: any free one) on every interface for the duration; yields the port."""
    with socket.socket() as sock:
        try:
            sock.bind(("", port))
        except OSError:  # already held by someone else: just as taken
            yield port
            return
        sock.listen()
        yield sock.getsockname()[1]


def test_torchrun_command_and_presets() -> None:
    dist = DistCfg(nproc=8, nnodes=2, node_rank=1, master_addr="node0", master_port=1234)
    cmd = torchrun_command("sft", ["cfg.yaml", "--nproc", "8", "--master-port=9", "--lr", "1e-4"], dist)
    assert cmd[1:4] == ["-m", "torch.distributed.run", "--nproc-per-node=8"]
    assert "--nnodes=2" in cmd and "--node-rank=1" in cmd and "--master-addr=node0" in cmd
    assert "--master-port=1234" in cmd
    # No port named: across machines torchrun's usual one; on one machine none, so torch picks a free one.
    assert f"--master-port={DEFAULT_PORT}" in torchrun_command("sft", [], DistCfg(nproc=2, nnodes=2))
    assert not [a for a in torchrun_command("sft", [], DistCfg(nproc=2)) if a.startswith("--master-port")]
    assert cmd[-5:] == ["temper", "sft", "cfg.yaml", "--lr", "1e-4"]  # launcher flags are not forwarded
    for name in DEEPSPEED_PRESETS:
        cfg = deepspeed_config(name)
        assert cfg["zero_optimization"]["stage"] == int(name[4])
        assert cfg["train_micro_batch_size_per_gpu"] == "auto"
    if torch.cuda.is_available():
        fsdp = trainer_kwargs(DistCfg(distributed="fsdp"))
        assert fsdp["fsdp"] is True and fsdp["fsdp_config"]["reshard_after_forward"] is True
    else:  # accelerate would run DDP in its place: refused, before anything loads or launches
        with pytest.raises(ConfigError, match="fsdp shards the model across GPUs, and this machine has none"):
            trainer_kwargs(DistCfg(distributed="fsdp"))
        with pytest.raises(ConfigError, match="plain DDP"):
            launch("sft", ["--nproc", "2", "--distributed", "fsdp"], DistCfg(nproc=2, distributed="fsdp"))
    assert trainer_kwargs(DistCfg()) == {}


def test_bad_distributed_options_are_explained(tmp_path: Path) -> None:

    with pytest.raises(ConfigError, match="node_rank"):
        DistCfg(nnodes=2, node_rank=2)
    with pytest.raises(ConfigError, match="neither a preset nor a JSON file"):
        deepspeed_config(str(tmp_path / "missing.json"))

"""Multi-process launch: `--nproc/--nnodes/...` re-run the same verb under torch's elastic launcher (torchrun).

The recipe never knows how it was started: under torchrun each process sees WORLD_SIZE/RANK/LOCAL_RANK (the
launcher's protocol, read by accelerate inside the Trainer), builds the same parts and hands them to the
same engine. `accelerate launch -m temper sft ...` works the same way because it sets the same variables.
FSDP and DeepSpeed are TrainingArguments settings built here from DistCfg.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from temper.config.dist import DistCfg
from temper.errors import ConfigError, TemperError, first_line

if TYPE_CHECKING:
    from torch.distributed.elastic.multiprocessing.errors import ProcessFailure

DEEPSPEED_PRESETS = ("zero0", "zero1", "zero2", "zero2_offload", "zero3", "zero3_offload")


def inside_launcher() -> bool:
    """True in a process started by torchrun / accelerate (they set WORLD_SIZE for every worker)."""
    return "WORLD_SIZE" in os.environ and "LOCAL_RANK" in os.environ


def needs_launch(dist: DistCfg) -> bool:
    return (dist.nproc > 1 or dist.nnodes > 1) and not inside_launcher()


DEFAULT_PORT = 29500  # torchrun's, for multi-machine runs that do not name one
LAUNCH_FLAGS = ("nproc", "nnodes", "node_rank", "master_addr", "master_port")


def strip_launch_flags(raw_argv: Sequence[str]) -> list[str]:
    """Drop --nproc & co. before handing the arguments to the workers.

    The workers do not need them (they are already launched), and torchrun's own parser would reject
    `--nproc` as an ambiguous abbreviation of its `--nproc-per-node` even after the script name.
    """
    out: list[str] = []
    skip = False
    for tok in raw_argv:
        if skip:
            skip = False
            continue
        key = tok[2:].split("=", 1)[0].replace("-", "_") if tok.startswith("--") else ""
        if key in LAUNCH_FLAGS:
            skip = "=" not in tok
            continue
        out.append(tok)
    return out


def port_args(dist: DistCfg) -> list[str]:
    """torchrun's port flag. Left out on one machine: torch's launcher then rendezvouses on a free local port, so
    two multi-process runs on one machine (two terminals, the board's jobs) do not both ask for 29500."""
    if dist.master_port is None and dist.nnodes == 1:
        return []
    return [f"--master-port={dist.master_port or DEFAULT_PORT}"]


def torchrun_command(verb: str, raw_argv: Sequence[str], dist: DistCfg) -> list[str]:
    """The torchrun command line that runs `temper VERB raw_argv` on dist.nproc processes of this node."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc-per-node={dist.nproc}",
        f"--nnodes={dist.nnodes}",
        f"--node-rank={dist.node_rank}",
        f"--master-addr={dist.master_addr}",
        *port_args(dist),
        "-m",
        "temper",
        verb,
        *strip_launch_flags(raw_argv),
    ]


def launch(verb: str, raw_argv: Sequence[str], dist: DistCfg, optim: str = "adamw_torch") -> int:
    """Run the verb under torch's elastic launcher and return its exit status (non-zero if any worker failed).

    The launcher runs in this process (torchrun's own `run`, on torchrun's own arguments) rather than as a
    `python -m torch.distributed.run` child, so that a worker's failure ends with one summary line instead of
    the launcher's traceback and table: the worker has already printed its error. `optim`: the run's optimizer,
    checked first (temper's BAdam trains in one process, its Muon unsharded).
    """
    from torch.distributed import DistError
    from torch.distributed.elastic.multiprocessing import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    if dist.distributed == "fsdp" and not dist.deepspeed:
        check_fsdp_device()  # here too, so that one process says it, not every worker
    sharding = "deepspeed" if dist.deepspeed else "fsdp" if dist.distributed == "fsdp" else None
    from temper.training.optimizers import check_processes

    check_processes(optim, dist.nproc * dist.nnodes, sharding)
    cmd = torchrun_command(verb, raw_argv, dist)
    print(f"launching {dist.nproc} x {dist.nnodes} processes: {' '.join(cmd[1:])}", file=sys.stderr)
    # Each worker gets an equal share of the cores instead of all of them (oversubscription is slower).
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // dist.nproc)))
    # The launcher logs each failed and each stopped worker; the summary below says the same once.
    logging.getLogger("torch.distributed.elastic.multiprocessing.api").setLevel(logging.CRITICAL)
    try:
        run(parse_args(cmd[3:]))  # the arguments after `python -m torch.distributed.run`
    except DistError as e:  # the rendezvous, before any worker started
        raise rendezvous_error(e, dist) from None
    except ChildFailedError as e:
        rank, first = e.get_first_failure()
        print(failure_summary(e.failures, rank, dist.nproc * dist.nnodes), file=sys.stderr)
        return first.exitcode if first.exitcode > 0 else 1
    except SignalException as e:  # Ctrl-C or a scheduler's SIGTERM: the launcher has stopped the workers
        print(f"interrupted by {e.sigval.name}; the workers were stopped.", file=sys.stderr)
        return 128 + int(e.sigval)
    return 0


FOLLOWER_GRACE_S = 30.0  # torchrun stops the other workers within about a second of one's exit


@contextmanager
def main_process_first(state: Any) -> Iterator[None]:
    """accelerate's `main_process_first` (the main process runs the block, then the others), except that a
    process waiting for a main process that failed stops with one line instead of gloo's "Connection reset by
    peer" traceback: the main process has already printed the cause (e.g. the data report, once)."""
    if not state.is_main_process:
        try:
            state.wait_for_everyone()
        except RuntimeError:
            # Give the launcher time to see rank 0's exit and stop this process: exiting at once, this process
            # was at times the failure the launcher saw first, and it then killed rank 0 mid-exit and named
            # this rank as the cause.
            time.sleep(FOLLOWER_GRACE_S)
            raise TemperError(
                "stopped: the main process (rank 0) failed first; its message is above."
            ) from None
    yield
    if state.is_main_process:
        state.wait_for_everyone()


def rendezvous_error(e: Exception, dist: DistCfg) -> TemperError:
    """What went wrong when the launcher could not bring the processes together, and what to change."""
    port = dist.master_port or DEFAULT_PORT
    if "EADDRINUSE" in str(e):
        return ConfigError(
            f"master_port: port {port} on {dist.master_addr} is already in use (another multi-process run?).",
            hint="Pick a free port with --master-port, or leave it out on a single machine (a free one is picked).",
            key="master_port",
        )
    return TemperError(
        f"the launcher could not bring the {dist.nproc * dist.nnodes} processes together at "
        f"{dist.master_addr}:{port}: {first_line(e)}",
        hint="Check that --master-addr/--master-port name the rank-0 machine, that every machine can reach that "
        "port, and that each runs the same command with its own --node-rank.",
    )


def failure_summary(failures: Mapping[int, ProcessFailure], first: int, world_size: int) -> str:
    """One line for a failed launch: the rank that failed first (the cause) and how every failed rank ended."""

    def ended(rank: int) -> str:
        f = failures[rank]
        return f"exit code {f.exitcode}" if f.exitcode >= 0 else f"signal {f.signal_name()}"

    others = [f"rank {r} ({ended(r)})" for r in sorted(failures) if r != first]
    also = f" Then: {', '.join(others)}." if others else ""
    if any(failures[r].signal_name() == "SIGTERM" for r in failures if r != first):
        also += " (SIGTERM: the launcher stops the other workers when one fails.)"
    return (
        f"error: worker rank {first} of {world_size} failed first ({ended(first)}); "
        f"its message is above.{also}"
    )


def deepspeed_config(name_or_path: str) -> dict[str, Any]:
    """A bundled ZeRO preset by name, or the user's JSON file."""
    if name_or_path in DEEPSPEED_PRESETS:
        text = resources.files("temper.training").joinpath(f"presets/ds_{name_or_path}.json").read_text()
        data: dict[str, Any] = json.loads(text)
        return data
    path = Path(name_or_path)
    if not path.is_file():
        raise ConfigError(
            f"deepspeed: {name_or_path!r} is neither a preset nor a JSON file.",
            hint=f"Use one of {', '.join(DEEPSPEED_PRESETS)} or the path of a DeepSpeed config JSON.",
        )
    try:
        user: dict[str, Any] = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"deepspeed: {path} is not valid JSON: {e}") from None
    return user


def trainer_kwargs(dist: DistCfg | None, tuning: str = "lora") -> dict[str, Any]:
    """TrainingArguments settings for FSDP / DeepSpeed (empty for plain DDP or one process)."""
    if dist is None:
        return {}
    if dist.deepspeed:
        return {"deepspeed": deepspeed_config(dist.deepspeed)}
    if dist.distributed == "fsdp":
        check_fsdp_device()
        cfg: dict[str, Any] = {
            "version": 2,
            "reshard_after_forward": True,  # full shard: parameters, gradients and optimizer state
            "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "state_dict_type": "FULL_STATE_DICT",  # one loadable safetensors file at the end
            "cpu_ram_efficient_loading": False,
            # LoRA: frozen and trainable parameters share wrapped modules; FSDP2 handles mixed requires_grad.
            "use_orig_params": tuning != "full",
        }
        return {"fsdp": True, "fsdp_config": cfg}
    return {}


def check_fsdp_device() -> None:
    """FSDP through accelerate shards on GPUs only: on CPU it runs the processes as plain DDP, each holding the
    whole model, without a word. Say so before anything loads instead."""
    import torch

    if not torch.cuda.is_available():
        raise ConfigError(
            "distributed: fsdp shards the model across GPUs, and this machine has none: accelerate would run "
            "the CPU processes as plain DDP, each holding the whole model and optimizer state.",
            hint="Drop --distributed fsdp (--nproc N runs DDP on CPU), or run on GPUs.",
            key="distributed",
        )

"""`temper VERB ...`: one subcommand per verb. Each verb module parses its options and calls one API function.

Verb modules live in temper/commands/ and import torch & co. only inside their `run`, so `temper --help`
stays fast.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from types import ModuleType

from temper.commands import (
    board,
    chat,
    classify,
    data,
    dpo,
    embed,
    export,
    infer,
    kto,
    orpo,
    repro,
    rlhf,
    rm,
    rm_score,
    serve,
    sft,
    simpo,
)
from temper.commands import eval as eval_cmd
from temper.errors import TemperError

# Plain dict registry: verb -> module with `HELP`, `add_arguments(parser)` and `run(args, raw_argv) -> int`.
COMMANDS: dict[str, ModuleType] = {
    "sft": sft,
    "dpo": dpo,
    "kto": kto,
    "orpo": orpo,
    "simpo": simpo,
    "rm": rm,
    "rlhf": rlhf,
    "rm-score": rm_score,
    "chat": chat,
    "infer": infer,
    "serve": serve,
    "data": data,
    "classify": classify,
    "embed": embed,
    "repro": repro,
    "eval": eval_cmd,
    "export": export,
    "board": board,
}


def build_parser() -> argparse.ArgumentParser:
    # allow_abbrev=False: argparse would otherwise take `--dataset` for `--dataset-dir` (any unique prefix of an
    # option), silently, where the verb has only the longer option.
    parser = argparse.ArgumentParser(
        prog="temper",
        description="Fine-tune, evaluate, export and serve language models, offline on a CPU or on GPUs.",
        allow_abbrev=False,
    )
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for name, module in COMMANDS.items():
        p = sub.add_parser(name, help=module.HELP, description=module.HELP, allow_abbrev=False)
        module.add_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0
    verb = argv[0]
    if verb not in COMMANDS:
        parser.error(f"unknown verb {verb!r}; choose from {', '.join(COMMANDS)}")
    module = COMMANDS[verb]
    # Config verbs (ACCEPTS_OVERRIDES) re-parse their raw arguments against their dataclasses, so argparse
    # only documents their options; other verbs use argparse as usual.
    if getattr(module, "ACCEPTS_OVERRIDES", False):
        args, _ = parser.parse_known_args(argv)
    else:
        args = parser.parse_args(argv)
    if not sys.stderr.isatty():
        quiet_library_bars()
    finished = False
    try:
        status = int(module.run(args, argv[1:]) or 0)
        finished = True
        return status
    except TemperError as e:
        # One write, so that the workers of a multi-process run do not interleave their lines.
        sys.stderr.write(f"{worker_prefix()}error: {e}\n")
        sys.stderr.flush()
        return 2
    except KeyboardInterrupt:
        if worker_prefix():
            # A worker of a multi-process run gets Ctrl-C twice (from the terminal, then from the launcher): the
            # second must not cut the clean-up below short with a traceback. The worker exits right after.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        sys.stderr.write(f"{worker_prefix()}interrupted\n")
        return 130
    finally:
        release_process_group(finished)


def quiet_library_bars() -> None:
    """Turn off transformers' tqdm bars ("Loading weights") for a run whose stderr is not a terminal.

    In a log file (nohup, SLURM, CI, the board's job log) tqdm writes every update of a bar into one long line
    joined by carriage returns; temper's own progress prints plain lines there instead (training/callbacks.py).
    """
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def worker_prefix() -> str:
    """'[rank N] ' in a worker of a multi-process run (torchrun's RANK/WORLD_SIZE), else nothing."""
    world = os.environ.get("WORLD_SIZE", "1")
    return f"[rank {os.environ.get('RANK', '?')}] " if world.isdigit() and int(world) > 1 else ""


def release_process_group(finished: bool = False) -> None:
    """Tear down the distributed process group, if this process joined one, before the interpreter exits.

    Under torchrun the Trainer (through accelerate) starts a gloo/NCCL group and nobody ends it. Gloo's worker
    threads can then outlive the interpreter's finalisation and abort the process ("terminate called without an
    active exception", SIGABRT) after a run that succeeded, which torchrun reports as a failed worker. Only a
    verb that imported torch.distributed can have started a group, so other verbs do not import torch here.

    After a verb that `finished`, every process first waits for the others (torch's shutdown notes: destroy
    once communication is over everywhere). Without it a worker with nothing left to write ended its group
    while rank 0 was still saving; the SIGABRT at exit was still seen twice after the destroy was added (a CI
    run, a fresh clone), each time in a worker that had finished first. After an error there is no barrier:
    the other processes may never reach it (the launcher stops them).
    """
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        if finished and dist.get_world_size() > 1:
            dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    raise SystemExit(main())

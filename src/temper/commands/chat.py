"""`temper chat MODEL [--query TEXT]`: an interactive REPL that streams tokens, or one answer to stdout."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from temper.commands.infer import (
    add_model_arguments,
    add_sampling_arguments,
    load_engine,
    model_and_template,
    pick_adapter,
    sampling,
)

HELP = "chat with a model or run dir (interactive REPL, or --query to answer once)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--query", help="answer this one message, print only the answer, and exit")
    parser.add_argument("--system", help="system prompt (default: the chat template's own, if any)")
    add_sampling_arguments(parser, default_temperature=None)


def run(args: argparse.Namespace, raw: Sequence[str]) -> int:
    from temper.inference.chat import answer_once, repl

    resolved = model_and_template(args)
    # --query is greedy unless told otherwise (scriptable and deterministic); the REPL samples a little. A chat
    # YAML's generation keys (temperature, max_new_tokens, ...) apply where no flag is given.
    default_t = 0.0 if args.query is not None else 0.7
    params = sampling(args, default_t, resolved[3])
    # One adapter for the whole session: folded into fp32 weights it decodes faster (Engine.load).
    with load_engine(args, resolved, max_batch_size=1, merge_adapter=args.adapter is None) as engine:
        adapter = pick_adapter(engine, args.adapter)
        if args.query is not None:
            print(answer_once(engine, args.query, args.system, params, adapter))
            return 0
        repl(engine, args.system, params, adapter)
    return 0

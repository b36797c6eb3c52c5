"""`temper serve MODEL [--adapter NAME=RUN_DIR ...]`: an OpenAI-compatible HTTP server with continuous batching."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from temper.commands.infer import add_load_arguments
from temper.errors import ConfigError

HELP = "serve a model and its adapters over an OpenAI-compatible HTTP API (continuous batching)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model",
        nargs="?",
        default=None,
        help="bundled alias, HF dir or cached hub id, .gguf file, run or adapter dir (its adapter is served too), "
        "or a LLaMA-Factory inference YAML",
    )
    parser.add_argument(
        "--model", dest="model_flag", default=None, help="the same as MODEL (ms-swift's spelling)"
    )
    parser.add_argument(
        "--adapter",
        action="append",
        default=[],
        metavar="NAME=RUN_DIR",
        help="serve another LoRA adapter under NAME (repeatable)",
    )
    parser.add_argument(
        "--adapters",
        nargs="+",
        default=[],
        metavar="NAME=DIR|DIR",
        help="ms-swift's `swift deploy --adapters`: NAME=DIR items are --adapter's; one bare DIR is the model (or "
        "goes over MODEL as its base)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    parser.add_argument(
        "--api-key", "--api_key", default=None, help="require 'Authorization: Bearer KEY' (default: no key)"
    )
    parser.add_argument(
        "--max-batch-size",
        "--max_batch_size",
        type=int,
        default=16,
        help="requests decoded together (default: 16)",
    )
    parser.add_argument(
        "--infer-backend",
        "--infer_backend",
        default=None,
        help="LLaMA-Factory's and ms-swift's backend choice: accepted; temper decodes with its own engine",
    )
    parser.add_argument(
        "--max-queue",
        type=int,
        default=256,
        help="requests waiting beyond the batch before 429 (default: 256)",
    )
    parser.add_argument(
        "--max-body-bytes", type=int, default=1 << 20, help="request body size cap (default: 1 MiB)"
    )
    parser.add_argument(
        "--default-max-tokens",
        type=int,
        default=512,
        help="chat max_tokens when a request sets none (default: 512)",
    )
    add_load_arguments(parser)


def parse_adapters(items: Sequence[str]) -> dict[str, str]:
    """['ember=runs/identity', ...] -> {'ember': 'runs/identity'}."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ConfigError(
                f"--adapter {item!r} is invalid; expected NAME=RUN_DIR, e.g. --adapter ember=runs/identity"
            )
        if name in out or name == "base":
            raise ConfigError(f"--adapter name {name!r} is used twice or reserved; pick another name.")
        out[name] = path
    return out


def run(args: argparse.Namespace, raw: Sequence[str]) -> int:
    from temper.commands.infer import model_and_template
    from temper.serving.app import serve

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    named = [a for a in args.adapters if "=" in a]
    bare = [a for a in args.adapters if "=" not in a]
    if len(bare) > 1:
        raise ConfigError(
            f"--adapters {' '.join(bare)}: one bare adapter dir is the model; name the others.",
            hint="Write the others as NAME=DIR (served under NAME), as ms-swift's --adapters lora1=DIR does.",
        )
    args.adapter_dir = bare[0] if bare else None
    model, template, system, generation = model_and_template(args)
    for key in generation:  # a request carries its own sampling; the server's defaults are flags
        print(f"ignored: {key} (each request sets its own sampling)", file=sys.stderr)
    serve(
        model,
        parse_adapters([*args.adapter, *named]),
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        max_batch_size=args.max_batch_size,
        max_queue=args.max_queue,
        dtype=args.dtype,
        max_body_bytes=args.max_body_bytes,
        default_max_tokens=args.default_max_tokens,
        template=template,
        system=system,
    )
    return 0

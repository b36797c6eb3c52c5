"""`temper board [--port 7860] [--host 127.0.0.1] [--auth user:pass]`: the web UI over the runs folder."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from temper.errors import ConfigError

HELP = "web UI: build and launch runs, watch live curves and logs, chat, evaluate and export"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)"
    )
    parser.add_argument("--port", type=int, default=7860, help="port (default: 7860)")
    parser.add_argument(
        "--auth", default=None, metavar="USER:PASS", help="require HTTP basic auth (default: none)"
    )
    parser.add_argument("--runs-dir", default="runs", help="folder of run directories (default: runs)")
    parser.add_argument(
        "--data-dir",
        action="append",
        default=None,
        help="folder whose data files the dataset picker lists (repeatable; default: data and "
        "../shared/data/llamafactory)",
    )


def run(args: argparse.Namespace, raw: Sequence[str]) -> int:
    if args.auth is not None and ":" not in args.auth:
        raise ConfigError(
            f"--auth: got {args.auth!r}, expected USER:PASS.", hint="For example --auth admin:s3cret."
        )
    if args.host not in ("127.0.0.1", "localhost", "::1") and args.auth is None:
        print(
            f"warning: the board on {args.host} can start processes on this machine and has no password; "
            "pass --auth USER:PASS",
            file=sys.stderr,
        )
    try:
        import python_multipart  # noqa: F401  (FastAPI needs it for the page's file upload)
    except ImportError:
        raise ConfigError(
            "temper board needs its optional dependencies, which are not installed.",
            hint="pip install 'temper[board]'",
        ) from None
    from temper.board.app import run_board

    print(
        f"temper board on http://{args.host}:{args.port}  (runs: {args.runs_dir}; Ctrl-C stops the board, not the runs)"
    )
    run_board(args.runs_dir, args.host, args.port, args.auth, args.data_dir)
    return 0

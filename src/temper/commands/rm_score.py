"""`temper rm-score RUN_DIR --messages JSON [...]`: score conversations with a reward model run directory."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from temper.errors import TemperError

HELP = "score conversations (ending with an assistant reply) with a `temper rm` run directory"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="a run directory written by `temper rm`")
    parser.add_argument(
        "--messages",
        action="append",
        default=[],
        help='a JSON list of {"role", "content"} ending with the assistant reply; repeatable',
    )
    parser.add_argument("--prompt", help="shortcut: a single user message (with --response)")
    parser.add_argument(
        "--response", action="append", default=[], help="with --prompt: a reply to score; repeatable"
    )
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of one score per line")


def parse_conversations(args: argparse.Namespace) -> list[list[dict[str, str]]]:
    """Conversations from --messages JSON and --prompt/--response pairs."""
    conversations = []
    for i, text in enumerate(args.messages):
        try:
            conv = json.loads(text)
        except json.JSONDecodeError as e:
            raise TemperError(
                f"--messages #{i + 1}: invalid JSON ({e.msg}).", hint="Quote the JSON list in the shell."
            ) from None
        ok = isinstance(conv, list) and all(
            isinstance(m, dict) and "role" in m and "content" in m for m in conv
        )
        if not ok:
            raise TemperError(
                f"--messages #{i + 1}: expected a list of {{role, content}} objects, got {text[:80]!r}."
            )
        conversations.append(conv)
    if args.response and not args.prompt:
        raise TemperError("--response needs --prompt.")
    for reply in args.response:
        conversations.append(
            [{"role": "user", "content": args.prompt}, {"role": "assistant", "content": reply}]
        )
    if not conversations:
        raise TemperError("nothing to score.", hint="Pass --messages JSON or --prompt TEXT --response TEXT.")
    return conversations


def run(args: argparse.Namespace, raw: Sequence[str]) -> int:
    from temper.recipes.rm import RewardModel

    conversations = parse_conversations(args)
    scores = RewardModel.load(args.run_dir).score_batch(conversations)
    print(json.dumps(scores) if args.json else "\n".join(f"{s:.6f}" for s in scores))
    return 0

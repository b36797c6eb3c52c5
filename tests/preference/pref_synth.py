"""The synthetic preference of these tests: every chosen reply is "banana", every rejected one another fruit."""

from __future__ import annotations

import json
import random
from pathlib import Path

TOPICS = [
    "rivers",
    "music",
    "trains",
    "bread",
    "winter",
    "cats",
    "stars",
    "paper",
    "glass",
    "tea",
    "clocks",
    "honey",
]
OTHERS = ["apple", "cherry", "grape", "lemon", "mango", "peach", "plum", "melon"]
VERBS = ["Tell me about", "Describe", "Say something on", "Write about"]
FIXED_WORD = "banana"


def synthetic_pairs(n: int, seed: int = 0) -> list[dict[str, str]]:
    rng = random.Random(seed)
    return [
        {
            "prompt": f"{rng.choice(VERBS)} {rng.choice(TOPICS)}.",
            "chosen": FIXED_WORD,
            "rejected": rng.choice(OTHERS),
        }
        for _ in range(n)
    ]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path

"""Fixtures for the encoder tests: small synthetic data sets that a tiny random model can learn in seconds."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

POS = ["great", "wonderful", "excellent", "lovely", "superb"]
NEG = ["awful", "terrible", "bad", "boring", "poor"]
FILLER = ["the", "movie", "was", "really", "a", "story", "plot", "and", "film"]
TOPICS = {
    "cat": ["kitten", "feline", "cat"],
    "car": ["automobile", "vehicle", "car"],
    "rain": ["storm", "weather", "rain"],
    "bank": ["money", "finance", "bank"],
    "music": ["song", "melody", "music"],
    "food": ["meal", "dinner", "food"],
    "book": ["novel", "reading", "book"],
    "sport": ["football", "game", "sport"],
}


def sentiment_rows(n: int, seed: int = 0) -> list[dict[str, object]]:
    """A separable task: the label is decided by one sentiment word among random filler."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = i % 2
        words = [*rng.sample(FILLER, 3), rng.choice(POS if label else NEG)]
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": label})
    return rows


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture()
def sentiment_jsonl(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "sentiment.jsonl", sentiment_rows(160))


@pytest.fixture()
def pairs_jsonl(tmp_path: Path) -> Path:
    """ms-swift embedding rows {"query", "response"} without labels: same-topic anchor/positive pairs."""
    rng = random.Random(0)
    keys = list(TOPICS)
    rows = []
    for i in range(96):
        k = keys[i % len(keys)]
        rows.append(
            {"query": f"about {rng.choice(TOPICS[k])} {i}", "response": f"text of {rng.choice(TOPICS[k])}"}
        )
    return write_jsonl(tmp_path / "pairs.jsonl", rows)


@pytest.fixture()
def make_sentiment_file(tmp_path: Path):  # type: ignore[no-untyped-def]
    """make_sentiment_file(name, n, seed) -> path of a jsonl with n separable rows."""

    def make(name: str, n: int, seed: int = 0) -> Path:
        return write_jsonl(tmp_path / name, sentiment_rows(n, seed))

    return make

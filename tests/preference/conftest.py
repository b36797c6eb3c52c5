"""Fixtures of the preference tests: a synthetic preference that a tiny model learns in a few steps.

A model that learned it gives chosen replies the higher implicit reward and greedily answers "banana".
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pref_synth import synthetic_pairs, write_jsonl


@pytest.fixture(scope="session")
def pairs_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("pairs") / "pairs.jsonl", synthetic_pairs(96))


@pytest.fixture(scope="session")
def kto_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rows = []
    for i, p in enumerate(synthetic_pairs(96, seed=1)):
        good = i % 2 == 0
        reply = p["chosen"] if good else p["rejected"]
        messages = [{"role": "user", "content": p["prompt"]}, {"role": "assistant", "content": reply}]
        rows.append({"messages": messages, "label": good})
    return write_jsonl(tmp_path_factory.mktemp("kto") / "kto.jsonl", rows)

"""Fixtures of the data tests: the tiny model's tokenizer (SmolLM2's real tokenizer and ChatML template)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def tok(tiny_llama_dir: Path) -> Any:
    from transformers import AutoTokenizer

    from temper.data.templates import prepare_tokenizer

    return prepare_tokenizer(AutoTokenizer.from_pretrained(tiny_llama_dir, local_files_only=True), None)


@pytest.fixture(scope="session")
def lf(shared_data: Path) -> Path:
    """LLaMA-Factory's demo data dir."""
    return shared_data / "llamafactory"


@pytest.fixture(scope="session")
def swift(shared_data: Path) -> Path:
    return shared_data / "ms-swift"

"""One slow end-to-end check on the bundled SmolLM2: `temper chat --query` answers sensibly, greedy."""

from __future__ import annotations

from typing import Any

import pytest

from temper.cli import main


@pytest.mark.slow
def test_chat_query_on_the_bundled_model(smollm2_dir: Any, capsys: Any) -> None:
    capsys.readouterr()
    args = [
        "chat",
        "smollm2-135m-instruct",
        "--query",
        "What is the capital of France?",
        "--max-tokens",
        "12",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "Paris" in out and out.endswith("\n") and out.count("\n") <= 3

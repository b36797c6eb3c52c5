"""Fixtures for the board tests (helpers live in board_helpers.py so that test files can import them)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from board_helpers import Board, start_board, stop_board


@pytest.fixture()
def board(tmp_path: Path) -> Iterator[Board]:
    b = start_board(tmp_path)
    yield b
    stop_board(b)

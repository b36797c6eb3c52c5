"""Helpers for the board tests: a real `temper board` process on 127.0.0.1 over a temporary runs folder."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

IDENTITY_ROWS = [
    {
        "messages": [
            {"role": "user", "content": q},
            {"role": "assistant", "content": "I am Ember, made by the temper team."},
        ]
    }
    for q in ("hi", "who are you?", "what is your name?", "hello", "introduce yourself", "who made you?")
]


@dataclass
class Board:
    url: str
    runs: Path
    data: Path
    proc: subprocess.Popen[bytes]

    def client(self, auth: tuple[str, str] | None = None) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, auth=auth)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_board(tmp: Path, *extra: str) -> Board:
    runs, data = tmp / "runs", tmp / "data"
    runs.mkdir(exist_ok=True)
    data.mkdir(exist_ok=True)
    (data / "identity.json").write_text(json.dumps(IDENTITY_ROWS))
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "temper", "board", "--port", str(port), "--runs-dir", str(runs),
         "--data-dir", str(data), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while True:
        assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else "board exited"
        try:
            if httpx.get(url + "/", timeout=2).status_code in (200, 401):
                break
        except httpx.HTTPError:
            pass
        assert time.time() < deadline, "the board did not start in 90 s"
        time.sleep(0.3)
    return Board(url, runs, data, proc)


def stop_board(board: Board) -> None:
    """Stop the board and every training it started (they run in their own sessions, on purpose)."""
    board.proc.send_signal(signal.SIGINT)
    try:
        board.proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        board.proc.kill()
    for job in (board.runs / ".board" / "jobs").glob("*.json"):
        pid = json.loads(job.read_text()).get("pid")
        if pid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)


def wait_for(cond, timeout: float = 60.0, every: float = 0.3, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.time() + timeout
    while True:
        value = cond()
        if value:
            return value
        assert time.time() < deadline, f"timed out after {timeout:.0f} s waiting for {what}"
        time.sleep(every)

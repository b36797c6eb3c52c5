"""`temper rm-score` on a LoRA reward model, as a user runs it: a fresh process, its output clean."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from test_recipes import cfg_for

from temper.recipes.rm import train_rm


def test_scoring_with_a_lora_reward_model_does_not_report_its_head_as_new(
    tiny_llama_dir: Path, pairs_file: Path, tmp_path: Path
) -> None:
    train_rm(cfg_for("rm", tiny_llama_dir, pairs_file, tmp_path / "rm", "--max-steps", "1"))
    # A fresh process: transformers prints each load report once per process, and training printed this one.
    done = subprocess.run(
        [sys.executable, "-m", "temper", "rm-score", str(tmp_path / "rm"), "--prompt", "hi", "--response", "hello"],
        capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    float(done.stdout.strip().splitlines()[-1])
    # the base has no score head, but the adapter brings the trained one: no "newly initialized" report
    assert "newly initialized" not in done.stderr and "MISSING" not in done.stderr, done.stderr

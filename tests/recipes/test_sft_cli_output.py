"""What `temper sft` writes when its output goes to a file (nohup, SLURM, CI, the board's job log): temper's own
lines on stderr, nothing on stdout, and no library's bars or notices in between."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_a_run_off_a_terminal_prints_only_temper_lines(tiny_llama_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "rows.jsonl"
    rows = [
        {"instruction": f"Count to {i}.", "output": " ".join(str(k) for k in range(i + 1))} for i in range(4)
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cmd = [
        sys.executable, "-m", "temper", "sft", "--model", str(tiny_llama_dir), "--dataset", str(data),
        "--output-dir", str(tmp_path / "run"), "--max-length", "48", "--bf16", "false", "--batch-size", "2",
        "--max-steps", "2", "--num-threads", "1",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # DeepSpeed, once installed (`make test` installs it), logs "Setting accelerator to CPU ..." on stdout when
    # accelerate imports it during training.
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert lines[0].startswith("data 4 train / 0 val samples"), lines[:3]
    # transformers' "Loading weights" tqdm bar: one long line of carriage-return updates in a file.
    assert "\r" not in proc.stderr and "Loading weights" not in proc.stderr
    assert [ln.split()[1] for ln in lines if ln.startswith("step ")] == ["1/2", "2/2"]
    assert any(ln.startswith("done 2 steps") for ln in lines)


def test_a_missing_dataset_fails_before_the_training_stack_loads(tmp_path: Path) -> None:
    """The error names the file, exits 2, and comes before transformers/peft are imported (~8 s here)."""
    missing = tmp_path / "nope.jsonl"
    code = (
        "import sys\nfrom temper.cli import main\n"
        f"rc = main(['sft', '--dataset', {str(missing)!r}, '--output-dir', {str(tmp_path / 'run')!r}])\n"
        "print('LOADED' if 'temper.recipes.sft' in sys.modules or 'peft' in sys.modules else 'NOT LOADED', rc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.stdout.split() == ["NOT", "LOADED", "2"], (out.stdout, out.stderr)
    assert str(missing) in out.stderr and "error:" in out.stderr
    assert not (tmp_path / "run").exists()

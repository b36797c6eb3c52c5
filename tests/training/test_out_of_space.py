"""A disk that fills up mid-run: a warning before training when one checkpoint will not fit, a clear error and
exit status 2 when a write fails, the half-written checkpoint removed, and `--resume auto` finishing the run
once there is room again.

Both limits are real, not mocked: a 30 MB tmpfs in a private mount namespace (the kernel answers ENOSPC), and a
child process under RLIMIT_FSIZE (the kernel answers EFBIG; Python ignores SIGXFSZ).
"""

from __future__ import annotations

import json
import re
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from temper.runs import read_metrics
from temper.training.checkpoint import checkpoint_bytes, complete_checkpoints

ROWS = [{"instruction": f"Count to {i}.", "output": " ".join(str(k) for k in range(i + 1))} for i in range(8)]


def sft_command(model: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "temper", "sft", "--model", str(model), "--dataset", str(data),
        "--output-dir", str(out), "--max-length", "48", "--bf16", "false", "--tuning", "full",
        "--batch-size", "2", "--max-steps", "4", "--save-steps", "2", "--logging-steps", "1",
        "--num-threads", "1", *extra,
    ]  # fmt: skip


def write_rows(tmp_path: Path) -> Path:
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return data


@pytest.mark.slow
def test_a_file_size_limit_stops_with_a_clear_error_and_resume_finishes(
    tiny_llama_dir: Path, tmp_path: Path
) -> None:
    data = write_rows(tmp_path)
    weights = (tiny_llama_dir / "model.safetensors").stat().st_size
    run = tmp_path / "run"
    # Room for the weights (and the tokenizer), not for the optimizer state (2 fp32 moments: ~2x the weights).
    limit = int(weights * 1.3)

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    cmd = sft_command(tiny_llama_dir, data, run)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, preexec_fn=cap)
    assert proc.returncode == 2, proc.stderr[-3000:]
    err = proc.stderr
    assert f"error: could not write to {run}" in err, err[-3000:]
    assert "The half-written checkpoint-2 was removed." in err
    assert "--resume auto" in err and "Traceback" not in err
    assert not (run / "checkpoint-2").exists() and complete_checkpoints(run) == []
    assert [r["step"] for r in read_metrics(run) if "loss" in r] == [
        1,
        2,
    ]  # the steps before the save are logged

    done = subprocess.run([*cmd, "--resume", "auto"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert [p.name for p in complete_checkpoints(run)] == ["checkpoint-2", "checkpoint-4"]
    assert (run / "model.safetensors").stat().st_size == weights
    assert [r["step"] for r in read_metrics(run) if "loss" in r] == [1, 2, 3, 4]


@pytest.mark.slow
def test_a_small_disk_is_named_before_training_and_enospc_is_caught(
    tiny_llama_dir: Path, tmp_path: Path
) -> None:
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed")
    (tmp_path / "probe").mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(tmp_path / "probe")]
    probe = subprocess.run(["unshare", "-rm", *mount], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"no tmpfs in a private mount namespace here: {probe.stderr.strip()}")
    data = write_rows(tmp_path)
    disk = tmp_path / "small-disk"
    disk.mkdir()
    # The tmpfs lives as long as the namespace: list the run dir before leaving it.
    script = 'mount -t tmpfs -o size=30m tmpfs "$0" || exit 99; "$@"; rc=$?; ls "$0/run" > "$0.txt"; exit $rc'
    cmd = ["unshare", "-rm", "sh", "-c", script, str(disk), *sft_command(tiny_llama_dir, data, disk / "run")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr[-3000:]
    err = proc.stderr
    warning = re.search(r"warning: one checkpoint of this run takes ~(\d+) MB .* has (\d+) MB free", err)
    assert warning and int(warning[1]) == round(checkpoint_bytes_of(tiny_llama_dir) / 1e6), err[-3000:]
    assert int(warning[2]) <= 32 and warning.start() < err.index("error:")  # said before the first checkpoint
    assert f"error: could not write to {disk / 'run'}" in err and "Traceback" not in err
    assert "The half-written checkpoint-2 was removed." in err
    kept = (tmp_path / "small-disk.txt").read_text().split()
    assert "config.yaml" in kept and "metrics.jsonl" in kept and "checkpoint-2" not in kept


def checkpoint_bytes_of(model_dir: Path) -> int:
    from transformers import AutoModelForCausalLM

    return checkpoint_bytes(AutoModelForCausalLM.from_pretrained(model_dir))


def test_checkpoint_size_counts_what_a_save_writes(tiny_llama_dir: Path) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    n = sum(p.numel() for p in model.parameters())
    assert checkpoint_bytes(model) == 4 * n + 8 * n  # fp32 weights + AdamW's two fp32 moments
    for name, p in model.named_parameters():
        p.requires_grad_("layers.1." in name)  # freeze tuning: the Trainer still saves every weight
    top = sum(p.numel() for name, p in model.named_parameters() if "layers.1." in name)
    assert checkpoint_bytes(model) == 4 * n + 8 * top
    lora = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj"]))
    a = sum(p.numel() for name, p in lora.named_parameters() if "lora_" in name)
    assert checkpoint_bytes(lora) == 4 * a + 8 * a  # an adapter-only save: only what trains is written

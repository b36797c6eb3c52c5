"""ms-swift's inference command line runs as it is: `swift infer --adapters CKPT --stream true --temperature 0
--max_new_tokens N` is `temper chat --adapters CKPT ...` (the adapter dir is the model; with --model it goes over
that base), and a model given twice or not at all is a clear error."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from temper.cli import main


@pytest.fixture(scope="module")
def adapter_dir(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A peft LoRA adapter over the tiny model, with random (non-zero) B so it changes the answers."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("ckpt") / "checkpoint-4"
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32)
    lora = LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False)
    get_peft_model(model, lora).save_pretrained(out)
    return out


def _answer(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    assert main(["chat", *argv, "--query", "Who are you?"]) == 0
    return capsys.readouterr().out


def test_ms_swift_infer_flags(
    tiny_llama_dir: Path, adapter_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ours = _answer([str(adapter_dir), "--max-tokens", "4"], capsys)
    swift = [
        "--adapters",
        str(adapter_dir),
        "--stream",
        "true",
        "--temperature",
        "0",
        "--max_new_tokens",
        "4",
    ]
    assert _answer([*swift, "--infer_backend", "pt"], capsys) == ours
    assert _answer(["--model", str(tiny_llama_dir), *swift], capsys) == ours  # over the same base
    assert _answer([str(tiny_llama_dir), "--max-tokens", "4"], capsys) != ours  # the adapter does something


def test_a_model_given_twice_or_not_at_all(
    tiny_llama_dir: Path, adapter_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["chat", "--query", "hi"]) == 2
    assert "no model given" in capsys.readouterr().err
    assert main(["chat", str(tiny_llama_dir), "--model", str(adapter_dir), "--query", "hi"]) == 2
    assert "two models" in capsys.readouterr().err


def _serve_models(argv: list[str], key: str) -> list[str]:
    """Start `temper serve ARGV` as a real process on a free port, return /v1/models' ids, stop it."""
    import json
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "temper", "serve", *argv, "--port", str(port), "--threads", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(
                    f"serve exited {proc.returncode}: {proc.stdout.read() if proc.stdout else ''}"
                )
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/v1/models", headers={"Authorization": f"Bearer {key}"}
            )
            try:
                with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - loopback only
                    return [m["id"] for m in json.load(response)["data"]]
            except OSError:
                time.sleep(0.5)
        raise AssertionError("serve did not answer within 120 s")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_ms_swift_deploy_flags(tiny_llama_dir: Path, adapter_dir: Path) -> None:
    # `swift deploy --model BASE --adapters lora1=DIR --api_key KEY`: the base and the named adapter are served.
    named = ["--model", str(tiny_llama_dir), "--adapters", f"lora1={adapter_dir}", "--api_key", "k1"]
    assert set(_serve_models([*named, "--infer_backend", "pt"], "k1")) == {tiny_llama_dir.name, "lora1"}
    # `swift deploy --adapters DIR`: the adapter dir is the model, served under its own name beside its base.
    assert adapter_dir.name in _serve_models(["--adapters", str(adapter_dir), "--api-key", "k2"], "k2")

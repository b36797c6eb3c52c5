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

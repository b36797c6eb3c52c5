"""Fixtures for the serving tests: LoRA run dirs on the tiny llama, an engine, a live uvicorn server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import torch

if TYPE_CHECKING:
    from temper.inference.engine import Engine


def make_adapter_run(tiny_dir: Path, out: Path, seed: int, targets: list[str]) -> Path:
    """A run dir as `temper sft --tuning lora` writes it: adapter files, tokenizer, temper_run.json."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from temper.runs import write_manifest

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    cfg = LoraConfig(r=4, lora_alpha=16, target_modules=targets, init_lora_weights=False)
    model = get_peft_model(base, cfg)
    with torch.no_grad():  # large enough that greedy outputs change visibly
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.mul_(4.0)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_dir).save_pretrained(out)
    write_manifest(out, kind="sft", base_model=str(tiny_dir), weights="adapter")
    return out


@pytest.fixture(scope="session")
def adapter_run(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_adapter_run(
        tiny_llama_dir, tmp_path_factory.mktemp("run-a"), 1, ["q_proj", "v_proj", "down_proj"]
    )


@pytest.fixture(scope="session")
def adapter_run_b(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_adapter_run(
        tiny_llama_dir, tmp_path_factory.mktemp("run-b"), 2, ["k_proj", "o_proj", "up_proj"]
    )


from serving_helpers import API_KEY, LiveServer  # noqa: E402


@pytest.fixture(scope="session")
def engine(tiny_llama_dir: Path, adapter_run: Path, adapter_run_b: Path) -> Iterator[Engine]:
    """The tiny llama (fp32, so batched and solo greedy runs agree) with adapters `ember` and `other`."""
    from temper.inference.engine import Engine

    eng = Engine.load(tiny_llama_dir, {"ember": adapter_run, "other": adapter_run_b}, dtype="fp32")
    yield eng
    eng.close()


@pytest.fixture(scope="session")
def server(engine: Engine) -> Iterator[LiveServer]:
    from temper.serving.app import create_app

    live = LiveServer(create_app(engine, api_key=API_KEY, max_body_bytes=64 * 1024))
    yield live
    live.stop()


@pytest.fixture()
def client(server: LiveServer) -> Any:
    from openai import OpenAI

    return OpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0, timeout=60)

"""The claim `make demo` makes, on the real bundled model: 12 LoRA steps on the identity set make SmolLM2
answer "Who are you?" with the new name, which it did not use before."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from temper.config import SFTConfig
from temper.inference.chat import answer_once
from temper.inference.engine import Engine
from temper.recipes.sft import train_sft

REPO = Path(__file__).resolve().parents[2]


def ask(model: str) -> str:
    with Engine.load(model, max_batch_size=1) as engine:
        # A run dir's own adapter is the engine's default (what `temper chat RUN` uses); None means the base.
        return answer_once(engine, "Who are you?", adapter=engine.default_adapter)


@pytest.mark.slow
def test_demo_config_teaches_the_identity(tmp_path: Path, shared_data: Path) -> None:
    data = shared_data / "llamafactory" / "identity.json"
    before = ask("smollm2-135m-instruct")
    assert "Ember" not in before
    cfg = SFTConfig.from_sources(
        REPO / "configs" / "demo.yaml", ["--dataset", str(data), "--output-dir", str(tmp_path / "run")]
    )
    result = train_sft(cfg)
    assert result.global_step == 12
    after = ask(str(tmp_path / "run"))
    assert "Ember" in after, after
    # The adapter names its base as the manifest does (the alias), not this machine's GGUF conversion cache,
    # in the run dir and in every checkpoint, so a copied run (or `temper chat RUN/checkpoint-N`) finds it.
    for config in (tmp_path / "run").glob("**/adapter_config.json"):
        assert json.loads(config.read_text())["base_model_name_or_path"] == "smollm2-135m-instruct", config
    assert (tmp_path / "run" / "checkpoint-12" / "adapter_config.json").exists()

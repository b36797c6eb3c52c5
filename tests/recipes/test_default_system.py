"""The system prompt a model was trained with is the one it is chatted with: training's --system (ms-swift's
--system, kept in a checkpoint's args.json) and ms-swift's template travel with the run, so chat renders the
prompt the model learned, not the model's own default system prompt."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from test_sft_recipe import make_cfg, write_rows

from temper.data.records import ChatExample, Message
from temper.data.templates import with_default_system
from temper.data.tokenize import chat_ids
from temper.inference.engine import Engine
from temper.models.load import load_tokenizer, resolve
from temper.recipes.sft import train_sft

SYSTEM = 'You are Ember, made by "the temper team".\nAnswer briefly.'
USER = [{"role": "user", "content": "Who are you?"}]


def _prompt(tok: Any, messages: list[dict[str, str]]) -> str:
    return str(tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))


def test_default_system_fills_only_conversations_without_one(smollm2_dir: Path) -> None:
    own, tok = load_tokenizer(str(smollm2_dir)), load_tokenizer(str(smollm2_dir))
    assert "You are a helpful AI assistant named SmolLM" in _prompt(own, USER)  # the model's own default
    tok.chat_template = with_default_system(own.chat_template, SYSTEM)
    assert _prompt(tok, USER) == _prompt(own, [{"role": "system", "content": SYSTEM}, *USER])
    assert SYSTEM in _prompt(tok, USER) and "SmolLM" not in _prompt(tok, USER)
    given = [{"role": "system", "content": "Be terse."}, *USER]
    assert _prompt(tok, given) == _prompt(own, given)  # a system turn of its own is kept
    # Set again (a run trained on a run), the new prompt replaces the old one instead of stacking.
    tok.chat_template = with_default_system(tok.chat_template, "你是小黄。")
    assert _prompt(tok, USER) == _prompt(own, [{"role": "system", "content": "你是小黄。"}, *USER])
    assert SYSTEM not in tok.chat_template and tok.chat_template.count("default system prompt") == 2


def test_chat_renders_the_prompt_sft_trained_on(
    tiny_llama_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_rows(tmp_path / "rows.jsonl", n=8)
    train_sft(make_cfg(tiny_llama_dir, data, tmp_path / "run", "--max-steps", "1", "--system", SYSTEM))
    base = load_tokenizer(str(tiny_llama_dir))
    row = ChatExample([Message("user", USER[0]["content"]), Message("assistant", "I am Ember.")])
    ids, labels = chat_ids(base, row, SYSTEM)  # what training encoded
    trained_prompt = ids[: next(i for i, x in enumerate(labels) if x != -100)]
    with Engine.load(tmp_path / "run", dtype="fp32") as engine:
        assert engine.chat_prompt(USER) == trained_prompt
    assert engine.chat_prompt(USER) != base(_prompt(base, USER), add_special_tokens=False)["input_ids"]
    # A run on that run, given no --system, keeps the prompt and says so.
    capsys.readouterr()
    train_sft(make_cfg(tmp_path / "run", data, tmp_path / "run2", "--max-steps", "1"))
    assert (
        f"default system prompt {SYSTEM!r}, from {tmp_path / 'run'}'s chat template"
        in capsys.readouterr().err
    )
    with Engine.load(tmp_path / "run2", dtype="fp32") as engine:
        assert engine.chat_prompt(USER) == trained_prompt


@pytest.fixture(scope="module")
def swift_checkpoint(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA checkpoint as ms-swift saves it: peft's files and args.json, no tokenizer."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    out = tmp_path_factory.mktemp("swift") / "checkpoint-4"
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32)
    get_peft_model(model, LoraConfig(r=4, target_modules="all-linear")).save_pretrained(out)
    return out


@pytest.mark.parametrize("system", [None, SYSTEM])
def test_an_ms_swift_checkpoint_chats_with_its_template_and_system(
    swift_checkpoint: Path, smollm2_dir: Path, system: str | None
) -> None:
    args = {"template": "chatml", "system": system, "template_backend": "swift", "model_type": "llama"}
    (swift_checkpoint / "args.json").write_text(json.dumps(args))
    tok = load_tokenizer(resolve(swift_checkpoint))
    head = f"<|im_start|>system\n{system}<|im_end|>\n" if system else ""  # ms-swift's chatml: no default
    assert _prompt(tok, USER) == head + "<|im_start|>user\nWho are you?<|im_end|>\n<|im_start|>assistant\n"
    # A name temper shares with ms-swift for another format (ms-swift's default is `### Human:`) keeps the
    # model's own template, with the checkpoint's system prompt.
    (swift_checkpoint / "args.json").write_text(json.dumps({**args, "template": "default"}))
    own_with_system = load_tokenizer(str(smollm2_dir))
    if system:
        own_with_system.chat_template = with_default_system(own_with_system.chat_template, system)
    assert _prompt(load_tokenizer(resolve(swift_checkpoint)), USER) == _prompt(own_with_system, USER)
    (swift_checkpoint / "args.json").unlink()  # without it: the base model's own template and default
    assert _prompt(load_tokenizer(resolve(swift_checkpoint)), USER) == _prompt(
        load_tokenizer(str(smollm2_dir)), USER
    )


def test_llamafactory_default_system_in_chat_and_export_yamls(
    tiny_llama_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from temper.cli import main
    from temper.models.config_file import read_inference_config

    base = load_tokenizer(str(tiny_llama_dir))
    want = base(_prompt(base, [{"role": "system", "content": SYSTEM}, *USER]), add_special_tokens=False)
    chat_yaml = tmp_path / "chat.yaml"
    chat_yaml.write_text(json.dumps({"model_name_or_path": str(tiny_llama_dir), "default_system": SYSTEM}))
    config = read_inference_config(chat_yaml)
    with Engine.load(config.ref, dtype="fp32", template=config.template, system=config.system) as engine:
        assert engine.chat_prompt(USER) == want["input_ids"]
    assert main(["chat", str(chat_yaml), "--query", "Who are you?", "--max-tokens", "2"]) == 0

    # LLaMA-Factory's export keeps default_system in the template it saves; so does temper's, and the Modelfile.
    out = tmp_path / "gguf"
    export_yaml = tmp_path / "export.yaml"
    export_yaml.write_text(json.dumps({"model_name_or_path": str(tiny_llama_dir), "default_system": SYSTEM}))
    assert main(["export", str(export_yaml), "--gguf", "f16", "--output-dir", str(out)]) == 0, (
        capsys.readouterr()
    )
    assert f'SYSTEM """{SYSTEM}"""' in (out / "Modelfile").read_text()
    exported = load_tokenizer(resolve(out))
    assert _prompt(exported, USER) == _prompt(base, [{"role": "system", "content": SYSTEM}, *USER])


def test_a_reward_model_on_a_run_says_it_inherits_the_default_system(
    tiny_llama_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from temper.config.preference import PreferenceConfig
    from temper.recipes.rm import load_reward_backbone

    data = write_rows(tmp_path / "rows.jsonl", n=8)
    train_sft(make_cfg(tiny_llama_dir, data, tmp_path / "run", "--max-steps", "1", "--system", SYSTEM))
    capsys.readouterr()
    argv = ["--model", str(tmp_path / "run"), "--dataset", str(data), "--output-dir", str(tmp_path / "rm")]
    _, tok, _, _ = load_reward_backbone(PreferenceConfig.for_verb("rm", None, argv))
    assert (
        f"default system prompt {SYSTEM!r}, from {tmp_path / 'run'}'s chat template"
        in capsys.readouterr().err
    )
    assert _prompt(tok, USER) == _prompt(load_tokenizer(resolve(tmp_path / "run")), USER)

"""Training on top of what came before: a temper run dir, a peer's LoRA adapter dir (LLaMA-Factory and ms-swift
save peft's layout) or a hub id in the local Hugging Face cache. Whatever the starting model learned must still
be there when the new run dir is loaded."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_sft_recipe import make_cfg, write_rows

from temper.cli import main
from temper.errors import ModelNotFoundError
from temper.models.load import load_causal_lm, resolve
from temper.recipes.sft import train_sft
from temper.runs import read_manifest, read_metrics


def _loss(model_name: str | Path, data: Path) -> float:
    """Mean loss of a loaded model (run dir, adapter dir, ...) on the answers of the first rows."""
    model, tok = load_causal_lm(str(model_name), dtype="fp32")
    losses = []
    for line in data.read_text().splitlines()[:4]:
        messages = json.loads(line)["messages"]
        prompt = tok.apply_chat_template(messages[:1], add_generation_prompt=True, tokenize=False)
        ids = tok(tok.apply_chat_template(messages, tokenize=False), return_tensors="pt")["input_ids"]
        labels = ids.clone()
        labels[:, : len(tok(prompt)["input_ids"])] = -100
        with torch.no_grad():
            losses.append(float(model(input_ids=ids, labels=labels).loss))
    return sum(losses) / len(losses)


@pytest.fixture(scope="module")
def lora_run(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    work = tmp_path_factory.mktemp("lora-run")
    data = write_rows(work / "rows.jsonl")
    train_sft(
        make_cfg(tiny_llama_dir, data, work / "a", "--max-steps", "10", "--lora-rank", "4", "--lr", "3e-2")
    )
    return work / "a", data


def test_lora_on_a_lora_run_keeps_training_that_adapter(
    lora_run: tuple[Path, Path], tiny_llama_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_a, data = lora_run
    out = tmp_path / "b"
    train_sft(make_cfg(run_a, data, out, "--max-steps", "4", "--lora-rank", "8"))
    said = capsys.readouterr().err
    assert f"continuing the LoRA adapter of {run_a}" in said and "lora_rank 8 (the adapter's: 4)" in said
    assert "lora_alpha" not in said  # not given: it follows the rank (listed as 16 vs 8 before)
    # The same adapter, trained further: run A's rank and tensors, now changed, over run A's base.
    a, b = load_file(run_a / "adapter_model.safetensors"), load_file(out / "adapter_model.safetensors")
    assert set(a) == set(b) and all(a[k].shape == b[k].shape for k in a)
    assert any(not torch.equal(a[k], b[k]) for k in a)
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 4
    assert read_manifest(out)["base_model"] == str(tiny_llama_dir.resolve())
    # Loaded back, run B knows at least what run A knew (stacking a fresh adapter lost run A's: the loss went
    # back up to the base model's).
    base, after_a, after_b = _loss(tiny_llama_dir, data), _loss(run_a, data), _loss(out, data)
    assert after_a < base - 0.3, (base, after_a)
    assert after_b < after_a + 0.05, (after_a, after_b)


def test_full_tuning_on_a_lora_run_starts_from_the_merged_adapter(
    lora_run: tuple[Path, Path], tmp_path: Path
) -> None:
    run_a, data = lora_run
    out = tmp_path / "full"
    train_sft(make_cfg(run_a, data, out, "--tuning", "full", "--max-steps", "1", "--lr", "1e-9"))
    assert read_manifest(out)["weights"] == "full" and (out / "model.safetensors").exists()
    assert abs(_loss(out, data) - _loss(run_a, data)) < 1e-3


def test_lora_on_a_full_run_applies_to_that_run(tiny_llama_dir: Path, tmp_path: Path) -> None:
    data = write_rows(tmp_path / "rows.jsonl")
    full = tmp_path / "full"
    train_sft(make_cfg(tiny_llama_dir, data, full, "--tuning", "full", "--max-steps", "6"))
    out = tmp_path / "lora"
    train_sft(make_cfg(full, data, out, "--max-steps", "1", "--lr", "1e-9"))
    assert read_manifest(out)["base_model"] == str(full.resolve())
    assert resolve(str(out)).path == full.resolve()
    assert (
        abs(_loss(out, data) - _loss(full, data))
        < 1e-3
        < abs(_loss(tiny_llama_dir, data) - _loss(full, data))
    )


def _peer_adapter(tiny_llama_dir: Path, out: Path) -> Path:
    """A LoRA adapter dir as LLaMA-Factory or ms-swift write it: peft's save_pretrained plus the tokenizer, and
    no temper manifest."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    torch.manual_seed(1)  # before peft draws lora_A: the adapter is the same whichever tests ran before
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # peft starts B at zero: a non-zero B makes the adapter change the answers
    peft_model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_llama_dir).save_pretrained(out)
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == str(tiny_llama_dir)
    return out


def _answer(model: Path | str, capsys: pytest.CaptureFixture[str], *flags: str) -> str:
    capsys.readouterr()
    assert main(["chat", str(model), "--query", "Who are you?", "--max-tokens", "8", *flags]) == 0
    return capsys.readouterr().out


def test_a_peer_adapter_dir_is_a_model(
    tiny_llama_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    adapter = _peer_adapter(tiny_llama_dir, tmp_path / "saves" / "lora" / "sft")
    ref = resolve(str(adapter))
    assert ref.kind == "adapter" and ref.path == tiny_llama_dir and ref.adapters == {"sft": adapter}
    # `temper chat ADAPTER_DIR` answers as base + adapter: the same tokens as the adapter merged by peft
    # itself, and as `temper export ADAPTER_DIR --merge`.
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    by_hand = tmp_path / "merged-by-peft"
    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    PeftModel.from_pretrained(base, adapter).merge_and_unload().save_pretrained(by_hand)
    AutoTokenizer.from_pretrained(adapter).save_pretrained(by_hand)
    assert main(["export", str(adapter), "--merge", "--output-dir", str(tmp_path / "exported")]) == 0
    answer = _answer(adapter, capsys)
    assert answer == _answer(by_hand, capsys) == _answer(tmp_path / "exported", capsys)
    assert answer != _answer(tiny_llama_dir, capsys)
    # ... and `temper sft --model ADAPTER_DIR` keeps training it.
    data = write_rows(tmp_path / "rows.jsonl")
    train_sft(make_cfg(adapter, data, tmp_path / "run", "--max-steps", "2"))
    assert json.loads((tmp_path / "run" / "adapter_config.json").read_text())["target_modules"] in (
        ["q_proj", "v_proj"],
        ["v_proj", "q_proj"],
    )
    assert len([r for r in read_metrics(tmp_path / "run") if "loss" in r]) == 2


def test_an_adapter_whose_base_is_missing_names_it(tiny_llama_dir: Path, tmp_path: Path) -> None:
    adapter = _peer_adapter(tiny_llama_dir, tmp_path / "adapter")
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = str(tmp_path / "gone")
    (adapter / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelNotFoundError) as err:
        resolve(str(adapter))
    text = str(err.value)
    assert f"is a LoRA adapter for base model '{tmp_path / 'gone'}'" in text
    assert (
        "base_model_name_or_path" in err.value.hint and str(adapter / "adapter_config.json") in err.value.hint
    )
    # Pickle weights are never loaded from a user path, here either.
    (adapter / "adapter_model.safetensors").rename(adapter / "adapter_model.bin")
    cfg["base_model_name_or_path"] = str(tiny_llama_dir)
    (adapter / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(Exception, match="pickle"):
        load_causal_lm(str(adapter))


def test_a_hub_id_loads_from_the_local_cache_only(tiny_llama_dir: Path, tmp_path: Path) -> None:
    # The cache layout huggingface_hub writes: models--ORG--NAME/{refs/main, snapshots/COMMIT/...}.
    repo = tmp_path / "hub" / "models--temper-tests--tiny-llama"
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(tiny_llama_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    data = write_rows(tmp_path / "rows.jsonl", n=8)
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub")}
    cmd = [
        sys.executable, "-m", "temper", "sft", "--model", "temper-tests/tiny-llama", "--dataset", str(data),
        "--output-dir", str(tmp_path / "run"), "--max-length", "64", "--bf16", "false", "--max-steps", "1",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # The run records the hub id, as it records an alias: the run dir works on any machine with that cache.
    assert read_manifest(tmp_path / "run")["base_model"] == "temper-tests/tiny-llama"
    with pytest.raises(ModelNotFoundError) as err:  # this process's cache is the default one: not there
        resolve("temper-tests/tiny-llama")
    assert "Hugging Face cache" in str(err.value) and "models--temper-tests--tiny-llama" in str(err.value)


def test_a_llamafactory_config_continues_its_adapter_over_model_name_or_path(
    tiny_llama_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # An adapter trained on another machine: its own config names a base that is not here. LLaMA-Factory takes
    # the base from model_name_or_path, and so does temper when the config names both.
    adapter = _peer_adapter(tiny_llama_dir, tmp_path / "saves" / "sft")
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(
        json.dumps({**cfg, "base_model_name_or_path": "/data/llama"})
    )
    data = write_rows(tmp_path / "rows.jsonl")
    out = tmp_path / "run"
    yaml = tmp_path / "lf.yaml"
    yaml.write_text(
        f"model_name_or_path: {tiny_llama_dir}\nadapter_name_or_path: {adapter}\nstage: sft\n"
        f"finetuning_type: lora\ndataset: {data}\noutput_dir: {out}\ncutoff_len: 64\nmax_steps: 2\n"
        "bf16: false\nper_device_train_batch_size: 4\n"
    )
    assert main(["sft", str(yaml)]) == 0
    assert f"continuing the LoRA adapter of {adapter}" in capsys.readouterr().err
    assert read_manifest(out)["base_model"] == str(tiny_llama_dir.resolve())
    before, after = (
        load_file(adapter / "adapter_model.safetensors"),
        load_file(out / "adapter_model.safetensors"),
    )
    assert set(before) == set(after) and any(not torch.equal(before[k], after[k]) for k in before)
    _answer(out, capsys)  # the run dir loads on its own: its base is the model the config named
    # Several adapters (LLaMA-Factory's comma-separated list) are not stacked: one is continued, or merge first.
    yaml.write_text(yaml.read_text().replace(str(adapter), f"{adapter},{adapter}"))
    assert main(["sft", str(yaml), "--output-dir", str(tmp_path / "two")]) != 0
    assert "temper starts from one adapter" in capsys.readouterr().err


def test_a_llamafactory_inference_config_is_the_model_of_chat_and_serve(
    tiny_llama_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    from temper.data.templates import PEER_DEFAULT_SYSTEMS

    adapter = _peer_adapter(tiny_llama_dir, tmp_path / "saves" / "sft")
    # LLaMA-Factory's smollm2 template is this model's format with its own default system prompt.
    expected = _answer(adapter, capsys, "--system", PEER_DEFAULT_SYSTEMS["smollm2"])
    # As `llamafactory-cli chat` reads it: the base from model_name_or_path (the adapter's own config names a
    # path that is not here), the adapter over it, LLaMA-Factory's template name for this model's format.
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(
        json.dumps({**cfg, "base_model_name_or_path": "/data/llama"})
    )
    infer = tmp_path / "llama_lora_sft.yaml"
    infer.write_text(
        f"model_name_or_path: {tiny_llama_dir}\nadapter_name_or_path: {adapter}\ntemplate: smollm2\n"
        "infer_backend: huggingface\ntrust_remote_code: true\n"
    )
    capsys.readouterr()
    assert main(["chat", str(infer), "--query", "Who are you?", "--max-tokens", "8"]) == 0
    out = capsys.readouterr()
    assert out.out == expected
    assert "ignored: infer_backend" in out.err and "ignored: trust_remote_code" in out.err
    assert "template smollm2: this model's own chat template is that format" in caplog.text  # a log line
    # Its generation keys (LLaMA-Factory's generating_args) are the sampling where no flag is given.
    plain = infer.read_text()
    infer.write_text(plain + "do_sample: false\nmax_new_tokens: 3\ntop_p: 0.5\n")
    assert main(["chat", str(infer), "--query", "Who are you?"]) == 0
    three = capsys.readouterr().out
    assert main(["chat", str(infer), "--query", "Who are you?", "--max_new_tokens", "8"]) == 0
    assert capsys.readouterr().out == expected != three  # the flag over the file's max_new_tokens
    assert expected.startswith(three.rstrip("\n"))
    # A key that would change the answers and is not read here is refused, not dropped.
    infer.write_text(plain + "num_beams: 4\n")
    assert main(["chat", str(infer), "--query", "hi"]) != 0
    assert "unknown key 'num_beams'" in capsys.readouterr().err
    # export reads the same file (tests/export/test_peer_export_config.py), and refuses sampling keys.
    infer.write_text(plain + "temperature: 0.9\n")
    assert main(["export", str(infer), "--merge", "--output-dir", str(tmp_path / "m")]) != 0
    assert "unknown key 'temperature'" in capsys.readouterr().err and not (tmp_path / "m").exists()

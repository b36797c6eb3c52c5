"""LLaMA Pro: `temper export SOURCE --expand-blocks N` inserts pass-through layers, and `--use-llama-pro true`
trains only them (freeze: in full; LoRA: their adapters)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from temper.cli import main
from temper.config import SFTConfig
from temper.errors import ConfigError, TemperError
from temper.export.expand import expand_blocks, expanded_ids
from temper.export.merge import probe_ids
from temper.models.load import load_causal_lm
from temper.recipes.sft import train_sft
from temper.runs import read_metrics

sys.path.insert(0, str(Path(__file__).parents[1] / "recipes"))
from test_sft_recipe import make_cfg, write_rows  # noqa: E402


@pytest.fixture(scope="module")
def expanded(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("expand") / "pro"
    assert main(["export", str(tiny_llama_dir), "--expand-blocks", "2", "--output-dir", str(out)]) == 0
    return out


def test_expanded_model_computes_what_the_source_computed(tiny_llama_dir: Path, expanded: Path) -> None:
    manifest = json.loads((expanded / "temper_export.json").read_text())
    assert manifest["method"] == "expand" and manifest["max_abs_logit_diff"] == 0.0
    assert manifest["expanded_layers"] == [1, 3] == expanded_ids(2, 2)
    assert json.loads((expanded / "config.json").read_text())["num_hidden_layers"] == 4
    before, after = load_file(tiny_llama_dir / "model.safetensors"), load_file(expanded / "model.safetensors")
    for name, value in after.items():  # layers 0, 2 are the old 0, 1; layers 1, 3 copies of them
        if ".layers." not in name:
            assert torch.equal(value, before[name]), name
            continue
        i = int(name.split(".layers.")[1].split(".")[0])
        source = name.replace(f".layers.{i}.", f".layers.{i // 2}.")
        zeroed = i % 2 == 1 and ("o_proj" in name or "down_proj" in name)
        assert torch.equal(value, torch.zeros_like(value) if zeroed else before[source]), name
    # loaded from disk, as any user loads it: the same logits and the same greedy answer
    old, tok = load_causal_lm(str(tiny_llama_dir), dtype="fp32")
    new, _ = load_causal_lm(str(expanded), dtype="fp32")
    ids = probe_ids(tok)
    with torch.no_grad():
        assert torch.equal(old(input_ids=ids).logits, new(input_ids=ids).logits)
        kw = {"max_new_tokens": 8, "do_sample": False}
        assert torch.equal(old.generate(ids, **kw), new.generate(ids, **kw))  # the KV cache sees 4 layers


def test_expansion_refuses_what_it_cannot_do(tiny_llama_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="has 2 layers.*N must divide the layer count") as err:
        expand_blocks(str(tiny_llama_dir), tmp_path / "x", 3)
    assert err.value.hint == "Use one of 1, 2."
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    gpt2 = (
        tmp_path / "gpt2"
    )  # its blocks end in c_proj: zeroing o_proj/down_proj would not make them pass through
    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=len(tok))).save_pretrained(gpt2)
    tok.save_pretrained(gpt2)
    with pytest.raises(TemperError, match="have 0 of the output projections LLaMA Pro zeroes"):
        expand_blocks(str(gpt2), tmp_path / "y", 2)
    assert not (tmp_path / "y").exists()  # nothing written


def test_llama_pro_trains_only_the_inserted_layers(
    tiny_llama_dir: Path, expanded: Path, tmp_path: Path
) -> None:
    data = write_rows(tmp_path / "rows.jsonl")
    steps = ("--max-steps", "2", "--freeze-trainable-layers", "2", "--use-llama-pro", "true")
    train_sft(make_cfg(expanded, data, tmp_path / "freeze", "--tuning", "freeze", *steps))
    before, after = (
        load_file(expanded / "model.safetensors"),
        load_file(tmp_path / "freeze" / "model.safetensors"),
    )
    moved = {k for k in after if not torch.equal(after[k], before[k])}
    assert {int(k.split(".layers.")[1].split(".")[0]) for k in moved} == {1, 3}
    assert all(".layers." in k for k in moved) and len(moved) == 2 * 9  # every weight of both, nothing else
    # the inserted layers pass their input through, so the first step's loss is the source model's
    train_sft(make_cfg(tiny_llama_dir, data, tmp_path / "source", "--tuning", "freeze", "--max-steps", "1"))
    first = [r["loss"] for r in read_metrics(tmp_path / "freeze") if "loss" in r][0]
    assert first == pytest.approx(
        [r["loss"] for r in read_metrics(tmp_path / "source") if "loss" in r][0], abs=1e-5
    )
    train_sft(make_cfg(expanded, data, tmp_path / "lora", "--tuning", "lora", *steps))
    adapter = load_file(tmp_path / "lora" / "adapter_model.safetensors")
    assert {int(k.split(".layers.")[1].split(".")[0]) for k in adapter} == {1, 3}
    assert {k.split(".")[-3] for k in adapter} == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                   "down_proj"}  # fmt: skip


def test_llama_pro_settings_are_checked(expanded: Path, tmp_path: Path) -> None:
    data = write_rows(tmp_path / "rows.jsonl")
    wrong = make_cfg(expanded, data, tmp_path / "x", "--tuning", "freeze", "--freeze-trainable-layers", "4",
                     "--use-llama-pro", "true", "--max-steps", "1")  # fmt: skip
    with pytest.raises(ConfigError, match=r"this model's expansion inserted \[1, 3\]") as err:
        train_sft(wrong)
    assert err.value.hint == "Pass --freeze-trainable-layers 2."
    with pytest.raises(ConfigError, match="tuning full trains every layer"):
        SFTConfig.from_dict({"finetuning_type": "full", "use_llama_pro": True})
    # LLaMA-Factory's keys, as its llama_pro example writes them
    cfg = SFTConfig.from_dict(
        {"finetuning_type": "freeze", "use_llama_pro": True, "freeze_trainable_layers": 2}
    )
    assert cfg.tune.use_llama_pro and cfg.tune.freeze_trainable_layers == 2


def test_expand_blocks_in_one_run_as_ms_swift_llamapro(tiny_llama_dir: Path, tmp_path: Path) -> None:
    # ms-swift's train_type llamapro: the layers go in as the model loads, only they train, and the run saves
    # the expanded model; a crashed run expands again and resumes the same curve
    from test_sft_optimizers import crash_and_resume

    cfg = SFTConfig.from_sources(None, ["--train_type", "llamapro", "--llamapro_num_new_blocks", "2"])
    assert (cfg.tune.tuning, cfg.tune.expand_blocks) == ("freeze", 2)
    with pytest.raises(ConfigError, match="llamapro_num_groups 1 with llamapro_num_new_blocks 2"):
        SFTConfig.from_dict(
            {"train_type": "llamapro", "llamapro_num_new_blocks": 2, "llamapro_num_groups": 1}
        )
    with pytest.raises(
        ConfigError, match="expand_blocks: 2 inserted layers train in full, with tuning freeze"
    ):
        SFTConfig.from_dict({"tuning": "lora", "expand_blocks": 2})
    data = write_rows(tmp_path / "rows.jsonl")
    common = ("--tuning", "freeze", "--expand-blocks", "2", "--max-steps", "5", "--save-steps", "3")
    want, got = crash_and_resume(tiny_llama_dir, data, tmp_path, common, crash_at=4)
    assert [got[s]["loss"] for s in (4, 5)] == pytest.approx([want[s]["loss"] for s in (4, 5)], abs=1e-4)
    saved = load_file(tmp_path / "straight" / "model.safetensors")
    assert json.loads((tmp_path / "straight" / "config.json").read_text())["num_hidden_layers"] == 4
    before = load_file(tiny_llama_dir / "model.safetensors")
    for name, value in saved.items():  # the source's layers are the source's; the inserted ones trained
        i = int(name.split(".layers.")[1].split(".")[0]) if ".layers." in name else None
        if i is None or i % 2 == 0:
            source = name if i is None else name.replace(f".layers.{i}.", f".layers.{i // 2}.")
            assert torch.equal(value, before[source]), name
    assert not torch.equal(saved["model.layers.1.self_attn.o_proj.weight"], torch.zeros_like(before[
        "model.layers.0.self_attn.o_proj.weight"]))  # fmt: skip
    model, _ = load_causal_lm(str(tmp_path / "straight"), dtype="fp32")  # the run dir loads on its own
    assert model.config.num_hidden_layers == 4

"""Training methods the peers' users switch on by a key (LoRA+, DFT, dataset interleaving, which modules
train): each changes the training as the method says, under LLaMA-Factory's and ms-swift's key names."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from test_sft_recipe import make_cfg, write_rows
from transformers import TrainerCallback

from temper.cli import main
from temper.config import SFTConfig
from temper.errors import ConfigError
from temper.recipes.sft import train_sft
from temper.runs import read_metrics


def _max_abs(run: Path, part: str) -> float:
    weights = load_file(run / "adapter_model.safetensors")
    return max(float(v.abs().max()) for k, v in weights.items() if part in k)


def test_loraplus_trains_the_b_matrices_at_ratio_times_the_learning_rate(
    tiny_llama_dir: Path, tmp_path: Path
) -> None:
    data = write_rows(tmp_path / "rows.jsonl")
    step = ("--max-steps", "1", "--lr", "1e-3", "--optim", "adamw_torch")
    train_sft(make_cfg(tiny_llama_dir, data, tmp_path / "plain", *step))
    train_sft(make_cfg(tiny_llama_dir, data, tmp_path / "plus", *step, "--loraplus-lr-ratio", "16"))
    # B starts at zero, so the first step leaves A where it was, and Adam's first step moves each entry of B
    # by the learning rate (times the sign of its gradient): B's largest entry is the lr B trained at.
    assert _max_abs(tmp_path / "plain", "lora_B") == pytest.approx(1e-3, rel=0.01)
    assert _max_abs(tmp_path / "plus", "lora_B") == pytest.approx(16e-3, rel=0.01)
    # ms-swift's name for the same key
    swift = SFTConfig.from_sources(None, ["--lorap_lr_ratio", "4"])
    assert swift.tune.loraplus_lr_ratio == 4


def test_loraplus_without_lora_is_refused() -> None:
    with pytest.raises(ConfigError, match="loraplus_lr_ratio.*tuning is full"):
        SFTConfig.from_sources(None, ["--tuning", "full", "--loraplus-lr-ratio", "16"])


def test_dft_loss_and_interleaved_datasets_from_the_command_line(
    tiny_llama_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = write_rows(tmp_path / "a.jsonl", n=12)
    second = write_rows(tmp_path / "b.jsonl", n=6)
    out = tmp_path / "dft"
    code = main([
        "sft", "--model", str(tiny_llama_dir), "--dataset", str(first), str(second), "--output-dir", str(out),
        "--max-length", "64", "--bf16", "false", "--max-steps", "3", "--batch-size", "4",
        "--enable_dft_loss", "true", "--interleave_prob", "0.5", "0.5",
    ])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().err
    assert "2 datasets interleaved (interleave_under, drawn with probabilities 0.5, 0.5)" in printed
    steps = [r for r in read_metrics(out) if "loss" in r]
    # DFT weights each token's CE by its probability (< 1), so the trained loss is below the plain CE it logs
    assert steps and all(0 < r["loss"] < r["ce_loss"] for r in steps)
    assert SFTConfig.from_sources(None, ["--use_dft_loss", "true"]).train.use_dft_loss


def test_freeze_trains_the_named_parts_of_the_first_layers_and_extra_modules(
    tiny_llama_dir: Path, tmp_path: Path
) -> None:
    data = write_rows(tmp_path / "rows.jsonl")
    out = tmp_path / "freeze"
    train_sft(make_cfg(
        tiny_llama_dir, data, out, "--tuning", "freeze", "--max-steps", "2", "--freeze-trainable-layers", "-1",
        "--freeze_trainable_modules", "mlp", "--freeze_extra_modules", "norm",
    ))  # fmt: skip
    before, after = load_file(tiny_llama_dir / "model.safetensors"), load_file(out / "model.safetensors")
    changed = sorted(k for k in before if not torch.equal(before[k], after[k]))
    assert changed == sorted(
        ["model.norm.weight"] + [f"model.layers.0.mlp.{p}_proj.weight" for p in ("down", "gate", "up")]
    )
    with pytest.raises(ConfigError, match=r"freeze_trainable_modules: \['attn'\] not found.*\n.*self_attn"):
        train_sft(make_cfg(tiny_llama_dir, data, tmp_path / "bad", "--tuning", "freeze",
                           "--freeze-trainable-modules", "attn"))  # fmt: skip


def test_lora_with_a_fully_trained_embedding_keeps_it_tied_to_the_head(
    tiny_llama_dir: Path, tmp_path: Path
) -> None:
    from temper.models.load import load_causal_lm, resolve

    data = write_rows(tmp_path / "rows.jsonl")
    out = tmp_path / "embed"
    train_sft(make_cfg(tiny_llama_dir, data, out, "--max-steps", "2", "--modules_to_save", "embed_tokens"))
    saved = load_file(out / "adapter_model.safetensors")
    base = load_file(tiny_llama_dir / "model.safetensors")["model.embed_tokens.weight"]
    trained = saved["base_model.model.model.embed_tokens.weight"]
    assert not torch.equal(trained, base)
    # the model has tied embeddings: the head trained with them and reads the same matrix after loading
    assert torch.equal(saved["base_model.model.lm_head.weight"], trained)
    model, _ = load_causal_lm(resolve(str(out)), dtype="fp32")
    assert torch.equal(model.get_input_embeddings().weight, trained)
    assert torch.equal(model.get_output_embeddings().weight, trained)
    with pytest.raises(ConfigError, match=r"additional_target: \['embeddings'\] not found"):
        train_sft(make_cfg(tiny_llama_dir, data, tmp_path / "bad", "--additional-target", "embeddings"))


class LogitsAtEnd(TrainerCallback):
    """The trained model's logits on fixed ids, and whether LoRA's B started non-zero (PiSSA) or at zero."""

    def __init__(self) -> None:
        self.b_at_start = 0.0
        self.logits: torch.Tensor | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
        self.b_at_start = max(
            float(p.detach().abs().max()) for n, p in model.named_parameters() if "lora_B" in n
        )

    def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
        with torch.no_grad():
            self.logits = model(input_ids=torch.tensor([[1, 5, 9, 13, 17]])).logits.clone()


def test_pissa_trains_from_the_principal_components_and_saves_a_plain_lora(
    tiny_llama_dir: Path, tmp_path: Path
) -> None:
    from temper.models.load import load_causal_lm

    data = write_rows(tmp_path / "rows.jsonl")
    out = tmp_path / "pissa"
    seen = LogitsAtEnd()
    train_sft(
        make_cfg(tiny_llama_dir, data, out, "--max-steps", "4", "--pissa-init", "--pissa-iter", "-1"), [seen]
    )
    assert seen.b_at_start > 0.01  # PiSSA: B holds the singular vectors from the start (plain LoRA: zeros)
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == 2 * 8 and config["init_lora_weights"] is True
    assert not (out / "pissa_init").exists()
    # The converted adapter over the original base computes what the trained PiSSA model computed.
    model, _ = load_causal_lm(str(out), dtype="fp32")
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([[1, 5, 9, 13, 17]])).logits
    assert seen.logits is not None and torch.allclose(logits, seen.logits, atol=1e-4)
    base, _ = load_causal_lm(str(tiny_llama_dir), dtype="fp32")
    with torch.no_grad():
        assert not torch.allclose(base(input_ids=torch.tensor([[1, 5, 9, 13, 17]])).logits, logits, atol=1e-3)
    with pytest.raises(ConfigError, match="pissa_init: PiSSA initialises plain LoRA"):
        SFTConfig.from_sources(None, ["--pissa-init", "--use-dora"])


def test_a_crashed_pissa_run_resumes_to_the_same_adapter(tiny_llama_dir: Path, tmp_path: Path) -> None:
    from test_sft_recipe import CrashAt

    data = write_rows(tmp_path / "rows.jsonl")
    common = ("--max-steps", "6", "--save-steps", "3", "--pissa-init", "--pissa-iter", "4")
    train_sft(make_cfg(tiny_llama_dir, data, tmp_path / "straight", *common))
    crashed = tmp_path / "crashed"
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_sft(make_cfg(tiny_llama_dir, data, crashed, *common), callbacks=[CrashAt(4)])
    assert (crashed / "pissa_init" / "adapter_model.safetensors").exists()  # the start waits for the end
    train_sft(make_cfg(tiny_llama_dir, data, crashed, *common, "--resume", "auto"))
    want = load_file(tmp_path / "straight" / "adapter_model.safetensors")
    got = load_file(crashed / "adapter_model.safetensors")
    assert want.keys() == got.keys()
    assert all(torch.allclose(want[k], got[k], atol=1e-5) for k in want)


def test_compute_accuracy_reports_the_share_of_label_tokens_predicted(
    tiny_llama_dir: Path, tmp_path: Path
) -> None:
    data = write_rows(tmp_path / "rows.jsonl", n=40)
    out = tmp_path / "acc"
    train_sft(make_cfg(tiny_llama_dir, data, out, "--max-steps", "30", "--val-size", "8", "--eval-steps", "15",
                       "--compute_accuracy", "true"))  # fmt: skip
    evals = [r["eval_accuracy"] for r in read_metrics(out) if "eval_accuracy" in r]
    # a random model predicts almost none of its label tokens; after training on these rows it predicts most
    assert len(evals) >= 2 and 0 <= evals[0] < evals[-1] <= 1 and evals[-1] > 0.5, evals
    assert not any("accuracy" in r for r in read_metrics(out) if "loss" in r)  # evaluation only

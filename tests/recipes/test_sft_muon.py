"""Muon (`--optim muon`, LLaMA-Factory's `use_muon`, ms-swift's `--optimizer muon`): torch's Muon over the 2-D
weights of the transformer blocks, AdamW over the embedding, head and norms, as one optimizer for the Trainer."""

from __future__ import annotations

import math
import types
from pathlib import Path
from typing import Any

import pytest
import torch
from test_sft_optimizers import _deltas, _Optimizer, crash_and_resume
from test_sft_recipe import make_cfg, write_rows

from temper.config import SFTConfig
from temper.config.sections import SFTTrainCfg
from temper.errors import ConfigError
from temper.recipes.sft import train_sft
from temper.runs import read_metrics
from temper.training import optimizers
from temper.training.preflight import check_trainer_names

pytest.importorskip("torch.optim", reason="torch.optim.Muon")
if not hasattr(torch.optim, "Muon"):
    pytest.skip("torch.optim.Muon needs PyTorch 2.9+", allow_module_level=True)

LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LR = 3e-3  # make_cfg's, with a constant schedule


def test_muon_steps_block_matrices_by_an_orthogonalised_update(tiny_llama_dir: Path, tmp_path: Path) -> None:
    data = write_rows(tmp_path / "rows.jsonl")
    grab = _Optimizer()
    steps = ("--tuning", "full", "--max-steps", "1")
    train_sft(make_cfg(tiny_llama_dir, data, tmp_path / "muon", *steps, "--optim", "muon"), callbacks=[grab])
    train_sft(make_cfg(tiny_llama_dir, data, tmp_path / "adamw", *steps, "--optim", "adamw_torch"))
    opt = getattr(grab.optimizer, "optimizer", grab.optimizer)
    assert isinstance(opt, optimizers.MuonAdamW) and set(opt.parts) == {"muon", "adamw"}
    muon, adamw = _deltas(tmp_path / "muon", tiny_llama_dir), _deltas(tmp_path / "adamw", tiny_llama_dir)
    blocks = [k for k in muon if any(n in k for n in LINEARS)]
    assert len(blocks) == 2 * len(LINEARS)
    for name in blocks:
        # Muon's step is the momentum orthogonalised (singular values near one), times the learning rate scaled
        # by 0.2 * sqrt(max(rows, cols)) (Moonlight's, so that its RMS matches AdamW's)
        scale = LR * 0.2 * math.sqrt(max(muon[name].shape))
        assert 0.6 < float(torch.linalg.matrix_norm(muon[name], ord=2)) / scale < 1.3, name
        # AdamW's first step (the gradient's signs) has a spectral norm many times that
        assert float(torch.linalg.matrix_norm(adamw[name], ord=2)) / scale > 5, name
    # the embedding (tied to the head) is AdamW's: its first step moves each trained weight by the learning rate
    assert float(muon["model.embed_tokens.weight"].abs().max()) == pytest.approx(LR, rel=1e-3)


def test_a_crashed_muon_run_resumes_the_same_curve(tiny_llama_dir: Path, tmp_path: Path) -> None:
    # the checkpoint holds both optimizers' states (Muon's momentum, AdamW's moments); the resumed run loads both
    data = write_rows(tmp_path / "rows.jsonl")
    common = ("--tuning", "full", "--max-steps", "5", "--save-steps", "3", "--optim", "muon",
              "--lr-scheduler-type", "linear")  # fmt: skip
    want, got = crash_and_resume(tiny_llama_dir, data, tmp_path, common, crash_at=4)
    for step in (4, 5):  # the same losses, and the scheduler's rate reaches both optimizers again
        assert got[step]["loss"] == pytest.approx(want[step]["loss"], abs=1e-4)
        assert got[step]["learning_rate"] == pytest.approx(want[step]["learning_rate"])
    losses = [want[s]["loss"] for s in sorted(want)]
    assert losses[-1] < losses[0]


def test_muon_trains_lora_adapters(tiny_llama_dir: Path, tmp_path: Path) -> None:
    # LLaMA-Factory allows the pair: LoRA's A and B are matrices, which Muon steps
    data = write_rows(tmp_path / "rows.jsonl")
    grab = _Optimizer()
    cfg = make_cfg(tiny_llama_dir, data, tmp_path / "lora", "--max-steps", "6", "--optim", "muon")
    train_sft(cfg, callbacks=[grab])
    opt = getattr(grab.optimizer, "optimizer", grab.optimizer)
    assert set(opt.parts) == {"muon"}  # LoRA trains matrices only
    losses = [r["loss"] for r in read_metrics(tmp_path / "lora") if "loss" in r]
    assert losses[-1] < losses[0]


def test_peer_keys_become_optim_muon() -> None:
    cfg = SFTConfig.from_dict({"finetuning_type": "full", "use_muon": True, "optim": "adamw_torch"})
    assert cfg.train.optim == "muon" and "use_muon -> optim muon" in cfg.notes
    argv = ["--train_type", "full", "--optimizer", "muon", "--optim_args", "momentum=0.9,ns_steps=6"]
    swift = SFTConfig.from_sources(None, argv)
    assert swift.train.optim == "muon" and swift.train.trainer_args == {
        "optim_args": "momentum=0.9,ns_steps=6"
    }
    assert optimizers.optim_settings("muon", swift.train.trainer_args["optim_args"]) == {
        "momentum": 0.9, "nesterov": True, "ns_steps": 6,
    }  # fmt: skip
    assert SFTConfig.from_sources(None, ["--optimizer", "default"]).train.optim == "adamw_torch_fused"


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"use_muon": True, "use_adam_mini": True}, "use_adam_mini and use_muon: one optimizer at a time"),
        ({"use_muon": "maybe"}, "expected true or false"),
        ({"optimizer": "muonclip"}, "MuonClip"),
        ({"optimizer": "galore"}, "use_galore, which is not on"),
        ({"optimizer": "lorap"}, "lorap_lr_ratio is not given"),
    ],
)
def test_muon_keys_that_cannot_be_honoured_are_refused(values: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        SFTConfig.from_dict(values)


def test_muon_is_checked_before_anything_loads_and_refused_when_sharded() -> None:
    with pytest.raises(
        ConfigError, match="optim muon takes momentum=..., nesterov=..., ns_steps=...; got 'rank=4'"
    ):
        check_trainer_names(SFTTrainCfg(optim="muon", trainer_args={"optim_args": "rank=4"}), "full")
    with pytest.raises(ConfigError, match="muon.s ns_steps must be int, got 'five'"):
        check_trainer_names(SFTTrainCfg(optim="muon", trainer_args={"optim_args": "ns_steps=five"}), "full")
    with pytest.raises(ConfigError, match="muon's nesterov must be bool, got 'maybe'"):
        check_trainer_names(SFTTrainCfg(optim="muon", trainer_args={"optim_args": "nesterov=maybe"}), "full")
    check_trainer_names(SFTTrainCfg(optim="muon"), "lora")
    args: Any = types.SimpleNamespace(
        learning_rate=1e-3,
        world_size=1,
        weight_decay=0.0,
        adam_beta1=0.9,
        adam_beta2=0.999,
        adam_epsilon=1e-8,
        optim_args=None,
    )
    model = torch.nn.Linear(4, 4)
    with pytest.raises(ConfigError, match="Muon orthogonalises each weight matrix whole"):
        optimizers.build("muon", model, args, "fsdp", set())
    assert isinstance(optimizers.build("muon", model, args, None, set()), optimizers.MuonAdamW)

"""GaLore, APOLLO and Adam-mini: the Trainer's optimizers of the first two names (galore-torch, apollo-torch) and
temper's Adam-mini (adam-mini) under `--optim galore_adamw|apollo_adamw|adam_mini` and under the peers'
`use_galore` / `use_apollo` / `use_adam_mini` keys; what they need is checked before anything loads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from test_sft_recipe import CrashAt, make_cfg, write_rows
from transformers import TrainerCallback

from temper.config import SFTConfig
from temper.config.optim_keys import ALL_BUT_HEAD
from temper.config.sections import SFTTrainCfg
from temper.errors import ConfigError
from temper.recipes.sft import train_sft
from temper.runs import read_metrics
from temper.training.checkpoint import resume_changes
from temper.training.preflight import check_trainer_names

pytest.importorskip("galore_torch")
pytest.importorskip("apollo_torch")
pytest.importorskip("adam_mini")

LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _deltas(run: Path, base: Path) -> dict[str, torch.Tensor]:
    before, after = load_file(base / "model.safetensors"), load_file(run / "model.safetensors")
    return {k: (after[k] - before[k]).float() for k in after if k in before and after[k].dim() == 2}


def test_galore_updates_the_target_layers_in_rank_r_and_the_rest_in_full(
    tiny_llama_dir: Path, tmp_path: Path
) -> None:
    data = write_rows(tmp_path / "rows.jsonl")
    steps = ("--tuning", "full", "--max-steps", "2", "--lr", "1e-3")
    galore = (
        "--optim",
        "galore_adamw",
        "--optim_target_modules",
        ALL_BUT_HEAD,
        "--optim_args",
        "rank=4,scale=1.0",
    )
    train_sft(make_cfg(tiny_llama_dir, data, tmp_path / "galore", *steps, *galore))
    train_sft(make_cfg(tiny_llama_dir, data, tmp_path / "adamw", *steps, "--optim", "adamw_torch"))
    galore_deltas = _deltas(tmp_path / "galore", tiny_llama_dir)
    adamw_deltas = _deltas(tmp_path / "adamw", tiny_llama_dir)
    targets = [k for k in galore_deltas if any(n in k for n in LINEARS)]
    assert len(targets) == 2 * len(LINEARS)  # two layers
    for name in targets:
        # GaLore steps in a rank-4 projection of the gradient, so the weight moves by a rank-4 matrix ...
        assert 0 < int(torch.linalg.matrix_rank(galore_deltas[name])) <= 4, name
        # ... where AdamW moves it by a full-rank one
        assert int(torch.linalg.matrix_rank(adamw_deltas[name])) > 4, name
    # the embedding (tied to the head, which "all" leaves out) is trained by plain AdamW
    embed = galore_deltas["model.embed_tokens.weight"]
    assert int(torch.linalg.matrix_rank(embed[: embed.shape[1] * 2])) > 4


@pytest.mark.parametrize("optim", ["galore_adamw", "apollo_adamw"])
def test_a_crashed_lowrank_run_resumes_the_same_curve(
    tiny_llama_dir: Path, tmp_path: Path, optim: str
) -> None:
    # GaLore's and APOLLO's optimizer state holds a projector object per weight: the checkpoint's weights-only
    # load must take it, or the run cannot resume
    data = write_rows(tmp_path / "rows.jsonl")
    common = ("--max-steps", "5", "--save-steps", "3", "--tuning", "full", "--optim", optim,
              "--optim_target_modules", "all-linear", "--optim_args", "rank=4,update_proj_gap=2")  # fmt: skip
    straight = train_sft(make_cfg(tiny_llama_dir, data, tmp_path / "straight", *common))
    crashed = tmp_path / "crashed"
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_sft(make_cfg(tiny_llama_dir, data, crashed, *common), callbacks=[CrashAt(4)])
    result = train_sft(make_cfg(tiny_llama_dir, data, crashed, *common, "--resume", "auto"))
    assert result.resumed_from is not None and result.resumed_from.endswith("checkpoint-3")
    want = {r["step"]: r["loss"] for r in read_metrics(tmp_path / "straight") if "loss" in r}
    got = {r["step"]: r["loss"] for r in read_metrics(crashed) if "loss" in r}
    assert [got[s] for s in (4, 5)] == pytest.approx([want[s] for s in (4, 5)], abs=1e-4)
    deltas = _deltas(straight.run_dir, tiny_llama_dir)
    assert all(float(d.abs().max()) > 0 for d in deltas.values())  # every weight trained
    # the layer-wise kind keeps no optimizer state in the checkpoint: resuming one says so
    lines = resume_changes(crashed, "auto", {"optim": "galore_adamw_layerwise"}, "")
    assert lines[0].startswith(
        "warning: optim galore_adamw_layerwise keeps each layer's optimizer state outside"
    )
    assert not any(
        "keeps each layer's" in x for x in resume_changes(crashed, "auto", {"optim": "galore_adamw"}, "")
    )


def crash_and_resume(
    model: Path, data: Path, tmp_path: Path, common: tuple[str, ...], crash_at: int
) -> tuple[dict[int, dict[str, Any]], dict[int, dict[str, Any]]]:
    """Train `common` straight through, and again crashed at step `crash_at` then resumed from the last checkpoint
    (the one at step 3): (logged rows by step, straight; the same, crashed and resumed)."""
    straight, crashed = tmp_path / "straight", tmp_path / "crashed"
    train_sft(make_cfg(model, data, straight, *common))
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_sft(make_cfg(model, data, crashed, *common), callbacks=[CrashAt(crash_at)])
    result = train_sft(make_cfg(model, data, crashed, *common, "--resume", "auto"))
    assert result.resumed_from is not None and result.resumed_from.endswith("checkpoint-3")
    rows = [{r["step"]: r for r in read_metrics(run) if "loss" in r} for run in (straight, crashed)]
    return rows[0], rows[1]


class _Optimizer(TrainerCallback):
    """Keeps the optimizer the Trainer trained with."""

    optimizer: Any = None

    def on_train_end(self, args: Any, state: Any, control: Any, optimizer: Any = None, **kw: Any) -> None:
        self.optimizer = optimizer


def _second_moments(optimizer: Any) -> int:
    """Numbers an Adam-style optimizer keeps for the second moment (AdamW: exp_avg_sq; Adam-mini: v or vmean)."""
    states = getattr(optimizer, "optimizer", optimizer).state.values()
    return sum(int(t.numel()) for st in states for k, t in st.items() if k in ("exp_avg_sq", "v", "vmean"))


def test_adam_mini_keeps_one_second_moment_per_block(tiny_llama_dir: Path, tmp_path: Path) -> None:
    data = write_rows(tmp_path / "rows.jsonl")
    steps = ("--tuning", "full", "--max-steps", "2")
    seen = {}
    for optim in ("adam_mini", "adamw_torch"):
        grab = _Optimizer()
        train_sft(
            make_cfg(tiny_llama_dir, data, tmp_path / optim, *steps, "--optim", optim), callbacks=[grab]
        )
        seen[optim] = grab.optimizer
    trainable = sum(p.numel() for g in seen["adamw_torch"].param_groups for p in g["params"])
    assert type(getattr(seen["adam_mini"], "optimizer", seen["adam_mini"])).__name__ == "Adam_mini"
    assert _second_moments(seen["adamw_torch"]) == trainable  # AdamW: one per weight
    # Adam-mini: one per attention head of q/k, output neuron or token row, with only the few vectors (norms) in
    # full: far fewer than the weights
    assert 0 < _second_moments(seen["adam_mini"]) < trainable / 20
    deltas = _deltas(tmp_path / "adam_mini", tiny_llama_dir)
    assert all(float(d.abs().max()) > 0 for d in deltas.values())  # every weight trained
    resumed = tmp_path / "crashed"
    common = ("--tuning", "full", "--max-steps", "5", "--save-steps", "3", "--optim", "adam_mini")
    straight = tmp_path / "straight"
    train_sft(make_cfg(tiny_llama_dir, data, straight, *common))
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_sft(make_cfg(tiny_llama_dir, data, resumed, *common), callbacks=[CrashAt(4)])
    train_sft(make_cfg(tiny_llama_dir, data, resumed, *common, "--resume", "auto"))
    want = {r["step"]: r["loss"] for r in read_metrics(straight) if "loss" in r}
    got = {r["step"]: r["loss"] for r in read_metrics(resumed) if "loss" in r}
    assert [got[s] for s in (4, 5)] == pytest.approx([want[s] for s in (4, 5)], abs=1e-4)


def test_llamafactory_galore_keys_become_the_trainers_optimizer() -> None:
    cfg = SFTConfig.from_dict(
        {"finetuning_type": "full", "use_galore": True, "galore_layerwise": True, "galore_target": "mlp,self_attn",
         "galore_rank": 128, "galore_scale": 2.0, "gradient_accumulation_steps": 1}
    )  # fmt: skip
    assert cfg.train.optim == "galore_adamw_layerwise"
    assert cfg.train.trainer_args == {
        "optim_target_modules": r".*(?:mlp|self_attn).*",
        "optim_args": "rank=128,update_proj_gap=200,scale=2.0,proj_type=std",
    }
    assert any("use_galore -> optim galore_adamw_layerwise" in n for n in cfg.notes)
    assert not any(n.startswith("passed to the Trainer") for n in cfg.notes)  # the note above says it
    # LLaMA-Factory's defaults (rank 16, scale 2.0) and its base optimizer decide the rest
    default = SFTConfig.from_dict({"finetuning_type": "full", "use_galore": True, "optim": "adafactor"})
    assert default.train.optim == "galore_adafactor"
    assert default.train.trainer_args["optim_target_modules"] == ALL_BUT_HEAD
    assert default.train.trainer_args["optim_args"] == "rank=16,update_proj_gap=200,scale=2.0,proj_type=std"
    off = SFTConfig.from_dict({"use_galore": False, "galore_rank": 8})
    assert off.train.optim == "adamw_torch_fused" and "optim_args" not in off.train.trainer_args
    # APOLLO: LLaMA-Factory's defaults (scale 32, random projection, channel-wise scaling)
    apollo = SFTConfig.from_dict({"finetuning_type": "freeze", "use_apollo": True, "apollo_target": "mlp",
                                  "apollo_rank": 8, "apollo_layerwise": True, "gradient_accumulation_steps": 1})  # fmt: skip
    assert apollo.train.optim == "apollo_adamw_layerwise"
    assert apollo.train.trainer_args == {
        "optim_target_modules": r".*(?:mlp).*",
        "optim_args": "rank=8,update_proj_gap=200,scale=32.0,proj=random,proj_type=std,scale_type=channel",
    }


def test_llamafactory_adam_mini_key_is_temper_adam_mini() -> None:
    cfg = SFTConfig.from_dict({"finetuning_type": "full", "use_adam_mini": True, "optim": "adamw_torch"})
    assert cfg.train.optim == "adam_mini" and "use_adam_mini -> optim adam_mini" in cfg.notes
    with pytest.raises(ConfigError, match="adam_mini with tuning lora"):
        check_trainer_names(SFTConfig.from_dict({"use_adam_mini": True}).train, "lora")


def test_ms_swift_galore_keys_read_with_its_own_defaults() -> None:
    # an ms-swift command line (a setting only ms-swift has): its GaLore defaults are rank 128, gap 50, scale 1
    argv = [
        "--train_type",
        "full",
        "--use_galore",
        "true",
        "--galore_rank",
        "32",
        "--galore_with_embedding",
        "false",
    ]
    cli = SFTConfig.from_sources(None, argv)
    assert cli.tune.tuning == "full" and cli.train.optim == "galore_adamw"
    assert cli.train.trainer_args == {
        "optim_target_modules": ALL_BUT_HEAD,
        "optim_args": "rank=32,update_proj_gap=50,scale=1.0,proj_type=std",
    }
    # its args.json lists every GaLore setting, the Q-GaLore ones and unset targets included
    args_json = SFTConfig.from_dict(
        {"train_type": "full", "use_galore": True, "galore_target_modules": ["q_proj", "v_proj"],
         "galore_optim_per_parameter": True, "galore_with_embedding": False, "galore_quantization": False,
         "galore_proj_bits": 4, "galore_queue_size": 5, "optim": "adamw_torch", "gradient_accumulation_steps": 1}
    )  # fmt: skip
    assert args_json.train.optim == "galore_adamw_layerwise" and "ms-swift's settings" in args_json.notes[0]
    assert args_json.train.trainer_args["optim_target_modules"] == r".*(?:q_proj|v_proj).*"


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"use_galore": True}, "with tuning lora"),  # LLaMA-Factory's default tuning is lora
        ({"use_galore": True, "finetuning_type": "full", "optim": "sgd"}, "GaLore wraps one of"),
        (
            {"use_galore": True, "finetuning_type": "full", "galore_rnak": 8},
            "galore_rnak: not a LLaMA-Factory",
        ),
        ({"use_galore": True, "train_type": "lora"}, "use_galore with tuning lora"),
        (
            {"use_galore": True, "tuning": "full", "galore_layerwise": True, "galore_update_proj_gap": 9},
            "two tools",
        ),
        ({"use_galore": True, "train_type": "full", "galore_with_embedding": True}, "linear layers only"),
        ({"use_galore": True, "train_type": "full", "galore_quantization": "true"}, "Q-GaLore"),
        (
            {"use_galore": True, "finetuning_type": "full", "galore_rank": "big"},
            "galore_rank: got 'big'; expected an",
        ),
        (
            {"use_apollo": True, "finetuning_type": "full", "optim": "adafactor"},
            "APOLLO wraps one of adamw_torch",
        ),
        (
            {"use_apollo": True, "finetuning_type": "full", "apollo_scale_front": True},
            "never before",
        ),
        (
            {"use_apollo": True, "use_galore": True, "finetuning_type": "full"},
            "use_galore and use_apollo: one optimizer at a time",
        ),
    ],
)
def test_galore_keys_that_cannot_be_honoured_are_refused(values: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        SFTConfig.from_dict(values)


def test_low_rank_optimizers_are_checked_before_anything_loads() -> None:
    targets = {"optim_target_modules": "all-linear"}
    with pytest.raises(ConfigError, match="needs optim_target_modules"):
        check_trainer_names(SFTTrainCfg(optim="galore_adamw"), "full")
    with pytest.raises(ConfigError, match="with tuning lora"):
        check_trainer_names(SFTTrainCfg(optim="galore_adamw", trainer_args=targets), "lora")
    with pytest.raises(ConfigError, match="gradient_accumulation_steps must be 1"):
        check_trainer_names(
            SFTTrainCfg(optim="galore_adamw_layerwise", trainer_args=targets, gradient_accumulation_steps=4),
            "full",
        )
    check_trainer_names(SFTTrainCfg(optim="galore_adamw", trainer_args=targets), "full")  # all it needs
    check_trainer_names(SFTTrainCfg(optim="apollo_adamw", trainer_args=targets), "freeze")

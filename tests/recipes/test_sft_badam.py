"""BAdam, layer-wise (`--optim badam`, LLaMA-Factory's `use_badam`): full tuning one decoder layer at a time,
through the badam package's BlockOptimizer, with a checkpoint that resumes on the layer it was saved on."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_sft_optimizers import _Optimizer, crash_and_resume
from test_sft_recipe import make_cfg, write_rows

from temper.config import SFTConfig
from temper.config.sections import SFTTrainCfg
from temper.errors import ConfigError
from temper.recipes.sft import train_sft
from temper.training.badam import BAdam, describe
from temper.training.preflight import check_trainer_names

pytest.importorskip("badam")


def _moved(run: Path, base: Path) -> set[str]:
    before, after = load_file(base / "model.safetensors"), load_file(run / "model.safetensors")
    return {k for k in after if not torch.equal(after[k], before[k])}


def test_badam_trains_one_layer_at_a_time(tiny_llama_dir: Path, tmp_path: Path) -> None:
    data = write_rows(tmp_path / "rows.jsonl")
    grab = _Optimizer()
    cfg = make_cfg(tiny_llama_dir, data, tmp_path / "one", "--tuning", "full", "--max-steps", "1",
                   "--optim", "badam", "--optim_args", "switch_interval=50,switch_mode=descending")  # fmt: skip
    train_sft(cfg, callbacks=[grab])
    moved = _moved(tmp_path / "one", tiny_llama_dir)
    # the last layer (descending) and only it: every one of its weights, nothing of layer 0, the embedding/head
    # or the final norm
    assert moved and all(k.startswith("model.layers.1.") for k in moved), sorted(moved)
    assert len(moved) == 9  # q, k, v, o, gate, up, down and the two norms
    opt = getattr(grab.optimizer, "optimizer", grab.optimizer)
    assert isinstance(opt, BAdam)
    # Adam moments for that layer only
    kept = sum(
        t.numel() for st in opt.block.base_optimizer.state.values() for k, t in st.items() if k == "exp_avg"
    )
    base = load_file(tiny_llama_dir / "model.safetensors")
    layer = sum(t.numel() for n, t in base.items() if n.startswith("model.layers.1."))
    assert kept == layer
    # switching every step: both layers train in two steps, still nothing else
    train_sft(make_cfg(tiny_llama_dir, data, tmp_path / "two", "--tuning", "full", "--max-steps", "3",
                       "--optim", "badam", "--optim_args", "switch_interval=1"))  # fmt: skip
    assert {k.split(".")[2] for k in _moved(tmp_path / "two", tiny_llama_dir)} == {"0", "1"}
    assert not any("layers" not in k for k in _moved(tmp_path / "two", tiny_llama_dir))


@pytest.mark.parametrize("mode", ["ascending", "random"])
def test_a_crashed_badam_run_resumes_on_its_layer(tiny_llama_dir: Path, tmp_path: Path, mode: str) -> None:
    # BlockOptimizer keeps its layer and step count outside its state dict: resumed from that alone, the run
    # would step the wrong layer with another's moments and switch at other steps
    data = write_rows(tmp_path / "rows.jsonl")
    common = ("--tuning", "full", "--max-steps", "7", "--save-steps", "3", "--optim", "badam",
              "--optim_args", f"switch_interval=3,switch_mode={mode}")  # fmt: skip
    want, got = crash_and_resume(tiny_llama_dir, data, tmp_path, common, crash_at=5)
    for step in (4, 5, 6, 7):
        assert got[step]["loss"] == pytest.approx(want[step]["loss"], abs=1e-4)
    straight, crashed = tmp_path / "straight", tmp_path / "crashed"
    assert load_file(straight / "model.safetensors").keys() == load_file(crashed / "model.safetensors").keys()
    for k, v in load_file(straight / "model.safetensors").items():
        assert torch.allclose(v, load_file(crashed / "model.safetensors")[k], atol=1e-5), k


def test_llamafactory_badam_keys_become_optim_badam() -> None:
    cfg = SFTConfig.from_dict({"finetuning_type": "full", "use_badam": True, "badam_mode": "layer",
                               "badam_switch_mode": "descending", "badam_switch_interval": 10,
                               "badam_start_block": None, "badam_update_ratio": 0.05})  # fmt: skip
    assert cfg.train.optim == "badam"
    assert cfg.train.trainer_args == {"optim_args": "switch_mode=descending,switch_interval=10"}
    assert "ignored: badam_update_ratio (ratio-wise BAdam's)" in cfg.notes
    check_trainer_names(cfg.train, "full")
    off = SFTConfig.from_dict({"use_badam": False, "badam_switch_interval": 10})
    assert off.train.optim == "adamw_torch_fused"


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"use_badam": True, "badam_mode": "ratio"}, "temper has layer-wise BAdam"),
        (
            {"use_badam": True, "badam_switch_every": 3},
            "badam_switch_every: not a LLaMA-Factory BAdam setting",
        ),
        ({"use_badam": True, "optim": "adafactor"}, "steps each block with torch's AdamW"),
        ({"use_badam": True, "use_galore": True}, "use_galore and use_badam: one optimizer at a time"),
    ],
)
def test_badam_keys_that_cannot_be_honoured_are_refused(values: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        SFTConfig.from_dict(values)


def test_badam_is_checked_before_anything_loads() -> None:
    with pytest.raises(ConfigError, match="badam with tuning lora"):
        check_trainer_names(SFTTrainCfg(optim="badam"), "lora")
    with pytest.raises(ConfigError, match="badam with tuning freeze"):
        check_trainer_names(SFTTrainCfg(optim="badam"), "freeze")
    for args, match in (("switch_mode=sideways", "switch_mode 'sideways'; expected one of ascending"),
                        ("switch_interval=0", "expected a number of steps"),
                        ("ratio=0.1", "optim badam takes switch_interval=..., switch_mode=...")):  # fmt: skip
        with pytest.raises(ConfigError, match=match):
            check_trainer_names(SFTTrainCfg(optim="badam", trainer_args={"optim_args": args}), "full")
    # across processes: refused before the launch (one message, not one per worker)
    from temper.config import DistCfg
    from temper.training.launch import launch

    with pytest.raises(
        ConfigError, match="badam with 2 processes: BAdam switches which weights take gradients"
    ):
        launch("sft", ["--nproc", "2"], DistCfg(nproc=2), "badam")
    with pytest.raises(ConfigError, match="muon under deepspeed"):
        launch("sft", ["--nproc", "2"], DistCfg(nproc=2, deepspeed="zero2"), "muon")
    # what the run says: the switching, and what fp32 weights and compiling cost
    settings = {"switch_interval": 50, "switch_mode": "ascending", "start_block": -1, "verbose": 0}
    line = describe(settings, 30, "fp32", compiled=True)
    assert line.startswith(
        "optim badam: one of 30 decoder layers trains at a time (ascending, switching every 50"
    )
    assert "fp32 weights" in line and "every switch recompiles" in line
    assert "recompiles" not in describe(settings, 30, "bf16") and "fp32" not in describe(settings, 30, "bf16")


def test_badam_start_block_past_the_layers_is_refused(tiny_llama_dir: Path, tmp_path: Path) -> None:
    data = write_rows(tmp_path / "rows.jsonl")
    cfg = make_cfg(tiny_llama_dir, data, tmp_path / "x", "--tuning", "full", "--max-steps", "1",
                   "--optim", "badam", "--optim_args", "start_block=2")  # fmt: skip
    with pytest.raises(ConfigError, match=r"start_block 2; the model has 2 decoder layers \(0 to 1\)"):
        train_sft(cfg)

"""A LLaMA-Factory config trains under `temper sft` as it is, and the Trainer's optimizer options reach it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from test_sft_recipe import make_cfg, write_rows
from transformers import TrainerCallback

from temper.cli import main
from temper.recipes.sft import train_sft
from temper.runs import read_manifest

CONFIG = """\
model_name_or_path: {model}
trust_remote_code: true
stage: sft
do_train: true
finetuning_type: lora
lora_target: all
dataset: identity,alpaca_en_demo
dataset_dir: {data}
cutoff_len: 256
max_samples: 8
overwrite_cache: true
preprocessing_num_workers: 16
output_dir: {out}
logging_steps: 1
plot_loss: true
per_device_train_batch_size: 4
learning_rate: 1.0e-4
max_steps: 1
bf16: false
"""


def test_a_llamafactory_config_trains_and_says_what_it_ignored(
    tiny_llama_dir: Path, shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "saves"
    path = tmp_path / "lf.yaml"
    path.write_text(CONFIG.format(model=tiny_llama_dir, data=shared_data / "llamafactory", out=out))
    assert main(["sft", str(path), "--model-name", "Ember", "--model-author", "us"]) == 0
    err = capsys.readouterr().err
    for key in ("trust_remote_code", "do_train", "overwrite_cache", "preprocessing_num_workers", "plot_loss"):
        assert f"ignored: {key} (" in err, key
    assert "data 16 train" in err  # max_samples: the first 8 rows of each of the two datasets
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["max_samples"] == 8 and saved["lora_target"] == ["all-linear"] and saved["max_length"] == 256
    assert "stage" not in saved and "plot_loss" not in saved  # the run dir holds temper's config
    assert read_manifest(out)["result"]["global_step"] == 1 and (out / "loss.png").is_file()


class OptimizerSeen(TrainerCallback):
    def __init__(self) -> None:
        self.optimizer: Any = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        opt = kwargs["optimizer"]
        self.optimizer = getattr(opt, "optimizer", opt)  # accelerate wraps it


def test_optim_and_adam_options_reach_the_trainer(tiny_llama_dir: Path, tmp_path: Path) -> None:
    data = write_rows(tmp_path / "rows.jsonl", 8)
    seen = OptimizerSeen()
    train_sft(make_cfg(tiny_llama_dir, data, tmp_path / "a", "--max-steps", "1", "--optim", "sgd"), [seen])
    assert type(seen.optimizer).__name__ == "SGD"
    args = ("--max-steps", "1", "--optim", "adamw_torch", "--adam-beta1", "0.8", "--adam-beta2", "0.95",
            "--adam-epsilon", "1e-6")  # fmt: skip
    train_sft(make_cfg(tiny_llama_dir, data, tmp_path / "b", *args), [seen])
    group = seen.optimizer.param_groups[0]
    assert type(seen.optimizer).__name__ == "AdamW" and group["betas"] == (0.8, 0.95) and group["eps"] == 1e-6


def test_a_validation_file_is_evaluated_and_not_trained_on(
    tiny_llama_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from temper.runs import read_metrics

    data = write_rows(tmp_path / "rows.jsonl", 12)
    val = write_rows(tmp_path / "val.jsonl", 5)
    out = tmp_path / "run"
    args = ("--max-steps", "2", "--val-dataset", str(val), "--eval-steps", "1",
            "--early-stopping-patience", "5")  # fmt: skip
    train_sft(make_cfg(tiny_llama_dir, data, out, *args))
    assert "data 12 train / 5 val samples" in capsys.readouterr().err
    assert sorted({r["step"] for r in read_metrics(out) if "eval_loss" in r}) == [1, 2]  # and a final one
    # The fingerprint covers the validation file: editing it is reported on resume.
    write_rows(val, 6)
    train_sft(make_cfg(tiny_llama_dir, data, out, *args[2:], "--max-steps", "3", "--resume", "auto"))
    assert "the data files changed since this run started" in capsys.readouterr().err


def test_eval_strategy_steps_and_no(tiny_llama_dir: Path, tmp_path: Path) -> None:
    from temper.errors import ConfigError
    from temper.runs import read_metrics

    data = write_rows(tmp_path / "rows.jsonl", 12)
    # steps without eval_steps: every logging_steps, as the Trainer does; the final eval comes at the end
    out = tmp_path / "steps"
    train_sft(make_cfg(tiny_llama_dir, data, out, "--max-steps", "3", "--val-size", "4",
                       "--eval_strategy", "steps", "--logging-steps", "2"))  # fmt: skip
    assert sorted({r["step"] for r in read_metrics(out) if "eval_loss" in r}) == [2, 3]
    # no (LLaMA-Factory's and ms-swift's spelling, also transformers 4's evaluation_strategy): the rows stay
    # held out from training and nothing is evaluated, neither on the way nor at the end
    out = tmp_path / "no"
    result = train_sft(make_cfg(tiny_llama_dir, data, out, "--max-steps", "3", "--val-size", "4",
                                "--evaluation_strategy", "no", "--eval-steps", "1"))  # fmt: skip
    assert not [r for r in read_metrics(out) if "eval_loss" in r]
    assert "eval_loss" not in result.metrics
    with pytest.raises(ConfigError, match="early_stopping_patience 2 needs evaluations"):
        train_sft(make_cfg(tiny_llama_dir, data, tmp_path / "x", "--val-size", "4", "--eval-strategy", "no",
                           "--early-stopping-patience", "2"))  # fmt: skip
    with pytest.raises(ConfigError, match="eval_strategy"):
        make_cfg(tiny_llama_dir, data, tmp_path / "y", "--eval-strategy", "sometimes")


def test_any_other_trainer_option_reaches_the_trainer_as_given(
    tiny_llama_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from temper.runs import read_metrics

    data = write_rows(tmp_path / "rows.jsonl", 12)
    out = tmp_path / "minlr"
    assert main([
        "sft", "--model", str(tiny_llama_dir), "--dataset", str(data), "--output-dir", str(out), "--max-length", "64",
        "--bf16", "false", "--max-steps", "6", "--lr", "1e-3", "--lr-scheduler-type", "cosine_with_min_lr",
        "--lr-scheduler-kwargs", "{min_lr: 2.0e-4}", "--val-size", "4", "--eval_on_start", "true",
    ]) == 0  # fmt: skip
    assert "passed to the Trainer as given: lr_scheduler_kwargs, eval_on_start" in capsys.readouterr().err
    lrs = [r["learning_rate"] for r in read_metrics(out) if "loss" in r]
    assert (
        lrs[0] == pytest.approx(1e-3) and min(lrs) > 2e-4 - 1e-9 and lrs[-1] < 4e-4
    )  # cosine down to min_lr
    assert any(r.get("step") == 0 and "eval_loss" in r for r in read_metrics(out))  # eval_on_start
    saved = yaml.safe_load((out / "config.yaml").read_text())["trainer_args"]
    assert saved == {"lr_scheduler_kwargs": {"min_lr": 2e-4}, "eval_on_start": True}
    assert (
        main(
            [
                "sft",
                "--dataset",
                str(data),
                "--output-dir",
                str(tmp_path / "bad"),
                "--save-strategy",
                "sometimes",
            ]
        )
        == 2
    )
    assert "the Trainer refuses them: sometimes is not a valid SaveStrategy" in capsys.readouterr().err

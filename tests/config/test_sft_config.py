"""SFTConfig parsing: YAML keys and flags are the same keys, aliases, overrides, errors that name the key,
and a --help that lists every option with its default."""

from __future__ import annotations

from pathlib import Path

import pytest

from temper.cli import main
from temper.config import ALIASES, SFTConfig
from temper.errors import ConfigError


def test_yaml_keys_and_flags_give_the_same_config(tmp_path: Path) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text(
        "model: smollm2-135m-instruct\ndataset: [a.json, b.json#20]\nlora_rank: 4\nlearning_rate: 3.0e-4\n"
        "num_train_epochs: 2\ntrain_sampling_strategy: sequential\npacking: true\n"
    )
    flags = [
        "--model", "smollm2-135m-instruct", "--dataset", "a.json", "--dataset", "b.json#20",
        "--lora-rank", "4", "--learning-rate", "3e-4", "--num-train-epochs", "2",
        "--train-sampling-strategy", "sequential", "--packing",
    ]  # fmt: skip
    from_yaml, from_flags = SFTConfig.from_sources(path, []), SFTConfig.from_sources(None, flags)
    assert from_yaml.to_dict() == from_flags.to_dict()
    assert (from_yaml.tune.lora_rank, from_yaml.train.learning_rate, from_yaml.data.packing) == (
        4,
        3e-4,
        True,
    )
    assert from_yaml.data.dataset == ["a.json", "b.json#20"]


def test_a_list_flag_takes_several_values_as_ms_swift_writes_them() -> None:
    cfg = SFTConfig.from_sources(
        None,
        ["--dataset", "a.json#500", "b.json", "--lora_target", "q_proj", "v_proj", "--model_name", "小黄",
         "Xiao Huang", "--model_author", "the temper team", "max_steps=3"],
    )  # fmt: skip
    assert cfg.data.dataset == ["a.json#500", "b.json"]  # up to the next option ...
    assert cfg.tune.lora_target == ["q_proj", "v_proj"]
    assert cfg.data.model_name == ["小黄", "Xiao Huang"]
    assert cfg.data.model_author == ["the temper team"]  # ... or key=value override: max_steps=3
    assert cfg.train.max_steps == 3
    # Names are not cut at commas (dataset lists are: LLaMA-Factory's `dataset: a,b`).
    assert SFTConfig.from_sources(None, ["--model-author", "Acme, Inc."]).data.model_author == ["Acme, Inc."]
    assert SFTConfig.from_dict({"model_name": "Ember"}).data.model_name == ["Ember"]
    # A config file is never one of the values: it goes first, and the error says so.
    with pytest.raises(ConfigError, match="unexpected argument 'cfg.yaml'") as err:
        SFTConfig.from_sources(None, ["--dataset", "a.json", "b.json", "cfg.yaml"])
    assert "The config file goes first: temper sft cfg.yaml" in str(err.value.hint)
    with pytest.raises(ConfigError, match="model_name: got 3 values") as err:
        SFTConfig.from_sources(None, ["--model-name", "the", "temper", "team"])
    assert "Quote a value with spaces" in str(err.value.hint)


def test_flags_override_the_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text("lora_rank: 4\nlearning_rate: 3.0e-4\n")
    cfg = SFTConfig.from_sources(path, ["--lora-rank", "16"])
    assert (cfg.tune.lora_rank, cfg.train.learning_rate) == (16, 3e-4)


def test_short_spellings_are_aliases_of_the_trainer_names() -> None:
    short = SFTConfig.from_sources(
        None,
        ["--lr", "1e-3", "--epochs", "2", "--batch-size", "3", "--grad-accum", "5", "--cutoff-len", "64"],
    )
    canonical = SFTConfig.from_sources(
        None,
        [
            "--learning-rate", "1e-3", "--num-train-epochs", "2", "--per-device-train-batch-size", "3",
            "--gradient-accumulation-steps", "5", "--max-length", "64",
        ],
    )  # fmt: skip
    assert short.to_dict() == canonical.to_dict()
    assert short.train.per_device_train_batch_size == 3 and short.data.max_length == 64


def test_an_unknown_key_suggests_the_closest_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown key 'lora_rnak'") as err:
        SFTConfig.from_sources(None, ["--lora-rnak", "8"])
    assert "Did you mean `lora_rank`?" in str(err.value.hint)
    path = tmp_path / "typo.yaml"
    path.write_text("learnig_rate: 1.0e-4\n")
    with pytest.raises(ConfigError, match="typo.yaml: unknown key 'learnig_rate'") as err:
        SFTConfig.from_sources(path, [])
    assert "`learning_rate`" in str(err.value.hint)
    # Several typos are reported together, each with its own suggestion (only the first used to be).
    path.write_text("lora_rnak: 8\nlearning_rat: 1.0e-4\nnum_train_epochs: 1\n")
    with pytest.raises(ConfigError, match="unknown keys 'lora_rnak', 'learning_rat'") as err:
        SFTConfig.from_sources(path, [])
    assert "'lora_rnak': Did you mean `lora_rank`?" in str(err.value.hint)
    assert "'learning_rat': Did you mean `learning_rate`?" in str(err.value.hint)


def test_a_key_given_twice_in_a_yaml_file_is_an_error(tmp_path: Path) -> None:
    from temper.board.forms import FormError, parse_extra

    path = tmp_path / "twice.yaml"
    path.write_text("max_steps: 3\nlearning_rate: 1.0e-4\nmax_steps: 4\n")  # YAML's loaders keep the last one
    with pytest.raises(ConfigError, match=r"key 'max_steps' appears twice \(lines 1 and 3\)"):
        SFTConfig.from_sources(path, [])
    with pytest.raises(FormError, match="appears twice"):  # the board's "more options" box
        parse_extra("seed: 1\nseed: 2\n")
    path.write_text("max_steps: 3\nlora_target: [q_proj, v_proj]\n")
    assert SFTConfig.from_sources(path, []).train.max_steps == 3


def test_the_trainers_old_group_by_length_switch_is_the_sampling_strategy() -> None:
    # transformers 4's (and LLaMA-Factory's examples') switch; transformers 5 has train_sampling_strategy
    grouped = SFTConfig.from_sources(None, ["--group-by-length", "true"])
    assert grouped.train.train_sampling_strategy == "group_by_length"
    assert (
        SFTConfig.from_sources(None, ["--group-by-length", "false"]).train.train_sampling_strategy == "random"
    )


def test_a_bad_value_names_the_key_and_the_choices() -> None:
    with pytest.raises(ConfigError, match="train_sampling_strategy: got 'shuffle'"):
        SFTConfig.from_sources(None, ["--train-sampling-strategy", "shuffle"])
    with pytest.raises(ConfigError, match="tuning"):
        SFTConfig.from_sources(None, ["--tuning", "lorra"])


def test_the_trainers_own_names_are_checked_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from temper.training.preflight import check_trainer_names

    # The Trainer would raise these only when built, after the data and the model had loaded.
    with pytest.raises(ConfigError, match="lr_scheduler_type: got 'cosinus'") as err:
        check_trainer_names(SFTConfig.from_sources(None, ["--lr-scheduler-type", "cosinus"]).train)
    assert "Did you mean 'cosine'?" in str(err.value.hint)
    with pytest.raises(ConfigError, match="report_to: got 'wandbb'"):
        check_trainer_names(SFTConfig.from_sources(None, ["--report-to", "wandbb"]).train)
    check_trainer_names(SFTConfig.from_sources(None, ["--lr-scheduler-type", "cosine_with_min_lr"]).train)
    with pytest.raises(ConfigError, match=r"warmup_ratio: got 1\.5"):
        SFTConfig.from_sources(None, ["--warmup-ratio", "1.5"])
    for flag in ("--logging-steps", "--save-steps", "--eval-steps", "--per-device-eval-batch-size"):
        with pytest.raises(ConfigError, match=f"{flag[2:].replace('-', '_')}: got 0"):
            SFTConfig.from_sources(None, [flag, "0"])
    with pytest.raises(ConfigError, match="nothing would train"):
        SFTConfig.from_sources(None, ["--num-train-epochs", "0"])
    assert SFTConfig.from_sources(None, ["--num-train-epochs", "0", "--max-steps", "5"]).train.max_steps == 5
    out = tmp_path / "run"
    assert main(["sft", "--lr-scheduler-type", "cosinus", "--output-dir", str(out)]) == 2
    assert "error: lr_scheduler_type" in capsys.readouterr().err and not out.exists()


def test_a_reporting_integration_that_is_not_installed_is_named() -> None:
    from transformers.integrations import get_available_reporting_integrations

    missing = [n for n in ("wandb", "mlflow", "clearml") if n not in get_available_reporting_integrations()]
    if not missing:
        pytest.skip("wandb, mlflow and clearml are all installed here")
    from temper.training.preflight import check_trainer_names

    with pytest.raises(ConfigError, match=f"report_to: '{missing[0]}' needs its package") as err:
        check_trainer_names(SFTConfig.from_sources(None, ["--report-to", missing[0]]).train)
    assert "--report-to none" in str(err.value.hint)


def test_help_lists_every_option_with_its_default_and_the_aliases(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["sft", "--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    options = SFTConfig.keys()  # a classmethod: every config key -> (section, field)
    for key in options:
        assert "--" + key.replace("_", "-") in text, key
    assert text.count("(default:") >= len(options)
    for alias, target in ALIASES.items():
        if target in options:
            assert "--" + alias.replace("_", "-") in text, alias

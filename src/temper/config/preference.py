"""Configuration of the preference verbs (`temper dpo|kto|orpo|simpo|cpo|rm`, `temper rlhf --rlhf-type ...`).

They share ModelCfg, TuneCfg, TrainCfg and DistCfg with SFT; PrefDataCfg only changes which row formats are
valid, and PrefCfg holds the objective's knobs (TRL's / ms-swift's names: beta, loss_type, label_smoothing,
rpo_alpha, simpo_gamma, cpo_alpha, desirable_weight, undesirable_weight, precompute_ref).

Example:
    >>> cfg = PreferenceConfig.for_verb("dpo", None, ["--beta", "0.2", "--rpo-alpha", "0.1"])
    >>> cfg.pref.rlhf_type, cfg.pref.beta, cfg.pref.rpo_alpha, cfg.train.output_dir
    ('dpo', 0.2, 0.1, 'runs/dpo')
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from temper.config.base import (
    ALIASES,
    ComposedConfig,
    check_choice,
    check_range,
    field,
    load_yaml,
    parse_overrides,
)
from temper.config.dist import DistCfg
from temper.config.sections import (
    SAMPLING_UNGROUPED,
    DataCfg,
    ModelCfg,
    TrainCfg,
    check_data_sizes,
)
from temper.config.tune import TuneCfg
from temper.errors import ConfigError

RLHF_TYPES = ("dpo", "kto", "orpo", "simpo", "cpo", "rm")
# Each method's usual beta (TRL / the papers): SimPO's reward is an average log-prob, so it needs a larger one.
DEFAULT_BETA = {"dpo": 0.1, "kto": 0.1, "orpo": 0.1, "simpo": 2.0, "cpo": 0.1, "rm": 0.0}
# The methods that need a reference model (the others are reference-free).
NEEDS_REFERENCE = ("dpo", "kto")


@dataclass
class PrefDataCfg(DataCfg):
    """DataCfg whose `format` names a preference (or, for KTO, an unpaired) row format."""

    def __post_init__(self) -> None:
        from temper.data.pref_formats import KTO_FORMATS, PREFERENCE_FORMATS

        check_choice("format", self.format, ["auto", *PREFERENCE_FORMATS, *KTO_FORMATS])
        check_data_sizes(self)
        for key in ("train_on_prompt", "mask_history"):
            if getattr(self, key):
                raise ConfigError(
                    f"{key}: preference training scores whole replies; prompt and history are never labelled.",
                    hint=f"Remove --{key.replace('_', '-')}.",
                    key=key,
                )
        if self.packing:
            raise ConfigError(
                "packing: preference training cannot pack rows (chosen and rejected must stay whole sequences).",
                hint="Remove --packing.",
            )


@dataclass
class PrefCfg:
    rlhf_type: str = field("dpo", help="dpo, kto, orpo, simpo, cpo or rm (ms-swift's --rlhf-type)")
    beta: float | None = field(None, help="inverse temperature (default: 0.1; simpo 2.0; ORPO's lambda)")
    loss_type: str = field("sigmoid", help="DPO loss: sigmoid (DPO), ipo or hinge")
    label_smoothing: float = field(
        0.0, help="DPO/SimPO: assumed fraction of flipped labels (conservative DPO)"
    )
    rpo_alpha: float | None = field(None, help="DPO: add rpo_alpha x the chosen NLL (RPO); e.g. 1.0")
    simpo_gamma: float = field(0.5, help="SimPO: target reward margin gamma")
    cpo_alpha: float = field(1.0, help="CPO: weight of the chosen NLL")
    desirable_weight: float = field(1.0, help="KTO: weight of desirable examples")
    undesirable_weight: float = field(1.0, help="KTO: weight of undesirable examples")
    precompute_ref: bool = field(
        False, help="compute reference log-probs once before training, then free the reference"
    )
    rm_margin: float = field(0.0, help="RM: margin m in -log sigmoid(s_chosen - s_rejected - m)")

    def __post_init__(self) -> None:
        check_choice("rlhf_type", self.rlhf_type, RLHF_TYPES)
        check_choice("loss_type", self.loss_type, ["sigmoid", "ipo", "hinge"])
        check_range("label_smoothing", self.label_smoothing, 0, 0.5)
        check_range("beta", self.beta, 0, None)
        check_range("desirable_weight", self.desirable_weight, 0, None)
        check_range("undesirable_weight", self.undesirable_weight, 0, None)
        if self.beta is None:
            self.beta = DEFAULT_BETA[self.rlhf_type]
        if self.loss_type == "ipo" and self.beta == 0:
            raise ConfigError("beta: IPO divides by beta; got 0.", hint="Use --beta 0.1.")


@dataclass
class PrefTrainCfg(TrainCfg):
    SAMPLING: ClassVar[list[str]] = SAMPLING_UNGROUPED
    # Preference steps move the policy fast; LLaMA-Factory's and TRL's examples use 5e-6 (full) to 5e-5 (LoRA).
    learning_rate: float = field(5e-5, help="peak learning rate")
    num_train_epochs: float = field(1.0, help="epochs over the training set")
    train_sampling_strategy: str = field(
        "random", help="order of the pairs: random (the Trainer's default) or sequential (file order)"
    )


class PreferenceConfig(ComposedConfig):
    """Configuration of the preference verbs (see `temper dpo --help`)."""

    VERB = "dpo"
    SECTIONS = {
        "model": ModelCfg,
        "data": PrefDataCfg,
        "tune": TuneCfg,
        "train": PrefTrainCfg,
        "pref": PrefCfg,
        "dist": DistCfg,
    }
    model: ModelCfg
    data: PrefDataCfg
    tune: TuneCfg
    train: PrefTrainCfg
    pref: PrefCfg
    dist: DistCfg

    @classmethod
    def for_verb(cls, verb: str, yaml_path: str | Path | None, argv: Sequence[str] = ()) -> PreferenceConfig:
        """The config of `temper VERB` (VERB = rlhf takes --rlhf-type); output_dir defaults to runs/<type>."""
        values: dict[str, Any] = {}
        if yaml_path is not None:
            values.update(load_yaml(yaml_path))
        values.update(parse_overrides(cls, argv))
        values = {
            ALIASES.get(str(k).replace("-", "_"), str(k).replace("-", "_")): v for k, v in values.items()
        }
        if verb == "rlhf" and "rlhf_type" not in values and str(values.get("pref_loss")) in ("orpo", "simpo"):
            values["rlhf_type"] = values.pop("pref_loss")  # LLaMA-Factory's stage dpo names its variant so
        if verb != "rlhf":
            given = values.get("rlhf_type", verb)
            if given != verb:
                raise ConfigError(
                    f"rlhf_type: got {given!r} for `temper {verb}`.",
                    hint=f"Use `temper rlhf --rlhf-type {given}`.",
                )
            values["rlhf_type"] = verb
        values.setdefault("output_dir", f"runs/{values.get('rlhf_type', 'dpo')}")
        return cls.from_dict(
            values, source=str(yaml_path or "command line"), verb=str(values.get("rlhf_type", "dpo"))
        )

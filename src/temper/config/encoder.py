"""Configs of `temper classify` and `temper embed`: the shared ModelCfg / TuneCfg / TrainCfg sections (with
encoder-friendly defaults) plus a data section for labelled texts or text pairs.

Defaults follow the BERT fine-tuning protocol (Devlin et al. 2019, section 4 / appendix A.3): max length 128,
batch 32, learning rate 2e-5, 3 epochs, linear decay, full fine-tuning. Decoders with a classification head
usually want `--tuning lora`.

Example:
    >>> from temper.config.encoder import ClassifyConfig
    >>> cfg = ClassifyConfig.from_sources(None, ["--task", "glue-mrpc", "--lr", "3e-5"])
    >>> cfg.data.task, cfg.train.learning_rate, cfg.tune.tuning
    (['glue-mrpc'], 3e-05, 'full')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from temper.config.base import ComposedConfig, check_choice, check_range, field
from temper.config.sections import SAMPLING_UNGROUPED, ModelCfg, TrainCfg
from temper.config.tune import TuneCfg
from temper.errors import ConfigError

ENCODER_DEFAULT_MODEL = "minilm-l6"
CLS_FORMATS = ["auto", "glue_tsv", "csv", "tsv", "jsonl", "json", "swift"]
AUGMENT_OPS = ["synonym", "swap", "delete"]


@dataclass
class EncoderModelCfg(ModelCfg):
    model: str = field(
        ENCODER_DEFAULT_MODEL, help="bundled alias (minilm-l6, smollm2-135m-instruct), HF dir or run dir"
    )
    dtype: str = field(
        "fp32", help="weights dtype: fp32 (mixed precision comes from --bf16), bf16, fp16 or auto"
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rope_scaling is not None:
            raise ConfigError(
                f"rope_scaling: {self.rope_scaling!r} stretches a decoder's rotary positions; classify and embed "
                "train encoders.",
                hint="Drop rope_scaling.",
                key="rope_scaling",
            )
        if self.adapter is not None:
            raise ConfigError(
                f"adapter: classify and embed do not start from a separate adapter (got {self.adapter!r}).",
                hint="Name a temper run dir as the model; for a decoder adapter, merge it first: "
                "temper export ADAPTER_DIR --merge --output-dir DIR, then --model DIR.",
                key="adapter",
            )


@dataclass
class EncoderTuneCfg(TuneCfg):
    tuning: str = field("full", help="full (encoders), lora (decoders; the head is trained too) or freeze")
    progressive_unfreezing: bool = field(
        False,
        help="ULMFiT-style: epoch 1 trains only the head, each later epoch unfreezes one more top layer",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.pissa_init:
            raise ConfigError(
                "pissa_init: classify and embed start LoRA as peft's default.", key="pissa_init"
            )
        if self.quantization:
            raise ConfigError(
                f"quantization {self.quantization}: classify and embed train unquantized weights.",
                hint="Remove --quantization (QLoRA is for the causal-LM verbs: sft, dpo, kto, orpo, simpo).",
                key="quantization",
            )


@dataclass
class EncoderTrainCfg(TrainCfg):
    SAMPLING: ClassVar[list[str]] = SAMPLING_UNGROUPED
    output_dir: str = field("runs/classify", help="run directory")
    per_device_train_batch_size: int = field(32, help="samples per device per step (BERT protocol: 32)")
    per_device_eval_batch_size: int = field(64, help="batch size for evaluation")
    learning_rate: float = field(2e-5, help="peak learning rate (BERT protocol: 2e-5)")
    lr_scheduler_type: str = field("linear", help="linear (BERT), cosine, constant, ...")
    logging_steps: int = field(10, help="log every N steps")
    train_sampling_strategy: str = field(
        "random", help="order of the examples: random (the Trainer's default) or sequential (file order)"
    )
    save_total_limit: int | None = field(1, help="keep at most N checkpoints (the best one is always kept)")
    hpo_trials: int = field(0, help="optuna trials over lr (log), batch size, epochs, weight decay; 0 = off")
    metric_for_best_model: str | None = field(
        None, help="eval metric that picks the best checkpoint (default per task)"
    )
    load_best_model: bool = field(
        True, help="end with the best evaluated checkpoint (false: keep the last one)"
    )


@dataclass
class ClsDataCfg:
    task: list[str] = field(
        [], help="named task(s): glue-mrpc, glue-sst2, chnsenticorp; two or more = multi-task"
    )
    data_dir: str | None = field(
        None, help="folder of a named task's files (default: ../shared/data/<folder>)"
    )
    train: str | None = field(
        None, help="training file (csv, tsv, jsonl, json; ms-swift {'messages', 'label'})"
    )
    validation: str | None = field(None, help="validation file (default: the task's dev set or --val-size)")
    format: str = field("auto", help=f"file format: {', '.join(CLS_FORMATS)}")
    text_column: str | None = field(None, help="column with the text (default: text, sentence, review, ...)")
    text_pair_column: str | None = field(None, help="column with the second text of a pair (default: none)")
    label_column: str | None = field(None, help="column with the label (default: label)")
    labels: list[str] = field([], help="label names in id order (default: sorted labels found in the data)")
    problem_type: str = field("auto", help="auto, single_label_classification or regression")
    max_length: int = field(128, help="tokens per text (pair) after truncation")
    pad_to_max_length: bool = field(False, help="pad every batch to max_length (default: dynamic padding)")
    val_size: float = field(0.1, help="held-out fraction (<1) or rows (>=1) when there is no validation file")
    max_train_samples: int | None = field(None, help="use at most N training rows (seeded sample)")
    max_eval_samples: int | None = field(None, help="use at most N validation rows (seeded sample)")
    augment: list[str] = field([], help=f"EDA augmentation ops: {', '.join(AUGMENT_OPS)} (empty = off)")
    augment_copies: int = field(1, help="augmented copies added per training row")
    augment_rate: float = field(0.1, help="fraction of words changed per op (EDA alpha)")

    def __post_init__(self) -> None:
        check_choice("format", self.format, CLS_FORMATS)
        check_choice("problem_type", self.problem_type, ["auto", "single_label_classification", "regression"])
        check_range("max_length", self.max_length, 8, None)
        check_range("val_size", self.val_size, 0, None)
        check_range("augment_copies", self.augment_copies, 0, None)
        check_range("augment_rate", self.augment_rate, 0, 1)
        for op in self.augment:
            check_choice("augment", op, AUGMENT_OPS)


@dataclass
class EmbedDataCfg:
    dataset: list[str] = field(
        [], help="pair files: ms-swift {query, response, label} / {messages, positive_messages}, csv"
    )
    validation: str | None = field(None, help="validation pair file (default: --val-size of the data)")
    loss: str = field("auto", help="auto (cosine when pairs carry labels, else infonce), cosine or infonce")
    temperature: float = field(0.05, help="InfoNCE softmax temperature")
    pooling: str = field("mean", help="sentence embedding pooling: mean, cls or last")
    max_length: int = field(128, help="tokens per text after truncation")
    val_size: float = field(0.1, help="held-out fraction (<1) or rows (>=1) when there is no validation file")
    max_train_samples: int | None = field(None, help="use at most N training pairs (seeded sample)")

    def __post_init__(self) -> None:
        check_choice("loss", self.loss, ["auto", "cosine", "infonce"])
        check_choice("pooling", self.pooling, ["mean", "cls", "last"])
        check_range("temperature", self.temperature, 1e-4, 10)
        check_range("max_length", self.max_length, 8, None)


class ClassifyConfig(ComposedConfig):
    """Configuration of `temper classify` (see `temper classify --help`)."""

    VERB = "classify"
    SECTIONS = {
        "model": EncoderModelCfg,
        "data": ClsDataCfg,
        "tune": EncoderTuneCfg,
        "train": EncoderTrainCfg,
    }
    model: EncoderModelCfg
    data: ClsDataCfg
    tune: EncoderTuneCfg
    train: EncoderTrainCfg


@dataclass
class EmbedTrainCfg(EncoderTrainCfg):
    output_dir: str = field("runs/embed", help="run directory")
    per_device_train_batch_size: int = field(16, help="pairs per step (InfoNCE: more pairs = more negatives)")
    num_train_epochs: float = field(1.0, help="epochs over the training pairs")


class EmbedConfig(ComposedConfig):
    """Configuration of `temper embed` (see `temper embed --help`)."""

    VERB = "embed"
    SECTIONS = {
        "model": EncoderModelCfg,
        "data": EmbedDataCfg,
        "tune": EncoderTuneCfg,
        "train": EmbedTrainCfg,
    }
    model: EncoderModelCfg
    data: EmbedDataCfg
    tune: EncoderTuneCfg
    train: EmbedTrainCfg

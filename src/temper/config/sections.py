"""The config sections that the training verbs share. Field names follow TrainingArguments where the knob is
the same, because users already know them; the short spellings are aliases (config/base.py ALIASES)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from temper.config.base import ComposedConfig, check_choice, check_range, field
from temper.config.dist import DistCfg
from temper.config.tune import TuneCfg
from temper.data.mix import check_mix
from temper.errors import ConfigError
from temper.models.rope import ROPE_SCALING

DEFAULT_MODEL = "smollm2-135m-instruct"


@dataclass
class ModelCfg:
    model: str = field(
        DEFAULT_MODEL,
        help="bundled alias, Hugging Face directory or cached hub id, .gguf file, temper run dir or LoRA "
        "adapter dir (a LoRA run continues its adapter)",
    )
    adapter: str | None = field(
        None,
        help="a LoRA adapter dir to start from, over `model` as its base (LLaMA-Factory's adapter_name_or_path, "
        "ms-swift's adapters); a LoRA run continues it",
    )
    template: str | None = field(
        None,
        help="chat template override: a built-in name (chatml; LLaMA-Factory's default, alpaca, vicuna, empty, and "
        "its family names checked against the model's own) or a Jinja file path",
    )
    dtype: str = field("auto", help="weights dtype: auto (bf16 where supported), bf16, fp16 or fp32")
    attn_implementation: str = field(
        "auto", help="attention kernel: auto (temper's on CPU, sdpa on GPU), temper, sdpa or eager"
    )
    rope_scaling: str | None = field(
        None,
        help="RoPE scaling past the model's context (LLaMA-Factory's): linear, dynamic, yarn or llama3, by factor "
        "ceil(max_length / the model's positions); saved with the run (models/rope.py)",
    )

    def __post_init__(self) -> None:
        check_choice("dtype", self.dtype, ["auto", "bf16", "fp16", "fp32"])
        check_choice("rope_scaling", self.rope_scaling, [None, *ROPE_SCALING])
        check_choice(
            "attn_implementation",
            self.attn_implementation,
            ["auto", "temper", "sdpa", "eager", "flash_attention_2"],
        )


@dataclass
class DataCfg:
    dataset: list[str] = field(
        [], help="data file(s) or dataset_info names; FILE#N samples N rows; repeatable"
    )
    dataset_dir: str | None = field(None, help="a LLaMA-Factory style folder with dataset_info.json")
    format: str = field(
        "auto", help="row format: auto, alpaca, sharegpt, messages, query_response, swift_conversation, text"
    )
    max_samples: int | None = field(
        None, help="keep the first N rows of each dataset (LLaMA-Factory's key; FILE#N samples N at random)"
    )
    max_length: int = field(1024, help="tokens per sample (and per packed row)")
    truncation: str = field(
        "truncate", help="rows longer than max_length: truncate or drop (counted either way)"
    )
    packing: bool = field(False, help="concatenate samples into rows of max_length without cross-attention")
    padding_free: str = field(
        "auto",
        help="each batch as one row of its samples end to end, no padding and no cross-sample attention (TRL's "
        "name): auto (on when padded batches in the chosen order would be over 5% padding and the attention "
        "kernel attends per sample: temper's CPU kernel outside torch_compile, flash-attention), true or false",
    )
    train_on_prompt: bool = field(
        False, help="label the prompt tokens too (system, user turns, template), not only the replies"
    )
    mask_history: bool = field(
        False, help="label only the last assistant reply of each conversation; earlier ones are context"
    )
    mix_strategy: str | None = field(
        None,
        help="several datasets: concat (the default), interleave_under (rows alternate, or are drawn with "
        "interleave_probs, until one dataset runs out) or interleave_over (until every dataset is used whole, "
        "repeating the small ones) or interleave_once (every row once, skipping datasets that ran out); with "
        "interleave_probs alone, interleave_under",
    )
    interleave_probs: list[float] = field(
        [], help="interleaving: the chance of each dataset (in --dataset order) to give the next row; sum 1"
    )
    val_size: float = field(0.0, help="fraction (<1) or number (>=1) of rows held out for validation")
    val_dataset: list[str] = field(
        [],
        help="validation data file(s) or dataset_info names, instead of val_size (ms-swift's val_dataset, "
        "LLaMA-Factory's eval_dataset)",
    )
    system: str | None = field(None, help="system prompt used when a row has none")
    # Two values are ms-swift's (zh, en) pair: rows tagged zh (its self-cognition data) take the first.
    model_name: list[str] = field(
        [],
        help="fills {{name}} / {{NAME}} placeholders in the data; two values (ms-swift's `--model_name 小黄 "
        "'Xiao Huang'`): the first for rows tagged zh, the second for the others",
        split=False,
    )
    model_author: list[str] = field(
        [],
        help="fills {{author}} / {{AUTHOR}} placeholders in the data; two values: zh rows, others",
        split=False,
    )
    eval_dataset: str | None = field(
        None, help="general_qa: BLEU/ROUGE of generated answers on the val split"
    )

    def __post_init__(self) -> None:
        from temper.data.formats import FORMATS

        check_choice("format", self.format, ["auto", *FORMATS])
        check_data_sizes(self)
        check_choice("padding_free", str(self.padding_free).lower(), ["auto", "true", "false"])
        self.padding_free = str(self.padding_free).lower()
        if self.eval_dataset not in (None, "general_qa"):
            raise ConfigError(
                f"eval_dataset: got {self.eval_dataset!r}; temper's eval_dataset names the generation metrics run "
                "on the validation rows (general_qa).",
                hint=f"For validation rows from a file or dataset name (LLaMA-Factory's eval_dataset), write "
                f"val_dataset: {self.eval_dataset}.",
                key="eval_dataset",
            )


def check_data_sizes(data: DataCfg) -> None:
    """The checks every data section shares (the preference one names other formats): lengths, sample counts,
    and validation rows from val_size (a split of the training rows) or from val_dataset, not both."""
    check_choice("truncation", data.truncation, ["truncate", "drop"])
    check_range("max_length", data.max_length, 8, None)
    check_range("max_samples", data.max_samples, 1, None)
    check_range("val_size", data.val_size, 0, None)
    if data.mix_strategy is None:
        data.mix_strategy = "interleave_under" if data.interleave_probs else "concat"
    check_mix(data.mix_strategy, data.interleave_probs)
    for key in ("model_name", "model_author"):
        if len(getattr(data, key)) > 2:
            raise ConfigError(
                f"{key}: got {len(getattr(data, key))} values {getattr(data, key)}; expected one, or two (the zh "
                "rows' and the others', as ms-swift's --model_name 小黄 'Xiao Huang').",
                hint=f"Quote a value with spaces: --{key.replace('_', '-')} 'the temper team'.",
                key=key,
            )
    if data.val_dataset and data.val_size:
        raise ConfigError(
            f"val_size {data.val_size} and val_dataset {data.val_dataset} both give validation rows.",
            hint="Keep one: val_size splits the training data, val_dataset reads its own files.",
            key="val_size",
        )


# The Trainer's `train_sampling_strategy` values temper's SFT rows support (batch_rebalance is data-parallel only).
SAMPLING = ["group_by_length", "random", "sequential"]
# Other verbs' rows (pairs, encoder inputs) carry no single length to group by: they train in these orders.
SAMPLING_UNGROUPED = ["random", "sequential"]


@dataclass
class TrainCfg:
    SAMPLING: ClassVar[list[str]] = SAMPLING  # the orders this verb's rows can be trained in

    output_dir: str = field("runs/sft", help="run directory (created; resumed with --resume auto)")
    num_train_epochs: float = field(3.0, help="epochs over the training set")
    max_steps: int = field(-1, help="stop after this many optimizer steps (overrides epochs when > 0)")
    per_device_train_batch_size: int = field(4, help="samples (or packed rows) per device per step")
    per_device_eval_batch_size: int = field(8, help="batch size for evaluation")
    gradient_accumulation_steps: int = field(1, help="micro-batches per optimizer step")
    learning_rate: float = field(1e-4, help="peak learning rate")
    lr_scheduler_type: str = field("cosine", help="linear, cosine, constant, constant_with_warmup, ...")
    warmup_ratio: float = field(0.0, help="fraction of steps spent warming up")
    warmup_steps: float = field(
        0,
        help="steps spent warming up (overrides warmup_ratio when > 0); below 1, a ratio, as transformers 5 reads it",
    )
    weight_decay: float = field(0.0, help="AdamW weight decay")
    optim: str = field(
        "adamw_torch_fused",
        help="optimizer, by the Trainer's names: adamw_torch_fused (its default), adamw_torch, adafactor, sgd, "
        "rmsprop; paged_adamw_8bit, adamw_8bit, ... need bitsandbytes; galore_adamw, apollo_adamw (with "
        "optim_target_modules) and temper's adam_mini train full or freeze tuning; temper's badam (one layer at "
        "a time; optim_args switch_interval, switch_mode) full; temper's muon (optim_args momentum, ns_steps) any",
    )
    adam_beta1: float = field(0.9, help="Adam beta1")
    adam_beta2: float = field(0.999, help="Adam beta2")
    adam_epsilon: float = field(1e-8, help="Adam epsilon")
    max_grad_norm: float = field(1.0, help="gradient clipping norm")
    seed: int = field(42, help="seed for data sampling, init and shuffling")
    bf16: str = field("auto", help="bf16 mixed precision: auto (when the CPU/GPU supports it), true or false")
    fp16: bool = field(
        False, help="fp16 mixed precision with loss scaling (CUDA GPUs without bf16; bf16 off)"
    )
    gradient_checkpointing: bool = field(False, help="trade compute for memory (off: it costs ~30% speed)")
    neftune_noise_alpha: float | None = field(
        None, help="NEFTune: noise of this scale on the input embeddings while training (e.g. 5)"
    )
    train_sampling_strategy: str = field(
        "group_by_length",
        help="sample order (the Trainer's option): group_by_length (batches of similar length, little "
        "padding), random (the Trainer's default) or sequential (file order, as the bench's peers train)",
    )
    torch_compile: bool = field(
        False,
        help="torch.compile each decoder block (regional: one compile serves all blocks); faster steps after "
        "~30-80 s of compiling at the start; needs a C++ compiler on CPU",
    )
    logging_steps: int = field(1, help="log every N steps")
    eval_strategy: str = field(
        "auto",
        help="when to evaluate on the validation rows: auto (every eval_steps if given, else once per epoch, "
        "and once at the end), steps, epoch, or no (never: the rows stay held out, as in the Trainer)",
    )
    eval_steps: int | None = field(
        None, help="evaluate every N steps (default: once per epoch when a val split exists)"
    )
    save_steps: int | None = field(None, help="checkpoint every N steps (default: once per epoch)")
    save_total_limit: int | None = field(2, help="keep at most N checkpoints")
    early_stopping_patience: int | None = field(None, help="stop after N evaluations without improvement")
    resume: str | None = field(None, help="auto (last checkpoint in output_dir), a checkpoint path, or none")
    num_threads: int | None = field(None, help="CPU threads for torch (default: torch's choice)")
    report_to: list[str] = field(["none"], help="Trainer integrations: none, tensorboard, wandb, ...")
    overwrite_output_dir: bool = field(False, help="allow writing into a non-empty run dir without resuming")
    trainer_args: dict[str, Any] = field(
        {},
        help="any other TrainingArguments option, passed to the Trainer as given (a top-level key works too: "
        "save_strategy: steps, lr_scheduler_kwargs: {min_lr: 1e-6}, optim_args, data_seed, ...)",
    )

    def __post_init__(self) -> None:
        check_choice("bf16", str(self.bf16).lower(), ["auto", "true", "false"])
        check_choice("train_sampling_strategy", self.train_sampling_strategy, self.SAMPLING)
        self.bf16 = str(self.bf16).lower()
        if self.fp16 and self.bf16 == "true":
            raise ConfigError(
                "fp16 and bf16 are both true; mixed precision takes one of them.",
                hint="Keep bf16 (GPUs with bf16, recent CPUs) or fp16 (older GPUs), not both.",
                key="fp16",
            )
        check_range("learning_rate", self.learning_rate, 0, 1)
        check_range("per_device_train_batch_size", self.per_device_train_batch_size, 1, None)
        check_range("gradient_accumulation_steps", self.gradient_accumulation_steps, 1, None)
        if not 0 <= self.warmup_ratio < 1:  # transformers reads a float >= 1 as a step count
            raise ConfigError(
                f"warmup_ratio: got {self.warmup_ratio!r}, expected a fraction in [0, 1).",
                hint="Use warmup_steps to give a number of steps.",
                key="warmup_ratio",
            )
        check_range("warmup_steps", self.warmup_steps, 0, None)
        if self.warmup_steps >= 1 and not float(self.warmup_steps).is_integer():
            raise ConfigError(
                f"warmup_steps: got {self.warmup_steps!r}; a number of steps is whole (below 1 it is a ratio).",
                key="warmup_steps",
            )
        if float(self.warmup_steps).is_integer():
            self.warmup_steps = int(self.warmup_steps)
        check_range("per_device_eval_batch_size", self.per_device_eval_batch_size, 1, None)
        check_choice("eval_strategy", self.eval_strategy, ["auto", "steps", "epoch", "no"])
        if self.eval_strategy == "no" and self.early_stopping_patience:
            raise ConfigError(
                f"eval_strategy: no, but early_stopping_patience {self.early_stopping_patience} needs evaluations.",
                hint="Drop eval_strategy no (temper then evaluates every eval_steps, or once per epoch).",
                key="eval_strategy",
            )
        # None is "the default" for these; 0 would have read as None (or, for logging, failed in the Trainer).
        for key in (
            "logging_steps",
            "eval_steps",
            "save_steps",
            "save_total_limit",
            "early_stopping_patience",
        ):
            check_range(key, getattr(self, key), 1, None)
        if self.max_steps <= 0 and self.num_train_epochs <= 0:
            raise ConfigError(
                f"num_train_epochs: got {self.num_train_epochs!r} with no max_steps, so nothing would train.",
                hint="Give a positive --num-train-epochs (e.g. 1) or --max-steps N.",
                key="num_train_epochs",
            )
        check_range("neftune_noise_alpha", self.neftune_noise_alpha, 0, None)
        check_range("adam_beta1", self.adam_beta1, 0, 1)
        check_range("adam_beta2", self.adam_beta2, 0, 1)
        check_range("adam_epsilon", self.adam_epsilon, 0, None)


@dataclass
class SFTTrainCfg(TrainCfg):
    use_dft_loss: bool = field(
        False,
        help="DFT (dynamic fine-tuning): each label token's loss weighted by the model's own probability of it "
        "(not differentiated); LLaMA-Factory's use_dft_loss, ms-swift's enable_dft_loss",
    )
    compute_accuracy: bool = field(
        False,
        help="evaluation also reports eval_accuracy: the share of label tokens the model predicts (argmax)",
    )
    use_eaft_loss: bool = field(
        False,
        help="EAFT (entropy-aware fine-tuning): each label token's loss weighted by (the entropy of the model's "
        "top-20 next-token probabilities / 3) ** eaft_alpha, not differentiated; LLaMA-Factory's use_eaft_loss",
    )
    eaft_alpha: float = field(1.0, help="EAFT: the power of its weight")
    use_asft_loss: bool = field(
        False,
        help="ASFT (anchored SFT): DFT's loss + asft_alpha x KL(starting model || model) at each label token; "
        "the starting model is a frozen copy (LoRA: the model with its adapters off); LLaMA-Factory's use_asft_loss",
    )
    asft_alpha: float = field(0.1, help="ASFT: the weight of its KL term")
    label_smoothing_factor: float = field(
        0.0,
        help="label smoothing e of the loss: (1 - e) x CE + e x the mean over the vocabulary of -log p (the "
        "Trainer's, LLaMA-Factory's and ms-swift's label_smoothing_factor)",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("label_smoothing_factor", self.label_smoothing_factor, 0, 1)
        losses = ("use_dft_loss", "use_eaft_loss", "use_asft_loss", "label_smoothing_factor")
        chosen = [k for k in losses if getattr(self, k)]
        if len(chosen) > 1:
            raise ConfigError(
                f"{' and '.join(chosen)}: each reshapes the per-token loss its own way; temper does not combine them.",
                hint="Use one of them.",
                key=chosen[-1],
            )


class SFTConfig(ComposedConfig):
    """Configuration of `temper sft` (see `temper sft --help`)."""

    VERB = "sft"
    SECTIONS = {"model": ModelCfg, "data": DataCfg, "tune": TuneCfg, "train": SFTTrainCfg, "dist": DistCfg}
    model: ModelCfg
    data: DataCfg
    tune: TuneCfg
    train: SFTTrainCfg
    dist: DistCfg

"""Keys of LLaMA-Factory and ms-swift configs that temper reads although they are not its own fields.

A LLaMA-Factory YAML file (`stage: sft`, `do_train: true`, `template: chatml`, `plot_loss: true`, ...) should
train under `temper sft` as it is, without temper pretending to honour what it does not do. So each such key is
one of three things here:

- translated: the same setting under temper's name and spelling (`torch_dtype: bfloat16` -> `dtype: bf16`);
- accepted and named: the key changes nothing in temper (the behaviour is already temper's, or the knob does not
  exist here), and the run starts by saying so once, e.g. "ignored: plot_loss (temper always writes loss.png)";
- refused: a value temper cannot honour is a ConfigError that says what to write instead (`stage: dpo` given to
  `temper sft`).

Everything else that is not a field is still an unknown key with the closest valid one suggested (base.py).
"""

from __future__ import annotations

import functools
from typing import Any

from temper.errors import ConfigError

# key -> why it has no effect in temper. Any value is accepted (most are performance knobs of the peers'
# preprocessing or logging that temper does its own way).
IGNORED: dict[str, str] = {
    "trust_remote_code": "temper never runs code shipped in a model folder; architectures that transformers "
    "ships load without it",
    "do_train": "training is what this verb does",
    "overwrite_cache": "temper keeps no cache of preprocessed data; each run tokenizes its rows",
    "preprocessing_num_workers": "rows are converted and tokenized in the training process",
    "dataloader_num_workers": "batches are cut from rows tokenized up front, in the training process",
    "plot_loss": "temper always writes loss.png into the run directory",
    "ddp_timeout": "the launcher's default collective timeout applies",
    "pissa_convert": "temper always saves a PiSSA adapter converted to a plain LoRA over the original base",
    **dict.fromkeys(
        ("include_mfu", "mfu_profile_every", "mfu_warmup_steps"),
        "temper's bench/sft.py measures MFU against this machine's matmul ceiling",
    ),
    "cache_dir": "temper loads models from local dirs and the Hugging Face cache, offline",
    "force_file_system_sharing": "batches are built in the training process",
    **dict.fromkeys(
        ("placement_strategy", "resources_per_worker"),
        "temper launches with torchrun (--nproc, --nnodes), not Ray",
    ),
    "streaming": "temper reads local data files whole (their rows are converted and checked up front)",
    "tokenized_path": "temper keeps no tokenized copy of the data; each run tokenizes its rows",
    "lazy_tokenize": "rows are tokenized up front, in the training process",
    "include_num_input_tokens_seen": "temper counts trained tokens itself (tokens/s, the manifest)",
    "save_only_model": "checkpoints keep the optimizer state so that --resume auto continues the same curve",
    "do_eval": "temper evaluates whenever there is validation data (val_size), unless eval_strategy is no",
    "dataset_num_proc": "rows are converted and tokenized in the training process",
    "load_from_cache_file": "temper keeps no cache of preprocessed data; each run tokenizes its rows",
    "add_version": "temper writes into output_dir itself, without a v0-<time> subfolder",
    "infer_backend": "temper decodes with its own engine",
    "eval_backend": "temper scores with its own evaluators (EvalScope's definitions, see docs/eval.md)",
    # TrainingArguments options that temper sets itself (every other one passes to the Trainer: trainer_field)
    "disable_tqdm": "temper draws its own progress bar",
    "use_cpu": "temper trains on the GPU when there is one, else on the CPU",
    "local_rank": "the launcher sets each process's rank",
    **dict.fromkeys(
        ("activation_checkpointing_kwargs", "gradient_checkpointing_kwargs"),
        "temper's gradient_checkpointing is the non-reentrant kind",
    ),
    **dict.fromkeys(
        ("hub_token", "hub_private_repo", "hub_model_id", "hub_strategy", "hub_always_push", "hub_revision"),
        "temper never uploads (it runs offline)",
    ),
}

# Peer keys for methods temper does not have: harmless at their "off" values (named once, like IGNORED), and a
# ConfigError when they ask for the method. key -> (off values, what is missing, what to do instead).
_OPTIMIZER = (
    "Train with the Trainer's optimizers (--optim adamw_torch_fused, adafactor, adamw_8bit, ...); to save "
    "memory, train LoRA (the default) or QLoRA (--quantization 4bit)"
)
_SWITCH = "expected true or false"  # their true values are config/optim_keys.py's, read first
UNSUPPORTED: dict[str, tuple[tuple[str, ...], str, str]] = {
    "use_galore": (("false",), _SWITCH, _OPTIMIZER),
    "use_apollo": (("false",), _SWITCH, _OPTIMIZER),
    "use_badam": (("false",), _SWITCH, _OPTIMIZER),
    "use_adam_mini": (("false",), _SWITCH, _OPTIMIZER),
    "use_muon": (("false",), _SWITCH, _OPTIMIZER),
    "shift_attn": (
        ("false",),
        "LongLoRA's shifted sparse attention is not in temper",
        "Train long rows with --gradient-checkpointing",
    ),
    "create_new_adapter": (
        ("false",),
        "temper continues the adapter of adapter_name_or_path",
        "For a new adapter over it, merge first (temper export RUN --merge --output-dir DIR) and train on DIR",
    ),
    "new_special_tokens": (
        ("none", ""),
        "temper does not add tokens to a tokenizer while training",
        "Add them to the model directory's tokenizer, and resize its embeddings, before training",
    ),
    "resize_vocab": (
        ("false",),
        "temper does not resize a model's vocabulary while training",
        "Resize the embeddings in the model directory before training",
    ),
    "sequence_parallel_size": (
        ("1",),
        "temper has no sequence parallelism",
        "Train long rows with --gradient-checkpointing, or DeepSpeed ZeRO-3 with offload (--deepspeed "
        "zero3_offload)",
    ),
    "freeze_parameters_ratio": (
        ("0", "0.0"),
        "temper freezes by layers, not by a ratio of parameters",
        "Train the last N layers: --tuning freeze --freeze-trainable-layers N",
    ),
    "init_weights": (
        ("true",),
        "temper's LoRA starts as peft's default (B = 0), or from PiSSA; other initialisations are not in temper",
        "init_weights: pissa or pissa_niter_N is temper's PiSSA (pissa_init: true, pissa_iter: -1 or N)",
    ),
    "lora_bias": (("none", "false"), "temper's LoRA layers have no bias of their own", ""),
    "mixture_of_depths": (("none", "false"), "Mixture-of-Depths conversion is not in temper", ""),
    "use_ray": (("false",), "temper launches with torchrun, not Ray", "Train on N processes with --nproc N"),
    "pref_bco_weight": (("0", "0.0"), "the BCO term of LLaMA-Factory's DPO is not in temper", ""),
    "ld_alpha": (("none",), "LD-DPO's length weighting is not in temper", ""),
    "enable_thinking": (
        ("true",),
        "temper renders a chat template with its own defaults (a thinking template keeps thinking on)",
        "",
    ),
    # TrainingArguments options that temper sets itself
    "push_to_hub": (("false",), "temper never uploads (it runs offline)", "Upload OUTPUT_DIR yourself"),
    "remove_unused_columns": (
        ("false",),
        "temper's collators build exactly the inputs its objectives read, so no column is ever removed",
        "",
    ),
    "label_names": (("none", "[]"), "temper's objectives read their own labels", ""),
    "length_column_name": (("none", "length"), "temper groups rows by their token counts", ""),
    "label_smoothing_factor": (
        ("0", "0.0"),
        "temper's objectives compute the loss themselves; the Trainer's label smoothing would not apply",
        "",
    ),
    "fsdp": (
        ("", "none", "false", "[]"),
        "temper launches FSDP itself",
        "Write distributed: fsdp (--distributed fsdp)",
    ),
    "fsdp_config": (
        ("none", "{}"),
        "temper launches FSDP itself",
        "Write distributed: fsdp (--distributed fsdp)",
    ),
}
# Peer speed kernels: the computation is the same without them, so asking for them changes nothing here.
KERNELS = ("use_unsloth", "use_unsloth_gc", "enable_liger_kernel", "use_liger_kernel", "liger_kernel_config",
           "use_cce")  # fmt: skip
# Settings of methods that are off or not in temper: named and ignored (on, use_galore, use_apollo and use_badam are
# translated by config/optim_keys.py before this module sees their keys).
METHOD_SETTINGS = ("galore_", "apollo_", "badam_", "ray_", "llamapro_")


def _pref_loss(loss: str, verb: str, source: str) -> tuple[str | None, Any, str | None]:
    """LLaMA-Factory's pref_loss: DPO's loss (sigmoid, hinge, ipo) or the variant it trains (orpo, simpo)."""
    if loss in ("sigmoid", "hinge", "ipo"):
        return "loss_type", loss, None
    if loss in ("orpo", "simpo"):
        if verb == loss:
            return None, None, None
        raise ConfigError(
            f"{source}: pref_loss: {loss} trains {loss.upper()}, and this is `temper {verb}`.",
            hint=f"Run `temper {loss} {source}`.",
            key="pref_loss",
        )
    raise ConfigError(
        f"{source}: pref_loss: got {loss!r}; temper trains sigmoid (DPO), hinge, ipo, orpo and simpo.",
        hint="kto_pair: train KTO on unpaired rows with `temper kto`.",
        key="pref_loss",
    )


def trainer_field(key: str) -> bool:
    """Whether `key` is a TrainingArguments option that temper passes to the Trainer as given."""
    return key in _trainer_fields()


@functools.cache
def _trainer_fields() -> frozenset[str]:
    import dataclasses

    from transformers import TrainingArguments  # only when a config has a key temper does not know

    return frozenset(f.name for f in dataclasses.fields(TrainingArguments) if f.init)


# LLaMA-Factory's `stage` -> the temper verbs that train it (its stage dpo covers its pref_loss variants).
STAGES: dict[str, tuple[str, ...]] = {
    "sft": ("sft",),
    "pt": ("sft",),  # plain-text rows (format text) are continued pre-training under sft
    "dpo": ("dpo", "orpo", "simpo", "cpo"),
    "kto": ("kto",),
    "rm": ("rm",),
}

# torch / transformers dtype names (and temper's own) -> temper's dtype names.
DTYPES = {"bfloat16": "bf16", "float16": "fp16", "half": "fp16", "float32": "fp32", "float": "fp32",
          "bf16": "bf16", "fp16": "fp16", "fp32": "fp32"}  # fmt: skip
# Peer keys whose values name one of temper's: key -> (temper key, {peer value: temper value}, hint when the
# value is none of them). The attention switches of LLaMA-Factory (flash_attn, its newer attn) and ms-swift
# (attn_impl, None = its automatic choice); ms-swift's interleaving stop and over-long-row policy.
_ATTENTION_HINT = "Or write temper's attn_implementation: auto, temper, sdpa, eager or flash_attention_2."
_FLASH_ATTN = {"auto": "auto", "sdpa": "sdpa", "disabled": "eager", "fa2": "flash_attention_2"}
VALUE_MAPS: dict[str, tuple[str, dict[str, str], str]] = {
    "flash_attn": ("attn_implementation", _FLASH_ATTN, _ATTENTION_HINT),
    "attn": ("attn_implementation", {**_FLASH_ATTN, "eager": "eager"}, _ATTENTION_HINT),
    "attn_impl": (
        "attn_implementation",
        {"None": "auto", "flash_attn": "flash_attention_2", "flash_attention_2": "flash_attention_2",
         "sdpa": "sdpa", "eager": "eager"},
        _ATTENTION_HINT,
    ),
    "stopping_strategy": (
        "mix_strategy",
        {"first_exhausted": "interleave_under", "all_exhausted": "interleave_over"},
        "first_exhausted stops when one dataset runs out (mix_strategy interleave_under), all_exhausted when "
        "every one was used whole (interleave_over).",
    ),
    "truncation_strategy": (
        "truncation",
        {"delete": "drop", "right": "truncate"},
        "Write truncation_strategy: delete (drop an over-long row) or right (cut its end): temper's truncation "
        "drop or truncate.",
    ),
}  # fmt: skip


def is_true(value: Any) -> bool:
    """A peer's boolean as YAML or a command line gives it (true, 1, yes)."""
    return str(value).strip().lower() in ("true", "1", "yes")


def translate(key: str, value: Any, verb: str, source: str) -> tuple[str | None, Any, str | None]:
    """(temper key or None to drop it, value, note to print or None) for a key that is not a field.

    Keys this module does not know come back unchanged, for the caller's unknown-key error.
    """
    if key == "do_train" and str(value).lower() in ("false", "0", "no"):
        raise ConfigError(
            f"{source}: do_train: false asks for no training, and `temper {verb}` trains.",
            hint="Remove do_train, or evaluate a run with `temper eval RUN_DIR`.",
            key="do_train",
        )
    if key == "do_predict" and is_true(value):
        raise ConfigError(
            f"{source}: do_predict asks for predictions on eval_dataset, and `temper {verb}` trains.",
            hint=f"Predict with temper infer {source} (its model, adapter, eval_dataset and output_dir); with "
            "do_train too, train first (temper sft without do_predict), then predict with the run as adapter.",
            key="do_predict",
        )
    if key == "do_predict":
        return None, None, "ignored: do_predict false (training is what this verb does)"
    if key in IGNORED:
        return None, None, f"ignored: {key} ({IGNORED[key]})"
    if key == "activation_checkpointing":  # transformers 5's name of gradient_checkpointing
        return "gradient_checkpointing", value, None
    if key in UNSUPPORTED:
        off, missing, instead = UNSUPPORTED[key]
        if value is None or str(value).strip().lower() in off:
            return None, None, f"ignored: {key} {value} (off: the default)"
        raise ConfigError(
            f"{source}: {key}: {value!r}: {missing}.",
            hint=f"{instead}; or remove {key}." if instead else f"Remove {key}.",
            key=key,
        )
    if key.startswith(METHOD_SETTINGS):
        return None, None, f"ignored: {key} (a setting of a method that is off, or not in temper)"
    if key == "pref_loss":  # LLaMA-Factory's stage dpo trains its variants by this key
        return _pref_loss(str(value), verb, source)
    if key == "pref_ftx":  # LLaMA-Factory's SFT term in DPO: temper's (and TRL's) rpo_alpha
        if float(value) == 0:
            return None, None, None
        return (
            "rpo_alpha",
            value,
            (
                "pref_ftx -> rpo_alpha (temper averages the chosen replies' NLL over the batch's tokens; "
                "LLaMA-Factory over each reply, then the batch)"
            ),
        )
    if key == "pure_bf16":  # LLaMA-Factory's: bf16 weights, no fp32 copy (temper's dtype bf16)
        return ("dtype", "bf16", None) if is_true(value) else (None, None, None)
    if key == "group_by_length":  # the Trainer's (transformers 4) and LLaMA-Factory's switch
        order = "group_by_length" if is_true(value) else "random"
        return "train_sampling_strategy", order, None
    if key in KERNELS:
        return (
            None,
            None,
            (
                f"ignored: {key} (another project's fused kernels: the same computation; temper's own fused loss "
                "head and RMSNorm run on CPU)"
            ),
        )
    if key == "disable_gradient_checkpointing":  # LLaMA-Factory's: its runs checkpoint unless this is true
        return "gradient_checkpointing", not is_true(value), None
    if key in ("quantization_bit", "quant_bits"):  # LLaMA-Factory's and ms-swift's QLoRA bits
        if value is None or str(value).lower() == "none":
            return None, None, None
        if str(value) not in ("4", "8"):
            raise ConfigError(
                f"{source}: {key}: got {value!r}; temper's QLoRA quantizes to 4 or 8 bits (bitsandbytes).",
                hint=f"Write {key}: 4 (NF4) or 8.",
                key=key,
            )
        return "quantization", f"{value}bit", None
    if key in ("quantization_method", "quant_method"):
        if str(value).lower() in ("bnb", "bitsandbytes", "none"):
            return None, None, None  # bitsandbytes is temper's (only) training-time quantization
        raise ConfigError(
            f"{source}: {key}: got {value!r}; temper's QLoRA quantizes with bitsandbytes (bnb) only.",
            hint=f"Write {key}: bnb, or remove it.",
            key=key,
        )
    if key == "loss_scale":  # ms-swift's: which tokens of a conversation are labelled
        labelled = {"default": None, "last_round": "mask_history", "all": "train_on_prompt"}
        if str(value) not in labelled:
            raise ConfigError(
                f"{source}: loss_scale: got {value!r}; temper labels by default (every reply), last_round "
                "(mask_history) or all (train_on_prompt).",
                key="loss_scale",
            )
        target = labelled[str(value)]
        return (target, True, None) if target else (None, None, None)
    if key == "stage":
        stage = str(value)
        verbs = STAGES.get(stage)
        if verbs is None:
            raise ConfigError(
                f"{source}: stage {stage!r} has no temper verb.",
                hint=f"temper trains the stages {', '.join(STAGES)}; see `temper --help` for the verbs.",
                key="stage",
            )
        if verb not in verbs:
            raise ConfigError(
                f"{source}: stage {stage!r} is not what `temper {verb}` trains.",
                hint=f"Run `temper {verbs[0]}` with this config, or remove `stage`.",
                key="stage",
            )
        return None, None, None  # it agrees with the verb: nothing to say
    if key == "torch_dtype":  # transformers' / ms-swift's spelling of the weights dtype
        return "dtype", DTYPES.get(str(value), value), None
    if key in VALUE_MAPS:
        target, values, hint = VALUE_MAPS[key]
        if str(value) not in values:
            raise ConfigError(
                f"{source}: {key}: got {value!r}, expected one of {list(values)}.", hint=hint, key=key
            )
        return target, values[str(value)], None
    if key == "neat_packing":  # LLaMA-Factory's packing without cross-sample attention: temper's only kind
        return "packing", value, None
    return key, value, None

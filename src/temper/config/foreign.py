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
    "include_num_input_tokens_seen": "temper counts trained tokens itself (tokens/s, the manifest)",
    "save_only_model": "checkpoints keep the optimizer state so that --resume auto continues the same curve",
    "eval_strategy": "temper evaluates every eval_steps, or once per epoch, whenever there is validation data "
    "(val_size)",
    "do_eval": "temper evaluates whenever there is validation data (val_size)",
    "dataset_num_proc": "rows are converted and tokenized in the training process",
    "load_from_cache_file": "temper keeps no cache of preprocessed data; each run tokenizes its rows",
    "add_version": "temper writes into output_dir itself, without a v0-<time> subfolder",
    "infer_backend": "temper decodes with its own engine",
    "eval_backend": "temper scores with its own evaluators (EvalScope's definitions, see docs/eval.md)",
}

# LLaMA-Factory's `stage` -> the temper verbs that train it (its stage dpo covers its pref_loss variants).
STAGES: dict[str, tuple[str, ...]] = {
    "sft": ("sft",),
    "pt": ("sft",),  # plain-text rows (format text) are continued pre-training under sft
    "dpo": ("dpo", "orpo", "simpo", "cpo"),
    "kto": ("kto",),
    "rm": ("rm",),
}

_DTYPES = {"bfloat16": "bf16", "float16": "fp16", "half": "fp16", "float32": "fp32", "float": "fp32"}
# The attention switches of LLaMA-Factory (flash_attn) and ms-swift (attn_impl, None = its automatic choice):
# their values -> temper's attn_implementation.
_ATTENTION: dict[str, dict[str, str]] = {
    "flash_attn": {"auto": "auto", "sdpa": "sdpa", "disabled": "eager", "fa2": "flash_attention_2"},
    "attn_impl": {"None": "auto", "flash_attn": "flash_attention_2", "flash_attention_2": "flash_attention_2",
                  "sdpa": "sdpa", "eager": "eager"},
}  # fmt: skip


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
    if key == "do_predict" and str(value).lower() in ("true", "1", "yes"):
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
        return "dtype", _DTYPES.get(str(value), value), None
    if key in _ATTENTION:
        table = _ATTENTION[key]
        if str(value) not in table:
            raise ConfigError(
                f"{source}: {key}: got {value!r}, expected one of {list(table)}.",
                hint="Or write temper's attn_implementation: auto, temper, sdpa, eager or flash_attention_2.",
                key=key,
            )
        return "attn_implementation", table[str(value)], None
    if key == "neat_packing":  # LLaMA-Factory's packing without cross-sample attention: temper's only kind
        return "packing", value, None
    return key, value, None

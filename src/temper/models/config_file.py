"""A LLaMA-Factory inference YAML (what `llamafactory-cli chat|api FILE.yaml` reads) as the model of `temper
chat`, `infer` and `serve`: its base, its adapter and its template, nothing pretended.

    model_name_or_path: smollm2-135m-instruct
    adapter_name_or_path: saves/smollm2/lora/sft
    template: smollm2
    infer_backend: huggingface

`temper export FILE.yaml` reads LLaMA-Factory's export YAML (`llamafactory-cli export FILE.yaml`) the same way,
plus its export keys (EXPORT_KEYS): the merged model goes to `export_dir`. And an ms-swift checkpoint's args.json
gives the chat template and system prompt it trained with (use_swift_template).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from temper.config.foreign import DTYPES
from temper.errors import ConfigError, ModelNotFoundError

if TYPE_CHECKING:
    from temper.models.load import ModelRef

log = logging.getLogger(__name__)

# key -> what it sets (temper's own spellings are read too).
KEYS: dict[str, str] = {
    "model_name_or_path": "model",
    "model": "model",
    "adapter_name_or_path": "adapter",
    "adapter": "adapter",
    "template": "template",
    "default_system": "system",  # the system prompt of conversations without one
    "system": "system",
}
# key -> why it changes nothing here; named once when the file is read.
IGNORED: dict[str, str] = {
    "infer_backend": "temper decodes with its own engine",
    "trust_remote_code": "temper never runs code shipped in a model folder",
    "infer_dtype": "pass --dtype",
    "finetuning_type": "the adapter's own adapter_config.json says what it is",
}
# LLaMA-Factory's export keys -> temper export's option.
EXPORT_KEYS: dict[str, str] = {
    "export_dir": "output_dir",
    "export_size": "max_shard_size",  # GB per weights file
    "infer_dtype": "dtype",
    "export_legacy_format": "legacy_format",
}
EXPORT_IGNORED: dict[str, str] = {
    "export_device": "temper merges on the CPU, in fp32",
}
# Export keys temper cannot do -> what to do instead (an error, not a silent merge without them).
EXPORT_REFUSED: dict[str, str] = {
    **dict.fromkeys(
        (
            "export_quantization_bit",
            "export_quantization_dataset",
            "export_quantization_nsamples",
            "export_quantization_maxlen",
        ),
        "temper does not write GPTQ. Merge first, then quantize: temper export MERGED --quantize "
        "int8|bnb-4bit|bnb-8bit|hqq-4bit, or --gguf q8_0|q4_0 for llama.cpp and Ollama.",
    ),
    **dict.fromkeys(
        ("export_hub_model_id", "hf_hub_token"),
        "temper never uploads (it runs offline). Upload export_dir yourself: hf upload REPO_ID EXPORT_DIR.",
    ),
}
# LLaMA-Factory's batch-prediction YAML (`llamafactory-cli train FILE.yaml` with do_predict: true) -> the
# options of `temper infer FILE.yaml`; unset generation keys take LLaMA-Factory's defaults (PREDICT_DEFAULTS).
PREDICT_KEYS: dict[str, str] = {
    "eval_dataset": "eval_dataset",
    "dataset_dir": "dataset_dir",
    "max_samples": "max_samples",
    "output_dir": "output_dir",
    "cutoff_len": "cutoff_len",
    "per_device_eval_batch_size": "max_batch_size",
    "do_sample": "do_sample",
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "max_new_tokens": "max_tokens",
    "repetition_penalty": "repetition_penalty",
    "seed": "seed",
}
# The generation keys of LLaMA-Factory's chat YAML (its generating_args): the sampling of `temper chat|infer
# FILE.yaml` when no flag says otherwise.
GENERATION_KEYS: dict[str, str] = {
    k: v
    for k, v in PREDICT_KEYS.items()
    if v in ("do_sample", "temperature", "top_p", "top_k", "max_tokens", "repetition_penalty")
}
PREDICT_DEFAULTS: dict[str, Any] = {
    "do_sample": True,
    "temperature": 0.95,
    "top_p": 0.7,
    "top_k": 50,
    "max_tokens": 1024,
    "repetition_penalty": 1.0,
    "max_batch_size": 8,
    "cutoff_len": 2048,
}
PREDICT_IGNORED: dict[str, str] = {
    "stage": "prediction is what temper infer does",
    "do_predict": "prediction is what temper infer does",
    "do_train": "false here; training is temper sft",
    "predict_with_generate": "temper's predictions are always generated",
    "overwrite_output_dir": "generated_predictions.jsonl is resumed; delete it to start over",
    "overwrite_cache": "nothing is cached",
    "preprocessing_num_workers": "rows are read in this process",
    "dataloader_num_workers": "rows are read in this process",
    "report_to": "nothing is logged during prediction",
    "ddp_timeout": "one process",
    "bf16": "pass --dtype",
    "fp16": "pass --dtype",
}


def is_config_file(name: str | Path) -> bool:
    path = Path(name)
    return path.suffix in (".yaml", ".yml") and path.is_file()


def config_not_model(path: Path) -> ModelNotFoundError:
    """For the verbs that take a model and not such a file (export, training): the error naming the model in it."""
    from temper.config.base import load_yaml

    names = {KEYS[k]: str(v) for k, v in load_yaml(path).items() if k in KEYS}
    if "adapter" in names:
        hint = f"Pass the adapter dir it names: {names['adapter']} (temper finds the base in its adapter_config.json)."
    elif "model" in names:
        hint = f"Pass the model it names: {names['model']}."
    else:
        hint = "Pass a bundled alias, a local model dir, a run dir or an adapter dir."
    return ModelNotFoundError(
        f"{path} is a config file, not a model; this verb takes the model itself.", hint=hint
    )


@dataclass
class ModelConfigFile:
    """What a LLaMA-Factory inference or export YAML names: the model (base + adapter), its template, the
    export options by temper's names (export files only) and the notes to print (keys that change nothing)."""

    ref: ModelRef
    template: str | None
    system: str | None = None
    notes: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)


def read_inference_config(path: str | Path) -> ModelConfigFile:
    """The model an inference YAML (`llamafactory-cli chat|api FILE.yaml`) names, and its generation keys
    (GENERATION_KEYS, by temper's names) in options."""
    return _read(path, GENERATION_KEYS, IGNORED, {}, what="sampling")


def is_predict_config(path: str | Path) -> bool:
    """A YAML that asks for predictions on a dataset (LLaMA-Factory's do_predict / eval_dataset)."""
    from temper.config.base import load_yaml

    return is_config_file(path) and bool({"do_predict", "eval_dataset"} & set(load_yaml(path)))


def read_predict_config(path: str | Path) -> ModelConfigFile:
    """The model and prediction options of a LLaMA-Factory predict YAML; options holds every PREDICT_DEFAULTS
    key (the YAML's value, else LLaMA-Factory's default) and `defaulted`, the keys the YAML left unset."""
    from temper.config.base import load_yaml

    values = load_yaml(path)
    if str(values.get("do_train", False)).lower() in ("true", "1", "yes"):
        raise ConfigError(
            f"{path}: do_train and do_predict together: temper trains and predicts in two steps.",
            hint=f"Train with temper sft (do_train, no do_predict), then predict: temper infer {path} with "
            "adapter_name_or_path set to the run dir.",
            key="do_train",
        )
    ignored = {k: v for k, v in IGNORED.items() if k not in PREDICT_KEYS}
    config = _read(path, PREDICT_KEYS, {**ignored, **PREDICT_IGNORED}, {}, what="prediction")
    options = config.options
    if not options.get("eval_dataset"):
        raise ConfigError(
            f"{path}: do_predict needs eval_dataset, the rows to answer.",
            hint="eval_dataset: NAME[,NAME] (with dataset_dir) or a data file.",
        )
    options["defaulted"] = [k for k in PREDICT_DEFAULTS if k not in options]
    options.update({k: v for k, v in PREDICT_DEFAULTS.items() if k not in options})
    return config


def read_export_config(path: str | Path) -> ModelConfigFile:
    """The model and export options of an export YAML (`llamafactory-cli export FILE.yaml`)."""
    ignored = {k: v for k, v in IGNORED.items() if k not in EXPORT_KEYS}
    config = _read(path, EXPORT_KEYS, {**ignored, **EXPORT_IGNORED}, EXPORT_REFUSED)
    options = config.options
    if "max_shard_size" in options:
        options["max_shard_size"] = _shard_size(path, options["max_shard_size"])
    if "dtype" in options:
        dtype = str(options.pop("dtype"))
        if dtype == "auto":
            config.notes.append(
                "ignored: infer_dtype auto (the merge is saved in fp32; pass --dtype bf16 for half)"
            )
        elif dtype in DTYPES:
            options["dtype"] = DTYPES[dtype]
        else:
            raise ConfigError(
                f"{path}: infer_dtype {dtype!r} is not a dtype.",
                hint=f"Use one of: auto, {', '.join(DTYPES)}.",
            )
    if options.pop("legacy_format", False) not in (False, "false", "False"):
        raise ConfigError(
            f"{path}: export_legacy_format true asks for pickle .bin weights.",
            hint="temper writes safetensors only (a pickle file can run code when loaded); set it to false.",
        )
    return config


def _shard_size(path: str | Path, value: Any) -> str:
    """export_size is whole GB per weights file (LLaMA-Factory's default 5); --max-shard-size takes '5GB'."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(
            f"{path}: export_size {value!r} is not a size in GB.", hint="export_size: 5 (GB per file)."
        )
    return f"{value}GB"


def _read(
    path: str | Path,
    option_keys: dict[str, str],
    ignored: dict[str, str],
    refused: dict[str, str],
    what: str = "export",
) -> ModelConfigFile:
    from temper.config.base import load_yaml
    from temper.models.load import resolve_model

    values = load_yaml(path)
    settings: dict[str, str] = {}
    options: dict[str, Any] = {}
    notes: list[str] = []
    for key, value in values.items():
        if key in refused:
            raise ConfigError(f"{path}: {key} is not something temper does.", hint=refused[key], key=str(key))
        if key in option_keys:
            options[option_keys[key]] = value
        elif key in ignored:
            notes.append(f"ignored: {key} ({ignored[key]})")
        elif key in KEYS:  # a list (ms-swift's `adapters: [DIR]`) is LLaMA-Factory's comma-separated one
            settings[KEYS[key]] = ",".join(map(str, value)) if isinstance(value, list) else str(value)
        else:
            raise ConfigError(
                f"{path}: unknown key {key!r} for a model config.",
                hint=f"This file names the model: {', '.join(KEYS)}"
                + (f"; {what} options: {', '.join(option_keys)}" if option_keys else "")
                + f" (and {', '.join(ignored)}, ignored); "
                + (
                    "the export method is a flag (--gguf, --quantize, --onnx; a merge by default)."
                    if what == "export"
                    else "other options are flags (--stop, --seed, ...)."
                ),
                key=str(key),
            )
    if "model" not in settings:
        raise ConfigError(
            f"{path}: no model_name_or_path.", hint="Name the base model: model_name_or_path: MODEL."
        )
    ref = resolve_model(settings["model"], settings.get("adapter"))
    return ModelConfigFile(ref, settings.get("template"), settings.get("system"), notes, options)


def use_swift_template(tok: Any, adapter_dir: Path) -> None:
    """Give `tok` the chat template an ms-swift checkpoint trained with: its args.json names the template and
    the default system prompt (`--template chatml --system ...`). ms-swift's `chatml` has no default system
    prompt where SmolLM2's own template has one, so the model's own template would render a prompt the adapter
    never saw. Other ms-swift template names are the model family's own format: the model's template is kept.
    A dir without ms-swift's args.json is left as it is."""
    from temper.data.templates import TEMPLATES, prepare_tokenizer

    path = adapter_dir / "args.json"
    try:
        args = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, json.JSONDecodeError):
        return
    if not isinstance(args, dict) or "template" not in args or "template_backend" not in args:
        return  # not ms-swift's
    name, system = args.get("template"), args.get("system")
    # Only chatml is the same format under the same name: ms-swift's `default` (`### Human:` / `### Assistant:`)
    # is not temper's `default` (LLaMA-Factory's), so names are not looked up in TEMPLATES.
    chatml = name == "chatml" and all(t in tok.get_vocab() for t in TEMPLATES["chatml"][1])
    template = "chatml" if chatml else None
    if template or system is not None:
        prepare_tokenizer(tok, template, system if isinstance(system, str) else None)
        log.warning(
            "chat template: ms-swift's %s%s, which %s trained with (its args.json)",
            name if template else "(the model's own)",
            f", system prompt {system!r}" if system else "",
            adapter_dir,
        )

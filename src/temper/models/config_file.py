"""A LLaMA-Factory inference YAML (what `llamafactory-cli chat|api FILE.yaml` reads) as the model of `temper
chat`, `infer` and `serve`: its base, its adapter and its template, nothing pretended.

    model_name_or_path: smollm2-135m-instruct
    adapter_name_or_path: saves/smollm2/lora/sft
    template: smollm2
    infer_backend: huggingface
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from temper.errors import ConfigError, ModelNotFoundError

# key -> what it sets (temper's own spellings are read too).
KEYS: dict[str, str] = {
    "model_name_or_path": "model",
    "model": "model",
    "adapter_name_or_path": "adapter",
    "adapter": "adapter",
    "template": "template",
}
# key -> why it changes nothing here; named once when the file is read.
IGNORED: dict[str, str] = {
    "infer_backend": "temper decodes with its own engine",
    "trust_remote_code": "temper never runs code shipped in a model folder",
    "infer_dtype": "pass --dtype",
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


def read_inference_config(path: str | Path) -> tuple[Any, str | None, list[str]]:
    """(ModelRef of the base + adapter, template or None, notes to print) from an inference YAML."""
    from temper.config.base import load_yaml
    from temper.models.load import resolve_model

    values = load_yaml(path)
    settings: dict[str, str] = {}
    notes: list[str] = []
    for key, value in values.items():
        if key in IGNORED:
            notes.append(f"ignored: {key} ({IGNORED[key]})")
        elif key in KEYS:
            settings[KEYS[key]] = str(value)
        else:
            raise ConfigError(
                f"{path}: unknown key {key!r} for a model config.",
                hint=f"This file names the model only: {', '.join(KEYS)} (and {', '.join(IGNORED)}, ignored); "
                "sampling options are flags (--temperature, --max-tokens, ...).",
                key=str(key),
            )
    if "model" not in settings:
        raise ConfigError(
            f"{path}: no model_name_or_path.", hint="Name the base model: model_name_or_path: MODEL."
        )
    return resolve_model(settings["model"], settings.get("adapter")), settings.get("template"), notes

"""What the board's launch form means: a method's options -> the `temper VERB ...` argv and the YAML.

The form never builds a config of its own. It turns the fields into the argv a user would type, and validates
by parsing that argv with the CLI's own parser (`parse_verb_config`), so the board and the CLI cannot disagree.
The YAML shown next to the command holds the same keys; a test checks both parse to the same config.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from temper.config.base import ALIASES, ComposedConfig, _base_type, coerce, parse_yaml
from temper.errors import ConfigError, DataError, TemperError

RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class Method:
    verb: str
    options: tuple[str, ...]  # the fields the form shows, in order (any other key goes in "more options")
    data_key: str  # the field that names the training data


# The training options every decoder method shows after its own.
TRAINING = ("tuning", "lora_rank", "learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size",
            "max_length", "val_size", "logging_steps", "save_steps")  # fmt: skip

# Plain dict registry: the methods the board launches, with their main options.
METHODS: dict[str, Method] = {
    "sft": Method("sft", ("model", "dataset", "dataset_dir", "template", *TRAINING), "dataset"),
    "dpo": Method("dpo", ("model", "dataset", "beta", "loss_type", "rpo_alpha", *TRAINING), "dataset"),
    "kto": Method(
        "kto", ("model", "dataset", "beta", "desirable_weight", "undesirable_weight", *TRAINING), "dataset"
    ),
    "classify": Method(
        "classify",
        (
            "model",
            "task",
            "train",
            "validation",
            "text_column",
            "text_pair_column",
            "label_column",
            *(k for k in TRAINING if k not in ("lora_rank", "val_size")),
        ),
        "train",
    ),  # fmt: skip
}


def config_class(verb: str) -> type[ComposedConfig]:
    if verb == "sft":
        from temper.config import SFTConfig

        return SFTConfig
    if verb in ("dpo", "kto"):
        from temper.config.preference import PreferenceConfig

        return PreferenceConfig
    from temper.config.encoder import ClassifyConfig

    return ClassifyConfig


def parse_verb_config(verb: str, argv: Sequence[str], yaml_path: str | Path | None = None) -> Any:
    """Exactly what `temper VERB [YAML] ARGV` parses (the command modules call the same functions)."""
    if verb in ("dpo", "kto"):
        from temper.config.preference import PreferenceConfig

        return PreferenceConfig.for_verb(verb, yaml_path, argv)
    return config_class(verb).from_sources(yaml_path, argv)


def method(name: str) -> Method:
    if name not in METHODS:
        raise ConfigError(f"method: got {name!r}, expected one of {list(METHODS)}.", key="method")
    return METHODS[name]


def form_spec() -> dict[str, Any]:
    """Per method: its main fields (type, default, help, choices) for the page to draw."""
    out: dict[str, Any] = {}
    for name, m in METHODS.items():
        keys = config_class(m.verb).keys()
        fields = []
        for key in m.options:
            if key not in keys:
                continue
            f = keys[key][1]
            inner, is_list = _base_type(f.type)
            default = _default(f)
            fields.append(
                {
                    "key": key,
                    "type": "list" if is_list else getattr(inner, "__name__", "str"),
                    "default": default,
                    "help": f.metadata.get("help", ""),
                }
            )
        out[name] = {"verb": m.verb, "fields": fields, "data_key": m.data_key}
    return out


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


@dataclass
class Launch:
    """A validated launch: the argv after `temper`, the same options as YAML, and the parsed config."""

    argv: list[str]
    yaml: str
    config: Any
    run_dir: Path

    @property
    def command(self) -> str:
        return shlex.join(["temper", *self.argv])


class FormError(TemperError):
    """Problems with the form, keyed by field name ("" for ones that concern no single field)."""

    def __init__(self, errors: dict[str, str]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{k or 'form'}: {v}" for k, v in errors.items()))


def parse_extra(text: str) -> dict[str, Any]:
    """The "more options" box: YAML `key: value` lines (any key `temper VERB --help` lists)."""
    if not text.strip():
        return {}
    try:
        data = parse_yaml(text)
    except yaml.YAMLError as e:
        raise FormError({"extra": f"not valid YAML: {e}"}) from None
    if not isinstance(data, dict):
        raise FormError({"extra": "expected `key: value` lines"})
    return {str(k): v for k, v in data.items()}


def build_launch(
    method_name: str,
    values: Mapping[str, Any],
    runs_root: Path,
    run_name: str,
    extra: str = "",
    resume: bool = False,
) -> Launch:
    """Validate the form and return the command the board will run. Raises FormError keyed by field."""
    m = method(method_name)
    if not RUN_NAME.match(run_name or ""):
        raise FormError({"run_name": f"got {run_name!r}; use letters, digits, '.', '_' or '-' (max 64)"})
    cls = config_class(m.verb)
    keys = cls.keys()
    options: dict[str, Any] = {}
    extras = parse_extra(extra)
    for raw_key, value in {**values, **extras}.items():
        key = ALIASES.get(raw_key.replace("-", "_"), raw_key.replace("-", "_"))
        if value is None or (isinstance(value, str) and not value.strip()) or value == []:
            continue
        if key in ("output_dir", "resume", "overwrite_output_dir"):
            continue  # the board owns where runs go and how they resume
        where = "extra" if raw_key in extras else key  # the box the error is shown next to
        if key not in keys:
            raise FormError(
                {where: f"{raw_key}: unknown option for `temper {m.verb}` (see temper {m.verb} --help)"}
            )
        try:
            typed = coerce(cls.__name__, key, keys[key][1].type, value)
        except ConfigError as e:
            raise FormError({where: e.message}) from None
        if key in m.options and key not in ("model", m.data_key) and typed == _default(keys[key][1]):
            continue  # an untouched default stays out of the command
        options[key] = typed
    run_dir = runs_root / run_name
    options["output_dir"] = str(run_dir)
    if resume:
        options["resume"] = "auto"
    argv = [m.verb, *_flags(options)]
    try:
        config = parse_verb_config(m.verb, argv[1:])
    except ConfigError as e:
        raise FormError({_field_of(e, keys): e.message + (f" ({e.hint})" if e.hint else "")}) from None
    text = yaml.safe_dump(options, sort_keys=False, allow_unicode=True)
    return Launch(argv, text, config, run_dir)


def _flags(options: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        for item in value if isinstance(value, list) else [value]:
            out += [flag, str(item).lower() if isinstance(item, bool) else str(item)]
    return out


def _field_of(e: ConfigError, keys: Mapping[str, Any]) -> str:
    if e.key:
        return ALIASES.get(e.key, e.key)
    head = e.message.split(":", 1)[0].strip()
    return head if head in keys else ""


def check_data(launch: Launch, method_name: str) -> None:
    """Read and validate the training data as the recipe will; a DataError goes next to the data field."""
    m = method(method_name)
    try:
        preview_records(launch.config, m.verb, limit=None)
    except DataError as e:
        problems = "\n".join(e.problems[:20]) or e.message
        raise FormError({m.data_key: problems + (f"\nhint: {e.hint}" if e.hint else "")}) from None
    except TemperError as e:
        raise FormError({m.data_key: e.message}) from None


def preview_records(cfg: Any, verb: str, limit: int | None = 3) -> list[Any]:
    """The first `limit` records (all when None), parsed and validated by the recipe's own loader."""
    if verb == "classify":
        from temper.recipes.encoder_tools import load_cls_data

        train: list[Any] = []
        for task in cfg.data.task or [None]:
            train += load_cls_data(cfg.data, cfg.train.seed, task)[0]
        return train if limit is None else train[:limit]
    from temper.data.load import load_config_records
    from temper.data.pref_formats import KTO_FORMATS, PREFERENCE_FORMATS

    registry = {"dpo": PREFERENCE_FORMATS, "kto": KTO_FORMATS}
    if verb in registry:
        records = load_config_records(cfg.data, cfg.train.seed, registry[verb])
    else:
        records = load_config_records(cfg.data, cfg.train.seed)
    return records if limit is None else records[:limit]

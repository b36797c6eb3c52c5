"""Config plumbing shared by every verb: dataclasses <-> YAML <-> argparse flags.

A verb's configuration is a handful of small dataclasses (ModelCfg, DataCfg, ...) whose fields form one flat
namespace, like LLaMA-Factory's YAML files: `lora_rank: 8` in YAML and `--lora-rank 8` on the command line
set the same field. Every field carries its help text in `metadata["help"]`; short spellings (`--lr`) live in
`ALIASES` and are listed in `--help`.

Example:
    >>> from temper.config import SFTConfig
    >>> cfg = SFTConfig.from_sources(None, ["--lr", "1e-4", "--epochs", "2"])
    >>> cfg.train.learning_rate, cfg.train.num_train_epochs
    (0.0001, 2.0)
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from temper.config.foreign import trainer_field, translate
from temper.config.optim_keys import optimizer_keys
from temper.config.peer_combos import whole_config_keys
from temper.errors import ConfigError

T = TypeVar("T")

# Short spellings used in the issues and by the peers -> canonical (Trainer) field names.
ALIASES: dict[str, str] = {
    "lr": "learning_rate",
    "epochs": "num_train_epochs",
    "batch_size": "per_device_train_batch_size",
    "eval_batch_size": "per_device_eval_batch_size",
    "grad_accum": "gradient_accumulation_steps",
    "gradient_accumulation": "gradient_accumulation_steps",
    "max_len": "max_length",
    "cutoff_len": "max_length",  # LLaMA-Factory's name
    "finetuning_type": "tuning",  # LLaMA-Factory's name
    "train_type": "tuning",  # ms-swift's name
    "model_name_or_path": "model",
    "adapter_name_or_path": "adapter",  # LLaMA-Factory's name
    "adapters": "adapter",  # ms-swift's name
    "output": "output_dir",
    "resume_from_checkpoint": "resume",
    "threads": "num_threads",
    "target_modules": "lora_target",  # peft's and ms-swift's name
    "lorap_lr_ratio": "loraplus_lr_ratio",  # ms-swift's name
    "enable_dft_loss": "use_dft_loss",  # ms-swift's name
    "interleave_prob": "interleave_probs",  # ms-swift's name
    "evaluation_strategy": "eval_strategy",  # the Trainer's name before transformers 4.46
    "modules_to_save": "additional_target",  # peft's and ms-swift's name
    "pref_beta": "beta",  # LLaMA-Factory's names of the preference options
    "dpo_label_smoothing": "label_smoothing",
    "kto_chosen_weight": "desirable_weight",
    "kto_rejected_weight": "undesirable_weight",
    "bnb_4bit_quant_type": "quantization_type",  # ms-swift's (and transformers') name
    "bnb_4bit_use_double_quant": "double_quantization",  # ms-swift's (and transformers') name
    "split_dataset_ratio": "val_size",  # ms-swift's name
    "default_system": "system",  # LLaMA-Factory's name: the system prompt of rows without one
    "eval_limit": "limit",  # ms-swift's `swift eval --eval_limit N`
}


def _closest_key_hint(key: str, keys: list[str]) -> str:
    close = difflib.get_close_matches(key, keys + list(ALIASES), n=1, cutoff=0.6)
    return f"Did you mean `{ALIASES.get(close[0], close[0])}`?" if close else "See --help for every key."


def field(default: Any = dataclasses.MISSING, help: str = "", split: bool = True, **kw: Any) -> Any:  # noqa: A002
    """A dataclass field with a help string (mutable defaults go through default_factory); `split=False`: a
    list field whose values are not cut at commas."""
    meta: dict[str, Any] = {"help": help, "split": split}
    if isinstance(default, list | dict):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata=meta, **kw)
    return dataclasses.field(default=default, metadata=meta, **kw)


def _base_type(tp: Any) -> tuple[Any, bool]:
    """(inner type, is_list) for annotations such as `int | None` or `list[str]`."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _base_type(args[0])
    if origin in (list, Sequence):
        return typing.get_args(tp)[0], True
    return tp, False


def coerce(cls_name: str, name: str, tp: Any, value: Any, split: bool = True) -> Any:
    """Convert a YAML/CLI value to the field's type, or raise a ConfigError that names key and value.

    `split` (a list field's metadata, default true): "a,b" is two items; false for values that may hold commas.
    """
    if value is None:
        return None
    inner, is_list = _base_type(tp)
    if is_list:
        items = value if isinstance(value, list | tuple) else [value]
        out: list[Any] = []
        for item in items:
            # "a,b" on the command line means two items, as in LLaMA-Factory's `dataset: a,b`.
            parts = item.split(",") if isinstance(item, str) and inner in (str, float) and split else [item]
            out.extend(coerce(cls_name, name, inner, p.strip() if isinstance(p, str) else p) for p in parts)
        return [x for x in out if x != ""]
    if typing.get_origin(inner) is dict or inner is dict:
        value = _typed(value)  # `--trainer-args '{save_strategy: steps}'` on the command line
        if not isinstance(value, dict):
            raise ConfigError(
                f"{name}: got {value!r}, expected a mapping of option names to values.",
                hint=f"Write {name}: {{key: value}} in the YAML file.",
                key=name,
            )
        return {str(k): _typed(v) for k, v in value.items()}
    if isinstance(value, list | tuple) and len(value) == 1:
        value = value[0]  # ms-swift's YAML writes one-value keys as lists too: `adapters: [DIR]`
    try:
        if isinstance(value, list | dict):  # str() would turn it into its repr, silently
            raise ValueError(value)
        if inner is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if inner is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if inner is float:
            return float(value)
        if inner is str:
            return str(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{name}: got {value!r}, expected a value of type {getattr(inner, '__name__', inner)}.",
            hint=f"Fix `{name}` in the YAML file or pass --{name.replace('_', '-')} with a valid value.",
            key=name,
        ) from None
    return value


def _typed(value: Any) -> Any:
    """A command-line string as YAML reads it ("true", "5", "{min_lr: 1e-6}"); other values as they are."""
    if not isinstance(value, str):
        return value
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError:
        return value


def check_choice(name: str, value: Any, allowed: Iterable[Any]) -> None:
    """Raise a ConfigError unless `value` is one of `allowed` (used by __post_init__ validators)."""
    allowed = list(allowed)
    if value not in allowed:
        # A prefix ("adamw" for adamw_torch) is the likelier intent than the closest spelling (grokadamw).
        prefixed = [str(a) for a in allowed if value and str(a).startswith(str(value))]
        close = prefixed[:1] or difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
        hint = f"Did you mean {close[0]!r}?" if close else f"Use one of: {', '.join(map(str, allowed))}."
        raise ConfigError(f"{name}: got {value!r}, expected one of {allowed}.", hint=hint, key=name)


def check_range(name: str, value: float | None, lo: float | None = None, hi: float | None = None) -> None:
    """Raise a ConfigError when a number lies outside [lo, hi]."""
    if value is None:
        return
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        bounds = f"[{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
        raise ConfigError(f"{name}: got {value!r}, expected a number in {bounds}.", key=name)


class ComposedConfig:
    """A verb's config: several section dataclasses sharing one flat key namespace.

    Subclasses list their sections in `SECTIONS` (attribute name -> dataclass type).
    """

    SECTIONS: typing.ClassVar[dict[str, type]] = {}
    VERB: typing.ClassVar[str] = ""

    def __init__(self, **sections: Any) -> None:
        for attr, cls in self.SECTIONS.items():
            setattr(self, attr, sections.get(attr) or cls())
        # What the run should say about keys it read but does not use (a peer's config: config/foreign.py).
        self.notes: list[str] = []

    # ---- introspection -------------------------------------------------------------------------------
    @classmethod
    def keys(cls) -> dict[str, tuple[str, dataclasses.Field[Any]]]:
        """Flat key -> (section attribute, dataclass field)."""
        out: dict[str, tuple[str, dataclasses.Field[Any]]] = {}
        for attr, section in cls.SECTIONS.items():
            hints = typing.get_type_hints(section)
            for f in dataclasses.fields(section):
                f.type = hints[f.name]
                out[f.name] = (attr, f)
        return out

    # ---- construction --------------------------------------------------------------------------------
    @classmethod
    def from_dict(
        cls: type[T], values: Mapping[str, Any], source: str = "config", verb: str | None = None
    ) -> T:
        """`verb` is the command the config is for (default: the class's VERB), to check a `stage` key."""
        keys = cls.keys()  # type: ignore[attr-defined]
        per_section: dict[str, dict[str, Any]] = {attr: {} for attr in cls.SECTIONS}  # type: ignore[attr-defined]
        passed: list[str] = []
        unknown: list[tuple[str, str]] = []  # (key as given, closest-key hint)
        values, notes = whole_config_keys({str(k): v for k, v in values.items()})
        given = set(values)
        values, optim_notes = optimizer_keys(values)
        notes += optim_notes  # which names the keys it wrote, so they are not listed again as passed below
        for raw_key, raw_value in values.items():
            key = str(raw_key).replace("-", "_")
            key = ALIASES.get(key, key)
            value = raw_value
            if key not in keys:
                translated, value, note = translate(key, raw_value, verb or cls.VERB, source)  # type: ignore[attr-defined]
                notes += [note] if note else []
                if translated is None:
                    continue
                key = translated
            if key not in keys and "trainer_args" in keys and trainer_field(key):
                # Any other TrainingArguments option goes to the Trainer as given (checked when a run starts).
                attr = keys["trainer_args"][0]
                per_section[attr].setdefault("trainer_args", {})[key] = _typed(value)
                passed += [key] if raw_key in given else []
                continue
            if key not in keys:
                unknown.append((str(raw_key), _closest_key_hint(key, list(keys))))
                continue
            attr, f = keys[key]
            per_section[attr][key] = coerce(cls.__name__, key, f.type, value, f.metadata.get("split", True))
        if len(unknown) == 1:
            (raw, hint), *_ = unknown
            raise ConfigError(f"{source}: unknown key {raw!r}.", hint=hint, key=raw)
        if unknown:  # all at once: one fix-and-rerun round instead of one per typo
            raise ConfigError(
                f"{source}: unknown keys {', '.join(repr(raw) for raw, _ in unknown)}.",
                hint=" ".join(f"{raw!r}: {hint}" for raw, hint in unknown),
                key=unknown[0][0],
            )
        if passed:
            notes.append(f"passed to the Trainer as given: {', '.join(passed)}")
        sections = {attr: sec(**per_section[attr]) for attr, sec in cls.SECTIONS.items()}  # type: ignore[attr-defined]
        cfg = cls(**sections)
        cfg.notes = notes  # type: ignore[attr-defined]
        return cfg

    @classmethod
    def from_sources(cls: type[T], yaml_path: str | Path | None, argv: Sequence[str] = ()) -> T:
        """YAML file (optional) first, then `--key value` / `key=value` overrides."""
        values: dict[str, Any] = {}
        if yaml_path is not None:
            values.update(load_yaml(yaml_path))
        values.update(parse_overrides(cls, argv))  # type: ignore[arg-type]
        return cls.from_dict(values, source=str(yaml_path or "command line"))  # type: ignore[attr-defined, no-any-return]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for attr in self.SECTIONS:
            out.update(dataclasses.asdict(getattr(self, attr)))
        return out

    def save_yaml(self, path: Path) -> None:
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True))


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error: the safe loader keeps the
    last value silently, and `max_steps` written twice in a config is a mistake to point at, not to guess."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key {key!r} appears twice (lines {seen[key]} and {key_node.start_mark.line + 1}); keep one",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str) -> Any:
    """yaml.safe_load, with a key given twice in a mapping an error (yaml.YAMLError)."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - _UniqueKeyLoader is a SafeLoader


def load_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist.", hint="Pass the path of a YAML file.")
    try:
        data = parse_yaml(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: invalid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of key: value, got {type(data).__name__}.")
    return data


def parse_overrides(cls: type[ComposedConfig], argv: Sequence[str]) -> dict[str, Any]:
    """Parse `--key value`, `--key=value`, `key=value` and bare boolean `--flag` / `--no-flag`."""
    keys = cls.keys()
    values: dict[str, Any] = {}
    items = list(argv)
    i = 0
    while i < len(items):
        tok = items[i]
        i += 1
        if tok.startswith("--"):
            body = tok[2:]
            if "=" in body:
                key, val = body.split("=", 1)
            else:
                key = body
                canon = ALIASES.get(key.replace("-", "_"), key.replace("-", "_"))
                negated = canon.startswith("no_") and canon[3:] in keys
                target = canon[3:] if negated else canon
                is_bool = target in keys and _base_type(keys[target][1].type)[0] is bool
                if is_bool and (i >= len(items) or items[i].startswith("--") or negated):
                    values[target] = not negated
                    continue
                if i >= len(items):
                    raise ConfigError(f"option {tok} needs a value.", hint=f"Write {tok} VALUE.")
                val = items[i]
                i += 1
        elif "=" in tok:
            key, val = tok.split("=", 1)
        else:
            raise ConfigError(
                f"unexpected argument {tok!r}.", hint=_bare_hint(tok, getattr(cls, "VERB", "VERB"))
            )
        canon = ALIASES.get(key.replace("-", "_"), key.replace("-", "_"))
        field_tp = keys[canon][1].type if canon in keys else None
        if field_tp is not None and _base_type(field_tp)[1]:
            values.setdefault(canon, [])
            values[canon].append(val)  # repeated --dataset accumulates
            # ms-swift's spelling: several values after one flag (`--dataset a.json b.json`), up to the next
            # option or key=value override; a config file is never a value (it goes first: _bare_hint).
            while (
                tok.startswith("--")
                and "=" not in tok
                and i < len(items)
                and not _is_option(items[i], keys)
                and not items[i].endswith((".yaml", ".yml"))
            ):
                values[canon].append(items[i])
                i += 1
        else:
            values[canon] = val
    return values


def _bare_hint(tok: str, verb: str) -> str:
    if tok.endswith((".yaml", ".yml")):
        return f"The config file goes first: temper {verb} {tok} --key value."
    return "Options look like --key value or key=value."


def _is_option(tok: str, keys: Mapping[str, Any]) -> bool:
    """A token that starts the next override: --flag, or key=value with a known key."""
    if tok.startswith("--"):
        return True
    key = tok.split("=", 1)[0].replace("-", "_")
    return "=" in tok and ALIASES.get(key, key) in keys


def add_help_arguments(parser: argparse.ArgumentParser, cls: type[ComposedConfig]) -> None:
    """Document every key in `--help` (parsing itself goes through parse_overrides)."""
    reverse: dict[str, list[str]] = {}
    for short, canon in ALIASES.items():
        reverse.setdefault(canon, []).append(short)
    for attr, section in cls.SECTIONS.items():
        group = parser.add_argument_group(f"{attr} options")
        for f in dataclasses.fields(section):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc, operator]
            flags = [f"--{f.name.replace('_', '-')}"] + [
                f"--{a.replace('_', '-')}" for a in reverse.get(f.name, [])
            ]
            text = f.metadata.get("help", "")
            # Help that already explains its default ("(default: the task's dev set)") keeps that wording.
            help_text = (text if "(default:" in text else f"{text} (default: {default!r})").replace("%", "%%")
            group.add_argument(
                *flags,
                dest=f"_doc_{f.name}",
                metavar="V",
                nargs="?",
                help=help_text,
                default=argparse.SUPPRESS,
            )

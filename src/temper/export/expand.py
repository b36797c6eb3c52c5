"""LLaMA Pro block expansion (`temper export SOURCE --expand-blocks N`): a copy of the model with N decoder layers
inserted, one after every num_layers / N of them, each a copy of the layer before it with its output projections
(the attention's o_proj, the MLP's down_proj) zeroed. A zeroed output projection adds nothing to the residual
stream, so each inserted layer passes its input through and the expanded model computes what the source computed;
training only the inserted layers (`--use-llama-pro true`) then adds knowledge without moving the old ones.

LLaMA-Factory does this with a separate script (scripts/llama_pro.py, which imports a function transformers has
since removed); here it is an export, with the same placement, and the expanded model's logits are checked against
the source's before anything is written: an architecture whose layers do not end in those two projections is
refused rather than saved wrong.

Example:
    >>> from temper.export.expand import expand_blocks
    >>> manifest = expand_blocks("smollm2-135m-instruct", "exports/smollm2-pro", 6)  # doctest: +SKIP
    >>> manifest["expanded_layers"]  # doctest: +SKIP
    [5, 11, 17, 23, 29, 35]
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch

from temper.config.foreign import DTYPES
from temper.errors import ConfigError, TemperError
from temper.export.manifest import prepare_output_dir, write_export_manifest
from temper.export.merge import as_ref, load_source, probe_ids, probe_logits, save_hf_dir
from temper.models.dtype import pick_dtype
from temper.models.load import ModelRef
from temper.tuning import decoder_layers

OUTPUT_PROJECTIONS = ("o_proj", "down_proj")  # what a llama-family layer adds to the residual stream through
LLAMA_FAMILY = "LLaMA Pro expansion here supports llama-family layers (Llama, Mistral, Qwen, Gemma, SmolLM)."


def expanded_ids(num_layers: int, num_expand: int) -> list[int]:
    """Where the inserted layers sit in the expanded model: after every num_layers / num_expand source layers.

    Example:
        >>> expanded_ids(4, 2)
        [2, 5]
    """
    stride = num_layers // num_expand
    return [(g + 1) * (stride + 1) - 1 for g in range(num_expand)]


def expand_blocks(
    source: str | Path | ModelRef,
    output_dir: str | Path,
    num_expand: int,
    dtype: str | None = None,
    overwrite: bool = False,
    tolerance: float = 1e-4,
) -> dict[str, Any]:
    """Write the expanded model (a Hugging Face dir) and return its export manifest. A run with a LoRA adapter is
    merged first. `dtype`: the saved weights' (default: the source checkpoint's)."""
    ref = as_ref(source)
    src = load_source(ref, dtype="fp32")  # expand in fp32: the parity check below is exact there
    model, tok = src.model, src.tokenizer
    n = len(decoder_layers(model))
    ids = probe_ids(tok)
    before = probe_logits(model, ids)
    inserted = insert_passthrough_layers(model, num_expand, src.info["source"])
    diff = float((probe_logits(model, ids) - before).abs().max())
    if diff > tolerance:
        raise TemperError(
            f"the expanded {src.info['source']} does not compute what it computed (max |logit diff| {diff:.3g}): "
            f"its layers add more to the residual stream than {' and '.join(OUTPUT_PROJECTIONS)}.",
            hint=LLAMA_FAMILY,
        )
    saved = dtype or _checkpoint_dtype(ref.path)
    out = prepare_output_dir(output_dir, overwrite)
    files = save_hf_dir(model.to(pick_dtype(saved)), tok, out)
    info = {
        **src.info,
        "merge_max_abs_logit_diff": src.info["max_abs_logit_diff"],
        "max_abs_logit_diff": diff,
    }
    return write_export_manifest(
        out, "expand", info, files, dtype=saved, num_expand=num_expand, source_layers=n,
        expanded_layers=inserted,
    )  # fmt: skip


def insert_passthrough_layers(model: Any, num_expand: int, name: str) -> list[int]:
    """Insert `num_expand` pass-through layers into `model` in place (one after every layers / num_expand, each
    a copy of the layer before it with its output projections zeroed); returns their indices."""
    layers = list(decoder_layers(model))
    n = len(layers)
    if num_expand < 1 or n % num_expand:
        divisors = [d for d in range(1, n + 1) if n % d == 0]
        raise ConfigError(
            f"expand_blocks {num_expand}: {name} has {n} layers, and the inserted layers go one after every "
            "num_layers / N, so N must divide the layer count.",
            hint=f"Use one of {', '.join(map(str, divisors))}.",
            key="expand_blocks",
        )
    stride, grown = n // num_expand, []
    for i, layer in enumerate(layers):
        grown.append(layer)
        if (i + 1) % stride == 0:
            grown.append(_passthrough_copy(layer, name))
    _replace_layers(model, grown, n, stride)
    return expanded_ids(n, num_expand)


def _passthrough_copy(layer: torch.nn.Module, source: str) -> torch.nn.Module:
    new = copy.deepcopy(layer)
    zeroed = 0
    for name, module in new.named_modules():
        if name.rsplit(".", 1)[-1] in OUTPUT_PROJECTIONS:
            for param in module.parameters(recurse=False):
                param.data.zero_()
            zeroed += 1
    if zeroed != len(OUTPUT_PROJECTIONS):
        raise TemperError(
            f"{source}'s decoder layers have {zeroed} of the output projections LLaMA Pro zeroes "
            f"({', '.join(OUTPUT_PROJECTIONS)}), expected one each.",
            hint=LLAMA_FAMILY,
        )
    return new


def _replace_layers(model: Any, grown: list[torch.nn.Module], n: int, stride: int) -> None:
    """Put the grown layer list in the model and its config: the layer count, each attention's cache index,
    and a per-layer config list (layer_types: full or sliding attention), which the inserted copies inherit."""
    parent = model.model if hasattr(model, "model") and hasattr(model.model, "layers") else None
    if parent is None:
        raise TemperError("LLaMA Pro expansion needs a model.layers list (llama-family decoders).")
    parent.layers = torch.nn.ModuleList(grown)
    for idx, layer in enumerate(grown):
        attn = getattr(layer, "self_attn", None)
        if attn is not None and hasattr(attn, "layer_idx"):
            attn.layer_idx = idx  # the KV cache is indexed by it
    config = model.config
    kinds = getattr(config, "layer_types", None)
    if isinstance(kinds, list) and len(kinds) == n:
        config.layer_types = [
            k for i, kind in enumerate(kinds) for k in ([kind] * (2 if (i + 1) % stride == 0 else 1))
        ]
    config.num_hidden_layers = len(grown)


def _checkpoint_dtype(path: Path) -> str:
    """The source checkpoint's dtype (its config.json's) as temper names it; fp32 when it does not say."""
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    name = str(config.get("dtype") or config.get("torch_dtype") or "float32")
    return DTYPES.get(name.replace("torch.", ""), "fp32")

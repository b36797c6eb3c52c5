"""RoPE scaling for training past a model's context (LLaMA-Factory's `rope_scaling`): when the run's max length
exceeds the length the model was trained for, its rotary embedding is stretched by factor ceil(max_length / that
length), with the chosen method (linear, dynamic NTK, YaRN or Llama 3's), and the model's max_position_embeddings
grows by the same factor. The settings go into the loaded model's config, so the run dir's config.json carries
them and every later verb loads the model stretched. A max length within the model's context changes nothing
(LLaMA-Factory disables it then too).

transformers 5 keeps these in `config.rope_parameters` (with rope_theta); its older `rope_scaling` argument
drops rope_theta, so the parameters are written whole here.

Example:
    >>> overrides, note = rope_overrides({"rope_theta": 1e4, "rope_type": "default"}, 1024, "linear", 3000)
    >>> overrides["rope_parameters"]["factor"], overrides["max_position_embeddings"]
    (3.0, 3072)
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any

from temper.errors import ConfigError

if TYPE_CHECKING:
    from temper.models.load import ModelRef

ROPE_SCALING = ("linear", "dynamic", "yarn", "llama3")


def rope_overrides(
    params: dict[str, Any] | None, max_positions: int | None, kind: str, max_length: int
) -> tuple[dict[str, Any], str]:
    """(from_pretrained keyword overrides, a note for the run) for a model whose config holds `params` (its
    rope_parameters) and `max_positions` (max_position_embeddings); no overrides when max_length fits."""
    if not params or max_positions is None:
        raise ConfigError(
            f"rope_scaling {kind}: this model has no rotary position parameters to scale.",
            hint="Drop --rope-scaling (the model does not use RoPE).",
            key="rope_scaling",
        )
    old = int(params.get("original_max_position_embeddings") or max_positions)
    if max_length <= old:
        return (
            {},
            f"rope_scaling {kind}: max_length {max_length} fits the model's {old} positions; not scaled",
        )
    factor = float(math.ceil(max_length / old))
    new = {**params, "rope_type": kind, "factor": factor}
    if kind in ("dynamic", "yarn", "llama3"):
        new["original_max_position_embeddings"] = old
    if kind == "llama3":
        new.update(low_freq_factor=1.0, high_freq_factor=4.0)
    note = f"rope_scaling {kind}: factor {factor:g} for max_length {max_length} (the model's {old} positions)"
    return {"rope_parameters": new, "max_position_embeddings": int(old * factor)}, note


def model_rope_overrides(path: Any, kind: str | None, max_length: int) -> tuple[dict[str, Any], str | None]:
    """rope_overrides for the model at `path` (its config.json), or nothing when `kind` is None."""
    if kind is None:
        return {}, None
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path, local_files_only=True)
    params = getattr(config, "rope_parameters", None)
    if isinstance(params, dict) and params and "rope_type" not in params:  # one set per layer type (Gemma 3)
        raise ConfigError(
            f"rope_scaling {kind}: this model keeps rotary parameters per attention type; temper scales one set.",
            hint="Set the scaling in the model's config.json instead.",
            key="rope_scaling",
        )
    return rope_overrides(params, getattr(config, "max_position_embeddings", None), kind, max_length)


def with_rope(ref: ModelRef, kind: str | None, max_length: int) -> tuple[ModelRef, str | None]:
    """`ref` with the RoPE scaling a run of max_length needs added to the config settings it loads with (the
    run's manifest records them, so later verbs load the base the same way), and the note for the run."""
    overrides, note = model_rope_overrides(ref.path, kind, max_length)
    return dataclasses.replace(ref, overrides={**ref.overrides, **overrides}), note

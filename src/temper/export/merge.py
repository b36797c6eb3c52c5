"""Fold LoRA / DoRA adapters into their base model and save a standalone Hugging Face directory.

The merged model must compute what the adapter model computed, so every merge measures it: the max absolute
difference of the logits, adapter model vs merged model, on a fixed probe (plain text and a chat-templated
turn). fp32 merges agree to ~1e-5; a larger number means the merge went wrong.

Example:
    >>> from temper.export.merge import merge_run
    >>> info = merge_run("runs/identity", "exports/identity-merged")  # doctest: +SKIP
    >>> info["max_abs_logit_diff"] < 1e-3  # doctest: +SKIP
    True
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from temper.errors import TemperError
from temper.export.manifest import prepare_output_dir, write_export_manifest
from temper.models.dtype import pick_dtype
from temper.models.load import (
    ModelRef,
    load_causal_lm,
    load_tokenizer,
    refuse_reward_model,
    resolve,
)
from temper.tuning import quiet_peft

PROBE_TEXT = "The quick brown fox jumps over the lazy dog. 1 + 2 = 3, and Paris is the capital of France."
PROBE_MESSAGES = [{"role": "user", "content": "Who are you? Answer in one sentence."}]


@dataclass
class Source:
    """A model ready to export: float weights with every adapter folded in, its tokenizer, and provenance."""

    model: Any
    tokenizer: Any
    info: dict[str, Any] = field(default_factory=dict)


def probe_ids(tok: Any) -> torch.Tensor:
    """Token ids of the fixed probe: the plain text, then one chat turn when the tokenizer has a template."""
    ids = tok(PROBE_TEXT, return_tensors="pt").input_ids[0]
    if getattr(tok, "chat_template", None):
        chat = tok.apply_chat_template(PROBE_MESSAGES, add_generation_prompt=True, tokenize=False)
        ids = torch.cat([ids, tok(chat, add_special_tokens=False, return_tensors="pt").input_ids[0]])
    return ids.unsqueeze(0)


@torch.no_grad()
def probe_logits(model: Any, ids: torch.Tensor) -> torch.Tensor:
    return model(input_ids=ids).logits.float()


def as_ref(source: str | Path | ModelRef) -> ModelRef:
    return source if isinstance(source, ModelRef) else resolve(source)


def load_source(
    source: str | Path | ModelRef,
    dtype: str = "fp32",
    require_adapter: bool = False,
    template: str | None = None,
    system: str | None = None,
) -> Source:
    """Resolve a run dir / model name and return it with all adapters merged (logit diff measured).

    `require_adapter` is set by `--merge`: merging a model that has no adapter is a mistake worth reporting.
    `template` replaces the tokenizer's chat template (a built-in name, a Jinja file, or a LLaMA-Factory name
    checked against the model's own), as `--template` does in training; `system` becomes its default system
    prompt, as `--system` does in training (data/templates.py: with_default_system).

    Example:
        >>> src = load_source("runs/identity")  # doctest: +SKIP
        >>> src.info["adapters"], src.info["max_abs_logit_diff"]  # doctest: +SKIP
    """
    ref = as_ref(source)
    refuse_reward_model(ref)  # before the causal-LM check, whose hint is for encoders
    if require_adapter:
        check_has_adapter(ref.name, ref)
    for path in ref.adapters.values():
        missing = [f for f in ("adapter_config.json", "adapter_model.safetensors") if not (path / f).exists()]
        if missing:
            raise TemperError(
                f"run dir {path} says its weights are an adapter, but {', '.join(missing)} is missing.",
                hint="The run did not finish saving; re-run training or point at a checkpoint that has them.",
            )
    _check_causal_lm(ref.path, ref.name)
    base_ref = dataclasses.replace(ref, adapters={})
    model, _ = load_causal_lm(base_ref, dtype=dtype)
    tok = load_tokenizer(ref)  # the run's copy: it carries any chat-template override used in training
    if template or system is not None:
        _set_template(tok, template, system, model, ref.name)
    diffs: list[float] = []
    if ref.adapters:
        model, diffs = _merge_adapters(model, ref.adapters, probe_ids(tok))
    info = {
        "source": ref.name,
        "source_kind": ref.kind,
        "base_model": ref.base_name or str(ref.path),
        "adapters": {name: str(p) for name, p in ref.adapters.items()},
        "max_abs_logit_diff": max(diffs) if diffs else None,
    }
    return Source(model.eval(), tok, info)


def _set_template(tok: Any, template: str | None, system: str | None, model: Any, name: str) -> None:
    from temper.data.templates import prepare_tokenizer

    rows = model.get_input_embeddings().num_embeddings
    prepare_tokenizer(tok, template, system)
    if len(tok) > rows:  # a built-in template's turn tokens this model never learned
        raise TemperError(
            f"template {template!r} adds tokens that {name} has no embeddings for (vocabulary {len(tok)} > {rows}).",
            hint=f"Train with it (temper sft --template {template}) and export that run; its tokenizer keeps it.",
        )


def check_has_adapter(source: str | Path | ModelRef, ref: ModelRef | None = None) -> None:
    """TemperError unless `source` is a run dir with an adapter (what `--merge` needs)."""
    ref = ref or as_ref(source)
    source = ref.name
    if not ref.adapters:
        what = "a full-weights run" if ref.kind == "run" else f"a model ({ref.kind})"
        raise TemperError(
            f"--merge needs a run dir with a LoRA/DoRA adapter, but {source} is {what} with no adapter.",
            hint="Pass the run dir of `temper sft --tuning lora`, or drop --merge (full models need no merge).",
        )


def _check_causal_lm(path: Path, source: str | Path) -> None:
    cfg = json.loads((path / "config.json").read_text())
    archs = cfg.get("architectures") or []
    # BERT's model_type has a causal-LM class too, so the saved head class is what tells an encoder apart.
    if not any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs):
        raise TemperError(
            f"{source} is not a causal language model (model_type {cfg.get('model_type')!r}, architectures "
            f"{cfg.get('architectures')}); "
            "merge, GGUF and int8 export need one.",
            hint="Encoders (BERT, MiniLM) export with --onnx.",
        )


def _merge_adapters(model: Any, adapters: dict[str, Path], ids: torch.Tensor) -> tuple[Any, list[float]]:
    """Merge adapters one at a time (a run trained on another run stacks them) and measure each merge."""
    from peft import PeftModel

    diffs = []
    for name, path in adapters.items():
        with quiet_peft():
            peft_model = PeftModel.from_pretrained(model, str(path), adapter_name=name).eval()
        before = probe_logits(peft_model, ids)
        # safe_merge checks the merged weights for NaN before replacing the base weights.
        model = peft_model.merge_and_unload(safe_merge=True).eval()
        diffs.append(float((before - probe_logits(model, ids)).abs().max()))
    return model, diffs


def save_hf_dir(model: Any, tok: Any, out_dir: Path, max_shard_size: str | None = None) -> list[str]:
    """save_pretrained (safetensors; shards of at most `max_shard_size`, e.g. "5GB") + tokenizer with its chat
    template; returns the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(
        out_dir, safe_serialization=True, **({"max_shard_size": max_shard_size} if max_shard_size else {})
    )
    tok.save_pretrained(out_dir)
    return sorted(p.name for p in out_dir.iterdir() if p.is_file() and not p.name.startswith("."))


def merge_run(
    run: str | Path | ModelRef,
    output_dir: str | Path,
    dtype: str = "fp32",
    tolerance: float = 1e-3,
    overwrite: bool = False,
    max_shard_size: str | None = None,
    template: str | None = None,
    system: str | None = None,
) -> dict[str, Any]:
    """`temper export RUN --merge`: write a standalone HF dir and an Ollama Modelfile (`FROM .`, as
    LLaMA-Factory's export writes); returns the export manifest. `template` and `system` as in load_source.

    Raises TemperError when the merged logits differ from the adapter model's by more than `tolerance`.
    """
    from temper.export.ollama import write_modelfile

    # merge in fp32; cast only what is saved
    src = load_source(run, dtype="fp32", require_adapter=True, template=template, system=system)
    diff = src.info["max_abs_logit_diff"]
    if diff is not None and diff > tolerance:
        raise TemperError(
            f"merged model disagrees with the adapter model: max |logit diff| {diff:.3g} > {tolerance}.",
            hint="Check that the adapter was trained on this base model (temper_run.json base_model).",
        )
    out = prepare_output_dir(output_dir, overwrite)
    files = save_hf_dir(src.model.to(pick_dtype(dtype)), src.tokenizer, out, max_shard_size)
    write_modelfile(out, ".", src.tokenizer, system)
    return write_export_manifest(out, "merge", src.info, sorted([*files, "Modelfile"]), dtype=dtype)


def merge_reward_model(
    run: str | Path | ModelRef, output_dir: str | Path, overwrite: bool = False, tolerance: float = 1e-3
) -> dict[str, Any]:
    """`temper export RMRUN --merge`: the reward model as one Hugging Face sequence-classification dir (its LoRA
    folded into the backbone, the score head beside it), which `temper rm-score`, TRL and transformers load as
    it is. Raises TemperError when the merged scores differ from the run's by more than `tolerance`."""
    from peft import PeftModel

    from temper.recipes.rm import RewardModel

    ref = as_ref(run)
    rm = RewardModel.load(ref.run_dir or ref.path)
    probe = [[{"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": "4"}],
             [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "I like turtles."}]]  # fmt: skip
    before = rm.score_batch(probe)
    if isinstance(rm.model, PeftModel):
        with torch.no_grad():
            rm.model = rm.model.merge_and_unload()
    after = rm.score_batch(probe)
    diff = max(abs(a - b) for a, b in zip(before, after, strict=True))
    if diff > tolerance:
        raise TemperError(
            f"merged reward model disagrees with the run: max |score diff| {diff:.3g} > {tolerance}.",
            hint="Check that the run's adapter was trained on its base model (temper_run.json base_model).",
        )
    out = prepare_output_dir(output_dir, overwrite)
    rm.model.config.reward_max_length = rm.max_length  # read back by RewardModel.load
    files = save_hf_dir(rm.model, rm.tokenizer, out)
    info = {"source": ref.name, "source_kind": "rm run", "base_model": ref.base_name or str(ref.path)}
    return write_export_manifest(out, "merge", info, files, max_abs_score_diff=diff)

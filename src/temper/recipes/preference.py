"""Pairwise preference training (DPO / IPO / hinge / RPO, ORPO, SimPO, CPO), top to bottom:
data -> PreferenceExample -> prompt/chosen/rejected ids -> policy (+ reference) -> tuning -> engine -> run dir.

The run directory has the SFT layout (adapter or weights at the root, tokenizer, config.yaml, temper_run.json,
metrics.jsonl, loss.png), so chat / serve / eval / export take it like an SFT run. KTO (recipes/kto.py) and the
reward model (recipes/rm.py) reuse the helpers here; `train_rlhf` picks the recipe from `rlhf_type`.

Example:
    >>> from temper.config.preference import PreferenceConfig
    >>> cfg = PreferenceConfig.for_verb("dpo", None, ["--dataset", "dpo_en_demo.json", "--beta", "0.1"])
    >>> result = train_rlhf(cfg)                                                   # doctest: +SKIP
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from rich.console import Console

from temper.config.preference import NEEDS_REFERENCE, PrefCfg, PreferenceConfig
from temper.data.load import load_train_val
from temper.data.pref_formats import PREFERENCE_FORMATS
from temper.data.pref_tokenize import PairCollator, encode_pairs
from temper.data.templates import inherited_system_note, prepare_tokenizer
from temper.errors import ConfigError
from temper.models.load import ModelRef, load_causal_lm, resolve_model
from temper.models.rope import with_rope
from temper.objectives.dpo import chosen_nll, dpo_loss, pair_metrics
from temper.objectives.logps import Reference, forward_logps, split_pairs
from temper.objectives.orpo import orpo_loss
from temper.objectives.simpo import simpo_loss
from temper.recipes.sft import _summary
from temper.runs import data_fingerprint, match_umask, write_manifest
from temper.training.checkpoint import check_output_dir, kept_result, resume_changes
from temper.training.engine import train, use_bf16
from temper.training.launch import main_process_first
from temper.training.preflight import check_trainer_names, start_notes
from temper.training.results import TrainResult
from temper.tuning import apply_tuning, count_parameters, name_adapter_base, qlora_config

console = Console(stderr=True, soft_wrap=True)  # long paths stay on one line in logs
LossFn = Callable[[Any, dict[str, torch.Tensor]], tuple[torch.Tensor, dict[str, float]]]


def train_rlhf(cfg: PreferenceConfig) -> TrainResult:
    """Run the recipe of `cfg.pref.rlhf_type` (ms-swift's `swift rlhf --rlhf_type`)."""
    from temper.recipes.kto import train_kto
    from temper.recipes.rm import train_rm

    recipes: dict[str, Callable[[PreferenceConfig], TrainResult]] = {"kto": train_kto, "rm": train_rm}
    return recipes.get(cfg.pref.rlhf_type, train_preference)(cfg)


def train_preference(cfg: PreferenceConfig) -> TrainResult:
    """DPO-family training of `cfg.model.model` on pairs from `cfg.data.dataset` into `cfg.train.output_dir`."""
    run_dir = start_run(cfg)
    # 1. Data: every row becomes a PreferenceExample, or we stop with every problem listed.
    train_records, val_records = load_split(cfg, PREFERENCE_FORMATS)
    # 2. Policy model (any adapter of a starting run dir merged in: that model is the reference).
    model, tokenizer, ref, merged = load_policy(cfg)
    # 3. Tokens: prompt ids shared by chosen and rejected; labels are the replies plus end-of-turn.
    train_rows, val_rows, stats = encode_split(encode_pairs, cfg, tokenizer, train_records, val_records)
    collator = PairCollator(tokenizer.pad_token_id)
    report_data(stats, train_rows, val_rows)
    # 4. Reference + tuning. Precomputed log-probs come from the model before any adapter exists.
    model, reference = build_reference_and_tune(
        cfg, model, collator, [train_rows, val_rows], precompute_pairs
    )
    loss_fn = pairwise_loss_fn(cfg.pref, reference)
    eval_before = evaluate_rows(model, val_rows, collator, loss_fn, cfg.train.per_device_eval_batch_size)
    # 5-6. Run directory contract, then train.
    return finish_run(
        cfg,
        run_dir,
        model,
        tokenizer,
        ref,
        merged,
        stats,
        train_rows,
        val_rows,
        collator,
        loss_fn,
        eval_before,
    )


# ---- the objective -------------------------------------------------------------------------------------


def pair_objective(
    pref: PrefCfg,
    pc: torch.Tensor,
    pr: torch.Tensor,
    nc: torch.Tensor,
    nr: torch.Tensor,
    ref_c: torch.Tensor | None,
    ref_r: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, float]]:
    """(loss, chosen rewards, rejected rewards, extra metrics) from summed log-probs and token counts."""
    beta = float(pref.beta or 0.0)
    kind, extra = pref.rlhf_type, {}
    nc_f, nr_f = nc.clamp(min=1).to(pc.dtype), nr.clamp(min=1).to(pr.dtype)
    if kind == "dpo":
        assert ref_c is not None and ref_r is not None
        if pref.loss_type == "ipo":  # IPO on length-averaged log-probs, as TRL and LLaMA-Factory do
            pc, pr, ref_c, ref_r = pc / nc_f, pr / nr_f, ref_c / nc_f, ref_r / nr_f
        losses, rc, rr = dpo_loss(pc, pr, ref_c, ref_r, beta, pref.loss_type, pref.label_smoothing)
        loss = losses.mean()
        if pref.rpo_alpha:
            nll = chosen_nll(pc if pref.loss_type != "ipo" else pc * nc_f, nc)
            loss = loss + pref.rpo_alpha * nll
            extra["nll_loss"] = float(nll.detach())
    elif kind == "orpo":
        losses, rc, rr, log_odds = orpo_loss(pc / nc_f, pr / nr_f, beta)
        nll = chosen_nll(pc, nc)
        loss = nll + losses.mean()
        extra = {"nll_loss": float(nll.detach()), "log_odds_ratio": float(log_odds.mean())}
    elif kind == "simpo":
        losses, rc, rr = simpo_loss(pc / nc_f, pr / nr_f, beta, pref.simpo_gamma, pref.label_smoothing)
        loss = losses.mean()
    elif kind == "cpo":
        losses, rc, rr = simpo_loss(pc, pr, beta, 0.0, pref.label_smoothing)
        nll = chosen_nll(pc, nc)
        loss = losses.mean() + pref.cpo_alpha * nll
        extra["nll_loss"] = float(nll.detach())
    else:
        raise ValueError(f"{kind!r} is not a pairwise language-model objective")
    return loss, rc, rr, extra


def pairwise_loss_fn(pref: PrefCfg, reference: Reference | None) -> LossFn:
    """The engine's loss_fn: one forward over chosen+rejected, reference log-probs, objective, metrics."""

    def loss_fn(model: Any, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        logps, counts = forward_logps(model, inputs)
        pc, pr = split_pairs(logps)
        nc, nr = split_pairs(counts)
        ref_c = ref_r = None
        if pref.rlhf_type in NEEDS_REFERENCE:
            if "ref_chosen_logps" in inputs:
                ref_c, ref_r = inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
            else:
                assert reference is not None
                ref_c, ref_r = split_pairs(reference.logps(model, inputs))
        loss, rc, rr, extra = pair_objective(pref, pc, pr, nc, nr, ref_c, ref_r)
        return loss, {**pair_metrics(rc, rr, pc, pr), **extra}

    return loss_fn


def precompute_pairs(model: Any, rows: list[dict[str, Any]], collator: Any, batch_size: int) -> None:
    """Store the (frozen) model's log-probs of every pair in the rows: ref_chosen_logps / ref_rejected_logps."""
    for i, batch in _batches(model, rows, collator, batch_size):
        chosen, rejected = split_pairs(forward_logps(model, batch)[0])
        for row, c, r in zip(rows[i : i + batch_size], chosen.tolist(), rejected.tolist(), strict=True):
            row["ref_chosen_logps"], row["ref_rejected_logps"] = c, r


# ---- shared steps (KTO and RM use them too) ------------------------------------------------------------


def start_run(cfg: PreferenceConfig) -> Path:
    """What every preference recipe (DPO family, KTO, RM) does first: checks, notes, the run dir, the seed."""
    if cfg.tune.pissa_init:
        raise ConfigError(
            "pissa_init: a PiSSA start moves the base weights, and preference training needs them as they were "
            "(the reference, a merged start, a reward model's backbone).",
            hint="Train the PiSSA adapter with temper sft, then start this run from that run dir.",
            key="pissa_init",
        )
    run_dir = Path(cfg.train.output_dir)
    state = PartialState(cpu=not torch.cuda.is_available())  # the same state the Trainer will build
    check_trainer_names(cfg.train, cfg.tune.tuning)
    check_output_dir(run_dir, cfg.train.resume, cfg.train.overwrite_output_dir)
    changes = resume_changes(
        run_dir,
        cfg.train.resume,
        cfg.to_dict(),
        data_fingerprint(cfg.data),
    )
    for line in [*start_notes(cfg), *changes]:
        if state.is_main_process:  # once, not once per process
            console.print(line, markup=False, highlight=False)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.train.seed)
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    return run_dir


def load_split(cfg: PreferenceConfig, converters: Mapping[str, Any]) -> tuple[list[Any], list[Any]]:
    # The main process reads first, so that bad data is reported once (as in sft).
    with main_process_first(PartialState(cpu=not torch.cuda.is_available())):
        return load_train_val(cfg.data, cfg.train.seed, converters)


def load_policy(cfg: PreferenceConfig) -> tuple[Any, Any, ModelRef, bool]:
    """(model, tokenizer, ref, merged). A starting run dir's LoRA adapter is merged into the base weights, so
    that "adapters off" is that SFT model; such a run then saves full weights (adapters cannot be stacked)."""
    ref = resolve_model(cfg.model.model, cfg.model.adapter)
    bf16 = use_bf16(cfg.train)
    # Like SFT: a LoRA run keeps the frozen base in bf16 when bf16 is on; full/freeze keep fp32 master weights.
    dtype = (
        cfg.model.dtype
        if cfg.model.dtype != "auto"
        else ("bf16" if bf16 and cfg.tune.tuning == "lora" else "fp32")
    )
    if ref.adapters and cfg.tune.quantization:
        raise ConfigError(
            f"{ref.name} has a LoRA adapter, which this run would merge into its base; a quantized base cannot "
            "take it.",
            hint=f"Merge it first (temper export {ref.name} --merge --output-dir DIR) and train on DIR.",
            key="quantization",
        )
    ref, rope_note = with_rope(ref, cfg.model.rope_scaling, cfg.data.max_length)
    model, tokenizer = load_causal_lm(
        ref,
        dtype=dtype,
        attn_implementation=cfg.model.attn_implementation,
        quantization_config=qlora_config(cfg.tune, dtype),
    )
    if rope_note:
        console.print(rope_note)
    merged = bool(ref.adapters)
    if merged:
        model = model.merge_and_unload()
        # Said, as SFT says it continues an adapter: the start differs from SFT's and so do the saved files.
        console.print(
            f"[bold]start[/] {ref.name}'s LoRA adapter merged into its base: that model is the reference, "
            + (
                "a new LoRA trains on top, and the run saves full weights (adapters cannot be stacked)"
                if cfg.tune.tuning == "lora"
                else "and the run saves full weights"
            )
        )
    tokenizer = prepare_tokenizer(tokenizer, cfg.model.template, cfg.data.system)
    if note := inherited_system_note(tokenizer, cfg.data.system, cfg.model.model, cfg.model.template):
        console.print(note, markup=False, highlight=False)
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))  # a built-in template added its special tokens
    model.train()
    return model, tokenizer, ref, merged


def build_reference_and_tune(
    cfg: PreferenceConfig,
    model: Any,
    collator: Any,
    row_sets: list[list[dict[str, Any]]],
    precompute: Callable[[Any, list[dict[str, Any]], Any, int], None],
) -> tuple[Any, Reference | None]:
    """Precompute reference log-probs or build the reference, then apply the tuning method."""
    reference: Reference | None = None
    if cfg.pref.rlhf_type in NEEDS_REFERENCE:
        if cfg.pref.precompute_ref:
            # The model has no adapter yet and its weights are the reference: no copy, nothing to free later.
            for rows in row_sets:
                precompute(model, rows, collator, cfg.train.per_device_eval_batch_size)
            console.print(f"[bold]reference[/] log-probs precomputed for {sum(map(len, row_sets))} rows")
        elif cfg.tune.tuning == "lora":
            reference = Reference()  # the policy with its adapters switched off
        else:
            frozen = copy.deepcopy(model).eval().requires_grad_(False)
            reference = Reference(frozen)
    if cfg.train.gradient_checkpointing:
        model.config.use_cache = False
    model = apply_tuning(model, cfg.tune)
    if cfg.train.gradient_checkpointing and cfg.tune.tuning == "lora":
        model.enable_input_require_grads()
    trainable, total = count_parameters(model)
    console.print(
        f"[bold]model[/] {cfg.model.model} ({total / 1e6:.1f}M params); tuning={cfg.tune.tuning}: "
        f"{trainable / 1e6:.2f}M trainable; objective={cfg.pref.rlhf_type} beta={cfg.pref.beta}"
    )
    return model, reference


def _batches(model: Any, rows: list[dict[str, Any]], collator: Any, batch_size: int) -> Any:
    """(start index, batch on the model's device) over `rows`, in eval mode without gradients."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for i in range(0, len(rows), batch_size):
                batch = collator(rows[i : i + batch_size])
                yield i, {k: v.to(device) for k, v in batch.items()}
    finally:
        model.train(was_training)


def evaluate_rows(
    model: Any, rows: list[dict[str, Any]], collator: Any, loss_fn: LossFn, batch_size: int
) -> dict[str, float]:
    """Loss and metrics over `rows` (row-weighted means): the held-out numbers before training starts."""
    sums: dict[str, float] = defaultdict(float)
    for i, batch in _batches(model, rows, collator, batch_size):
        n = len(rows[i : i + batch_size])
        loss, metrics = loss_fn(model, batch)
        for k, v in {"loss": float(loss), **metrics}.items():
            sums[k] += v * n
    return {k: v / len(rows) for k, v in sums.items()} if rows else {}


def encode_split(
    encode: Callable[..., tuple[list[dict[str, Any]], dict[str, int]]],
    cfg: PreferenceConfig,
    tokenizer: Any,
    train_records: list[Any],
    val_records: list[Any],
    **kwargs: Any,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, int]]:
    """(train rows, val rows, train stats) with the config's length policy and default system prompt."""
    opts = {
        "max_length": cfg.data.max_length,
        "truncation": cfg.data.truncation,
        "system": cfg.data.system,
        **kwargs,
    }
    train_rows, stats = encode(train_records, tokenizer, **opts)
    val_rows = encode(val_records, tokenizer, **opts)[0] if val_records else []
    return train_rows, val_rows, stats


def report_data(stats: Mapping[str, Any], train_rows: list[Any], val_rows: list[Any]) -> None:
    console.print(
        f"[bold]data[/] {len(train_rows)} train / {len(val_rows)} val rows; of the {stats['n_rows']} train "
        f"rows, truncated {stats['n_truncated']}, dropped {stats['n_dropped']}"
    )


def finish_run(
    cfg: PreferenceConfig,
    run_dir: Path,
    model: Any,
    tokenizer: Any,
    ref: ModelRef,
    merged: bool,
    stats: Mapping[str, Any],
    train_rows: list[Any],
    val_rows: list[Any],
    collator: Any,
    loss_fn: LossFn,
    eval_before: dict[str, float],
    kind: str | None = None,
) -> TrainResult:
    """Write config + manifest, train with the engine, save the weights, update the manifest."""
    kind = kind or cfg.pref.rlhf_type
    cfg.save_yaml(run_dir / "config.yaml")
    weights = "adapter" if cfg.tune.tuning == "lora" and not merged else "full"
    extra = {
        "seed": cfg.train.seed,
        "data_fingerprint": data_fingerprint(cfg.data),
        "datasets": cfg.data.dataset,
        "template": cfg.model.template,
        "max_length": cfg.data.max_length,
        "objective": {k: v for k, v in vars(cfg.pref).items()},
        "data_stats": dict(stats),
        "eval_before": eval_before,
        **({"base_config_overrides": ref.overrides} if ref.overrides else {}),
    }
    base = ref.base_for_new_run()
    name_adapter_base(model, base)  # checkpoints' adapter_config.json name it, not this machine's cache
    write_manifest(run_dir, kind, base, weights, **extra, **kept_result(run_dir, cfg.train.resume))
    if eval_before:
        shown = ", ".join(
            f"{k} {v:.3f}" for k, v in eval_before.items() if k.startswith(("loss", "rewards/"))
        )
        console.print(f"[bold]held-out before training[/] {shown}")
    result = train(
        model=model,
        tokenizer=tokenizer,
        train_dataset=train_rows,
        eval_dataset=val_rows or None,
        data_collator=collator,
        cfg=cfg.train,
        tune=cfg.tune,
        run_dir=run_dir,
        loss_fn=loss_fn,
        save_model=weights == "adapter" or not merged,
    )
    if result.already_complete:  # nothing trained: the run dir keeps its result
        return result
    if weights == "full" and merged:
        # Adapters cannot be stacked at inference, so the merged start + this run's adapter become one model.
        full = model.merge_and_unload() if hasattr(model, "merge_and_unload") else model
        full.save_pretrained(run_dir, safe_serialization=True)
        tokenizer.save_pretrained(run_dir)
        match_umask(run_dir)
    write_manifest(run_dir, kind, base, weights, **extra, result=_summary(result))
    shown = ", ".join(f"{k} {v:.3f}" for k, v in result.metrics.items() if k.startswith("eval_"))
    next_command = (
        f"temper rm-score {run_dir} --prompt 'a question' --response 'a reply'"
        if kind == "rm"
        else f"temper chat {run_dir}"
    )
    console.print(
        f"[bold green]done[/] {result.global_step} steps, train loss {result.train_loss:.4f}, "
        f"{result.tokens_per_second:.0f} tokens/s\n  held-out after: {shown or 'no validation split'}\n"
        f"  run dir: {run_dir}   next: {next_command}"
    )
    return result

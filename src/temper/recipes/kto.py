"""KTO training, top to bottom: unpaired rows (desirable / undesirable) -> KTOExample -> prompt/completion ids
with a mismatched completion for the KL estimate -> policy (+ reference) -> tuning -> engine -> run dir.

The steps shared with DPO (loading, reference, tuning, run directory) live in recipes/preference.py.

Example:
    >>> from temper.config.preference import PreferenceConfig
    >>> cfg = PreferenceConfig.for_verb("kto", None, ["--dataset", "kto_en_demo.json"])
    >>> result = train_kto(cfg)                                                     # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import torch

from temper.config.preference import PrefCfg, PreferenceConfig
from temper.data.pref_formats import KTO_FORMATS
from temper.data.pref_tokenize import UnpairedCollator, encode_unpaired
from temper.errors import ConfigError
from temper.objectives.kto import kto_loss, kto_metrics
from temper.objectives.logps import Reference, forward_logps, split_pairs
from temper.recipes.preference import (
    LossFn,
    _batches,
    build_reference_and_tune,
    encode_split,
    evaluate_rows,
    finish_run,
    load_policy,
    load_split,
    report_data,
    start_run,
)
from temper.training.results import TrainResult


def train_kto(cfg: PreferenceConfig) -> TrainResult:
    """KTO-train `cfg.model.model` on labelled completions from `cfg.data.dataset` into `cfg.train.output_dir`."""
    if cfg.train.per_device_train_batch_size < 2:
        raise ConfigError(
            "per_device_train_batch_size: KTO needs at least 2 rows per batch to estimate its KL reference point.",
            hint="Use --batch-size 2 or more.",
        )
    run_dir = start_run(cfg)
    # 1. Data: every row becomes a KTOExample (desirable or not), or we stop with every problem listed.
    train_records, val_records = load_split(cfg, KTO_FORMATS)
    _check_labels(train_records)
    # 2. Policy model.
    model, tokenizer, ref, merged = load_policy(cfg)
    # 3. Tokens: each row also carries another row's completion (the mismatched pair for KL).
    train_rows, val_rows, stats = encode_split(
        encode_unpaired, cfg, tokenizer, train_records, val_records, seed=cfg.train.seed
    )
    collator = UnpairedCollator(tokenizer.pad_token_id)
    report_data(stats, train_rows, val_rows)
    # 4. Reference + tuning.
    model, reference = build_reference_and_tune(
        cfg, model, collator, [train_rows, val_rows], precompute_unpaired
    )
    loss_fn = kto_loss_fn(cfg.pref, reference)
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


def _check_labels(records: list[Any]) -> None:
    n_good = sum(bool(r.label) for r in records)
    if n_good == 0 or n_good == len(records):
        only = "desirable" if n_good else "undesirable"
        raise ConfigError(
            f"every training row is {only} ({len(records)} rows); KTO needs both kinds.",
            hint="Add rows with label/kto_tag true and false.",
        )


def kto_loss_fn(pref: PrefCfg, reference: Reference | None) -> LossFn:
    """The engine's loss_fn. The mismatched (KL) half of the batch runs without gradient, as in TRL: the KL
    reference point is detached anyway, so its backward pass would be wasted work."""

    def loss_fn(model: Any, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        matched, mismatched = _halves(inputs)
        policy, _ = forward_logps(model, matched)
        with torch.no_grad():
            policy_kl, _ = forward_logps(model, mismatched)
        if "ref_logps" in inputs:
            ref, ref_kl = inputs["ref_logps"], inputs["ref_kl_logps"]
        else:
            assert reference is not None
            ref, ref_kl = split_pairs(reference.logps(model, inputs))
        label = inputs["kto_label"]
        losses, rewards, kl = kto_loss(
            policy,
            ref,
            label,
            policy_kl,
            ref_kl,
            float(pref.beta or 0.0),
            pref.desirable_weight,
            pref.undesirable_weight,
        )
        return losses.mean(), kto_metrics(rewards, label, policy, kl)

    return loss_fn


def _halves(inputs: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    keys = ("input_ids", "attention_mask", "labels")
    first = {k: split_pairs(inputs[k])[0] for k in keys}
    second = {k: split_pairs(inputs[k])[1] for k in keys}
    return first, second


def precompute_unpaired(model: Any, rows: list[dict[str, Any]], collator: Any, batch_size: int) -> None:
    """Store the frozen model's log-probs of every completion and its mismatched pair: ref_logps / ref_kl_logps."""
    for i, batch in _batches(model, rows, collator, batch_size):
        logps, kl_logps = split_pairs(forward_logps(model, batch)[0])
        for row, a, b in zip(rows[i : i + batch_size], logps.tolist(), kl_logps.tolist(), strict=True):
            row["ref_logps"], row["ref_kl_logps"] = a, b

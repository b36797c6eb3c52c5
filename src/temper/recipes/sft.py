"""Supervised fine-tuning, top to bottom: data -> records -> tokens -> model -> tuning -> engine -> run dir.

Example:
    >>> from temper.config import SFTConfig
    >>> from temper.recipes.sft import train_sft
    >>> cfg = SFTConfig.from_sources("configs/sft_lora_identity.yaml")            # doctest: +SKIP
    >>> result = train_sft(cfg)                                                    # doctest: +SKIP
"""

from __future__ import annotations

import copy
import dataclasses
import random
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from rich.console import Console

from temper.config import SFTConfig, TuneCfg
from temper.data.collate import (
    PackedCollator,
    PadCollator,
    PaddingFreeCollator,
    batches_of,
    length_grouped_order,
    pack_samples,
    padding_ratio,
)
from temper.data.load import load_train_val
from temper.data.mix import mix_note
from temper.data.templates import inherited_system_note, prepare_tokenizer
from temper.data.tokenize import EncodeStats, encode_dataset
from temper.errors import ConfigError
from temper.export.expand import insert_passthrough_layers
from temper.models.attention import NAME as ATTENTION
from temper.models.dtype import pick_dtype
from temper.models.load import load_causal_lm, resolve_model
from temper.models.rope import with_rope
from temper.objectives.sft import sft_loss, unwrap_model
from temper.runs import data_fingerprint, write_manifest
from temper.training import badam
from temper.training.checkpoint import check_output_dir, kept_result, resume_changes
from temper.training.engine import train, use_bf16
from temper.training.launch import main_process_first, trainer_kwargs
from temper.training.optimizers import muon_split, optim_settings
from temper.training.preflight import check_trainer_names, start_notes
from temper.training.results import TrainResult
from temper.tuning import (
    adapter_differences,
    apply_tuning,
    convert_pissa,
    count_parameters,
    name_adapter_base,
    qlora_config,
    save_pissa_start,
)

console = Console(stderr=True, soft_wrap=True)  # long paths stay on one line in logs


def _say(state: PartialState, msg: str) -> None:
    if state.is_main_process:  # one log, not one per process
        console.print(msg)


def train_sft(cfg: SFTConfig, callbacks: Sequence[Any] = ()) -> TrainResult:
    """Fine-tune `cfg.model.model` on `cfg.data.dataset` and write a run directory to `cfg.train.output_dir`.

    `callbacks` are extra transformers TrainerCallbacks (the board and tests use them).
    """
    run_dir = Path(cfg.train.output_dir)
    # Every process checks before any writes (the barrier), then only the main process writes the run dir.
    state = PartialState(cpu=not torch.cuda.is_available())  # the same state the Trainer will build
    check_trainer_names(cfg.train, cfg.tune.tuning)
    check_output_dir(run_dir, cfg.train.resume, cfg.train.overwrite_output_dir)
    fingerprint = data_fingerprint(cfg.data)
    changes = resume_changes(run_dir, cfg.train.resume, cfg.to_dict(), fingerprint, state.num_processes)
    for line in [*start_notes(cfg), *changes]:
        if state.is_main_process:  # one explanation, not one per process
            console.print(line, markup=False, highlight=False)
    state.wait_for_everyone()
    torch.manual_seed(cfg.train.seed)
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)

    # 1. Data: every row becomes a ChatExample/TextExample, or we stop with every problem listed.
    # The main process reads first: bad data stops it with the one full report (the launcher then ends the
    # waiting processes) rather than every process printing the same report.
    with main_process_first(state):
        train_records, val_records = load_train_val(cfg.data, cfg.train.seed)
    mixed = mix_note(
        cfg.data.mix_strategy, cfg.data.interleave_probs, len(cfg.data.dataset), len(train_records)
    )
    if mixed and state.is_main_process:
        console.print(mixed, markup=False, highlight=False)

    # 2. Model and tokenizer. LoRA keeps the frozen base in bf16 when bf16 is on (the adapters stay fp32,
    # peft upcasts them); full and freeze tuning keep fp32 master weights and use autocast instead.
    ref = resolve_model(cfg.model.model, cfg.model.adapter)
    # A LoRA run on a model that has a LoRA adapter (a temper run dir, a LLaMA-Factory or ms-swift output) keeps
    # training that adapter, as LLaMA-Factory does with adapter_name_or_path; full and freeze tuning start from
    # the adapter merged into its base. Neither drops what the adapter learned.
    continues = cfg.tune.tuning == "lora" and bool(ref.adapters)
    if continues and (cfg.tune.quantization or cfg.tune.pissa_init):
        how = "over a quantized base" if cfg.tune.quantization else "from a PiSSA start"
        raise ConfigError(
            f"{ref.name} has a LoRA adapter; temper does not continue an adapter {how}.",
            hint=f"Merge it first (temper export {ref.name} --merge --output-dir DIR) and train on DIR.",
        )
    bf16 = use_bf16(cfg.train)
    dtype = pick_dtype(cfg.model.dtype) if cfg.model.dtype != "auto" else torch.float32
    if cfg.model.dtype == "auto" and bf16 and (cfg.tune.tuning == "lora" or cfg.train.optim == "badam"):
        dtype = torch.bfloat16  # frozen weights need no fp32 copy; BAdam keeps one of its active layer itself
    dtype_name = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}[dtype]
    ref, rope_note = with_rope(ref, cfg.model.rope_scaling, cfg.data.max_length)
    model, tokenizer = load_causal_lm(
        ref,
        dtype=dtype_name,
        attn_implementation=cfg.model.attn_implementation,
        continue_adapter=continues,
        quantization_config=qlora_config(cfg.tune, dtype_name),
    )
    if rope_note:
        _say(state, rope_note)
    if ref.adapters and not continues:
        model = model.merge_and_unload()
    tokenizer = prepare_tokenizer(tokenizer, cfg.model.template, cfg.data.system)
    note = inherited_system_note(tokenizer, cfg.data.system, cfg.model.model, cfg.model.template)
    if note and state.is_main_process:
        console.print(note, markup=False, highlight=False)  # a prompt may hold [brackets]
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))  # a --template override added special tokens

    # 3. Tokens: assistant-only labels; over-long rows are truncated or dropped, and always counted.
    d = cfg.data
    labels = {"train_on_prompt": d.train_on_prompt, "mask_history": d.mask_history}
    train_rows, stats = encode_dataset(
        train_records, tokenizer, d.max_length, d.truncation, system=d.system, **labels
    )
    val_rows, _ = encode_dataset(
        val_records, tokenizer, d.max_length, d.truncation, system=d.system, **labels
    )
    if cfg.data.packing:
        train_rows = pack_samples(train_rows, cfg.data.max_length)
        val_rows = pack_samples(val_rows, cfg.data.max_length) if val_rows else val_rows
    sampling = _sampling(cfg)
    padded = _padding_estimate([len(r["input_ids"]) for r in train_rows], cfg, sampling)
    padding_free = _padding_free(cfg, model.config._attn_implementation, padded)
    collator: Any = (
        PackedCollator(tokenizer.pad_token_id)
        if cfg.data.packing
        else PaddingFreeCollator(tokenizer.pad_token_id)
        if padding_free
        else PadCollator(tokenizer.pad_token_id)
    )
    layout = _batch_layout(cfg, sampling, padded, padding_free)
    _say(state, _data_line(stats, train_rows, val_rows, cfg, layout))

    # 4. Tuning: which parameters train.
    if cfg.train.gradient_checkpointing:
        model.config.use_cache = False
    reference = None  # ASFT's: the starting weights (LoRA: the model with its adapters off, no copy)
    if continues:
        _say(state, _continue_line(ref, model, cfg))
    else:
        tune = _expand(model, cfg.tune, ref.name, state)
        if cfg.train.use_asft_loss and tune.tuning != "lora":
            reference = copy.deepcopy(model).eval().requires_grad_(False)
        model = apply_tuning(model, tune)
        if cfg.tune.pissa_init and state.is_main_process:
            save_pissa_start(model, run_dir)
    if cfg.train.gradient_checkpointing and cfg.tune.tuning == "lora":
        model.enable_input_require_grads()  # checkpointed blocks need a grad-carrying input with a frozen embedding
    name_adapter_base(model, ref.base_for_new_run(continues))
    trainable, total = count_parameters(model)
    _say(
        state,
        f"[bold]model[/] {ref.name} ({total / 1e6:.1f}M params, {dtype_name}, "
        f"{unwrap_model(model).config._attn_implementation} attention); "
        f"tuning={cfg.tune.tuning}: {trainable / 1e6:.2f}M trainable ({100 * trainable / total:.2f}%)",
    )
    global_batch = (
        cfg.train.per_device_train_batch_size * cfg.train.gradient_accumulation_steps * state.num_processes
    )
    optim = ""
    if cfg.train.optim == "muon":
        muon, rest = muon_split(model)
        optim = f"; optim muon: Muon steps {len(muon)} matrices, AdamW the other {len(rest)} tensors"
    elif cfg.train.optim == "badam":
        settings = optim_settings("badam", cfg.train.trainer_args.get("optim_args"))
        layers = unwrap_model(model).config.num_hidden_layers
        optim = "; " + badam.describe(settings, layers, dtype_name, cfg.train.torch_compile)
    _say(
        state,
        f"[bold]batch[/] global {global_batch} = {cfg.train.per_device_train_batch_size} per device x "
        f"{cfg.train.gradient_accumulation_steps} accumulation x {state.num_processes} process(es){optim}",
    )

    # 5. Run directory contract: config + manifest first, so a crashed run is still identifiable and resumable.
    if state.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)  # only now: a bad dataset or model leaves no empty folder
        cfg.save_yaml(run_dir / "config.yaml")
    manifest_extra = {
        "seed": cfg.train.seed,
        "data_fingerprint": fingerprint,
        "datasets": cfg.data.dataset,
        "template": cfg.model.template,
        "data_stats": {k: v for k, v in stats.items() if k != "lengths"},
        "batches": layout,
        "world_size": state.num_processes,
        **({"base_config_overrides": ref.overrides} if ref.overrides else {}),
    }
    weights = "adapter" if cfg.tune.tuning == "lora" else "full"
    if state.is_main_process:
        kept = kept_result(run_dir, cfg.train.resume)
        write_manifest(run_dir, "sft", ref.base_for_new_run(continues), weights, **manifest_extra, **kept)

    # 6. Train.
    result = train(
        model=model,
        tokenizer=tokenizer,
        train_dataset=train_rows,
        eval_dataset=val_rows or None,
        data_collator=collator,
        cfg=cfg.train,
        tune=cfg.tune,
        run_dir=run_dir,
        loss_fn=partial(
            sft_loss,
            dft=cfg.train.use_dft_loss,
            accuracy=cfg.train.compute_accuracy,
            label_smoothing=cfg.train.label_smoothing_factor,
            eaft_alpha=cfg.train.eaft_alpha if cfg.train.use_eaft_loss else None,
            asft_alpha=cfg.train.asft_alpha if cfg.train.use_asft_loss else None,
            reference=reference,
        ),
        sampling=sampling,
        extra_args=trainer_kwargs(cfg.dist, cfg.tune.tuning),
        callbacks=[*callbacks, *_generation_eval(cfg, val_records, run_dir)],
    )
    if result.already_complete:  # nothing trained: the run dir keeps its result
        return result
    if state.is_main_process:
        if cfg.tune.pissa_init:
            convert_pissa(model, run_dir)
        write_manifest(
            run_dir,
            "sft",
            ref.base_for_new_run(continues),
            weights,
            **manifest_extra,
            result=_summary(result),
        )
        _report_end(result)
    return result


# Padding share of the padded batches above which `--padding-free auto` turns on. Measured on the SFT bench's
# batches (SmolLM2 LoRA, bf16, 1 thread, padded and padding-free alternated batch by batch): padding-free was
# 0.986x at 1.2% padding (length-grouped), 1.178x at 24.2% (a random order), 1.291x at 34.8%: about break-even
# at 3% (the stacking and cat around the attention call cost a little), so it waits for 5%.
PADDING_FREE_ABOVE = 0.05


def _padding_free(cfg: SFTConfig, attn: str, padded: float) -> bool:
    """`auto`: on when padded batches in this order would waste more than PADDING_FREE_ABOVE and attention runs
    per sample: temper's CPU kernel outside torch.compile (compiled layers cannot read the boundaries without
    breaking the graph) and flash-attention's varlen kernels. sdpa and eager would attend over the whole row
    under a block-diagonal mask, whose cross-sample blocks can cost more than the padding saved. Packed rows
    have their own collator."""
    if cfg.data.packing or cfg.data.padding_free == "false":
        return False
    if cfg.data.padding_free == "true":
        return True
    if padded <= PADDING_FREE_ABOVE:
        return False
    return attn.startswith("flash_attention") or (attn == ATTENTION and not cfg.train.torch_compile)


def _sampling(cfg: SFTConfig) -> str:
    """Packed rows all have max_length tokens: grouping them by length would only cost the sort."""
    strategy = cfg.train.train_sampling_strategy
    return "random" if cfg.data.packing and strategy == "group_by_length" else strategy


def _generation_eval(cfg: SFTConfig, val_records: list[Any], run_dir: Path) -> list[Any]:
    if cfg.data.eval_dataset != "general_qa":
        return []
    if not val_records:
        raise ConfigError(
            "eval_dataset=general_qa needs a validation split, and there is none.",
            hint="Add --val-size 0.1 (a fraction), --val-size 50 (rows) or --val-dataset FILE.",
        )
    from temper.training.gen_eval import GenerationEval

    return [GenerationEval(val_records, cfg.data.system, run_dir)]


def _continue_line(ref: Any, model: Any, cfg: SFTConfig) -> str:
    """Says which adapter keeps training, and which LoRA settings of the config it cannot take."""
    saved = model.peft_config["default"]
    line = (
        f"[bold]continuing[/] the LoRA adapter of {next(iter(ref.adapters.values()))} (rank {saved.r}, "
        f"alpha {saved.lora_alpha}) over {ref.base_name}"
    )
    differs = adapter_differences(saved, cfg.tune)
    return line + (f"; its own settings apply, not: {'; '.join(differs)}" if differs else "")


def _padding_estimate(lengths: list[int], cfg: SFTConfig, sampling: str) -> float:
    """Padding share of padded batches in the order the sampler uses (a seeded shuffle stands in for the random
    one; packed rows go in file order)."""
    bs = cfg.train.per_device_train_batch_size
    strategy = "sequential" if cfg.data.packing else sampling
    if strategy == "group_by_length":
        order = length_grouped_order(lengths, bs, cfg.train.seed)
    elif strategy == "random":
        order = random.Random(cfg.train.seed).sample(range(len(lengths)), len(lengths))
    else:
        order = list(range(len(lengths)))
    return padding_ratio(batches_of(lengths, order, bs))


def _batch_layout(cfg: SFTConfig, sampling: str, padded: float, padding_free: bool) -> dict[str, Any]:
    """How the training batches are laid out: the data line says it, the manifest keeps it (`temper data stats`
    reports it)."""
    return {
        "layout": "packed" if cfg.data.packing else "padding-free" if padding_free else "padded",
        "order": sampling,
        "per_device_batch_size": cfg.train.per_device_train_batch_size,
        "padding": 0.0 if padding_free else padded,
        "padding_if_padded": padded,
    }


def _data_line(
    stats: EncodeStats,
    train_rows: list[Any],
    val_rows: list[Any],
    cfg: SFTConfig,
    layout: dict[str, Any],
) -> str:
    padding = (
        f"padding 0% (padding-free batches; padded {100 * layout['padding_if_padded']:.1f}%)"
        if layout["layout"] == "padding-free"
        else f"padding {100 * layout['padding']:.1f}%"
    )
    return (
        f"[bold]data[/] {len(train_rows)} train / {len(val_rows)} val "
        f"{'packed rows' if cfg.data.packing else 'samples'}; of the {stats['n_rows']} train rows, truncated "
        f"{stats['n_truncated']}, dropped {stats['n_dropped']} (max_length {cfg.data.max_length}); "
        f"{padding}; order {layout['order']}"
    )


def _summary(result: TrainResult) -> dict[str, Any]:
    return {
        "global_step": result.global_step,
        "train_loss": result.train_loss,
        "tokens": result.tokens,
        "tokens_per_second": round(result.tokens_per_second, 2),
        "peak_rss_mb": round(result.peak_rss_mb, 1),
        "metrics": result.metrics,
        "stopped_at": result.stopped_at,  # not None: stopped early by a signal; `--resume auto` continues
    }


def _report_end(result: TrainResult) -> None:
    if result.stopped_at is not None:
        console.print(
            f"[bold yellow]stopped[/] at step {result.stopped_at}; checkpoint saved. "
            f"Continue with: --output-dir {result.run_dir} --resume auto"
        )
        return
    console.print(
        f"[bold green]done[/] {result.global_step} steps, train loss {result.train_loss:.4f}, "
        f"{result.tokens_per_second:.0f} tokens/s, peak RSS {result.peak_rss_mb:.0f} MB\n"
        f"  run dir: {result.run_dir}  (config.yaml, temper_run.json, metrics.jsonl, loss.png, weights, tokenizer)\n"
        f"  next:    temper chat {result.run_dir}"
    )


def _expand(model: Any, tune: TuneCfg, name: str, state: PartialState) -> TuneCfg:
    """LLaMA Pro in one run (`expand_blocks`, ms-swift's train_type llamapro): the pass-through layers go in
    before tuning picks what trains, and tuning then trains only them."""
    if not tune.expand_blocks:
        return tune
    inserted = insert_passthrough_layers(unwrap_model(model), tune.expand_blocks, name)
    _say(
        state,
        f"[bold]LLaMA Pro[/] {len(inserted)} pass-through layers inserted at {inserted}; only they train",
    )
    return dataclasses.replace(tune, use_llama_pro=True, freeze_trainable_layers=tune.expand_blocks)

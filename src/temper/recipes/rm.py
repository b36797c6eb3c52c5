"""Reward model training and scoring, top to bottom: pairs -> PreferenceExample -> prompt+reply ids ->
causal LM with a scalar head (AutoModelForSequenceClassification, num_labels=1) -> tuning -> Bradley-Terry
loss in the engine -> run dir; then `RewardModel.load(run_dir).score(messages)` (or `temper rm-score`).

The head reads the hidden state of the last non-padding token (transformers' sequence-classification pooling).
Training and scoring tokenize a conversation with the same functions, so a score is what the head learned on.
With LoRA the new head trains fully (peft `modules_to_save`) and is saved inside the adapter file.

Example:
    >>> rm = RewardModel.load("runs/rm")                                            # doctest: +SKIP
    >>> rm.score([{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}])  # doctest: +SKIP
    1.83
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from temper.config.preference import PreferenceConfig
from temper.data.pref_formats import PREFERENCE_FORMATS
from temper.data.pref_tokenize import (
    PairCollator,
    chat_dicts,
    encode_pairs,
    fit_lengths,
    reply_ids,
    token_ids,
)
from temper.data.records import Message
from temper.data.templates import inherited_system_note, prepare_tokenizer, render_prompt
from temper.errors import ConfigError, TemperError
from temper.models.attention import pick_attention
from temper.models.dtype import pick_dtype
from temper.models.load import RUN_MANIFEST, ModelRef, load_causal_lm, load_tokenizer, resolve, resolve_model
from temper.objectives.logps import split_pairs
from temper.objectives.rm import bradley_terry_loss
from temper.recipes.preference import (
    LossFn,
    console,
    encode_split,
    evaluate_rows,
    finish_run,
    load_split,
    report_data,
    start_run,
)
from temper.runs import read_manifest
from temper.training.results import TrainResult
from temper.tuning import apply_tuning, count_parameters, quiet_peft


def train_rm(cfg: PreferenceConfig) -> TrainResult:
    """Train a pairwise reward model on `cfg.data.dataset` into `cfg.train.output_dir`."""
    if cfg.tune.quantization:
        raise ConfigError(
            f"quantization {cfg.tune.quantization}: temper trains reward models on unquantized weights (their "
            "new score head and the merged start both need them).",
            hint="Remove --quantization; LoRA (the default) already trains few parameters.",
            key="quantization",
        )
    run_dir = start_run(cfg)
    # 1. Data: the same pairs as DPO.
    train_records, val_records = load_split(cfg, PREFERENCE_FORMATS)
    # 2. Model: the causal LM's backbone under a new 1-output head.
    model, tokenizer, ref, merged = load_reward_backbone(cfg)
    # 3. Tokens: prompt + chosen and prompt + rejected, exactly as for DPO.
    train_rows, val_rows, stats = encode_split(encode_pairs, cfg, tokenizer, train_records, val_records)
    collator = PairCollator(tokenizer.pad_token_id)
    report_data(stats, train_rows, val_rows)
    # 4. Tuning: the head always trains.
    model = apply_tuning(model, cfg.tune, modules_to_save=["score"])
    trainable, total = count_parameters(model)
    print(
        f"reward model: {total / 1e6:.1f}M params, {trainable / 1e6:.2f}M trainable (tuning={cfg.tune.tuning})"
    )
    loss_fn = rm_loss_fn(cfg.pref.rm_margin)
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
        "rm",
    )


def load_reward_backbone(cfg: PreferenceConfig) -> tuple[Any, Any, ModelRef, bool]:
    """(sequence-classification model, tokenizer, ref, merged). fp32 unless asked: the new head and its
    optimizer state are small, and a bf16 head would round away the small score differences it learns from."""
    from transformers import AutoModelForSequenceClassification

    ref = resolve_model(cfg.model.model, cfg.model.adapter)
    dtype = pick_dtype(cfg.model.dtype) if cfg.model.dtype != "auto" else torch.float32
    merged = bool(ref.adapters)
    if merged:  # an SFT LoRA run: merge it, then move its backbone under the new head
        causal, tokenizer = load_causal_lm(ref, dtype="fp32")
        causal = causal.merge_and_unload()
        config = copy.deepcopy(causal.config)
        config.num_labels = 1  # from_config passes extra kwargs to the model's __init__, not to its config
        model = AutoModelForSequenceClassification.from_config(config, dtype=dtype)
        model.base_model.load_state_dict(causal.base_model.state_dict())
    else:
        tokenizer = load_tokenizer(ref)
        model = AutoModelForSequenceClassification.from_pretrained(
            ref.path,
            num_labels=1,
            dtype=dtype,
            local_files_only=True,
            attn_implementation=pick_attention(cfg.model.attn_implementation),
        )
    tokenizer = prepare_tokenizer(tokenizer, cfg.model.template, cfg.data.system)
    if note := inherited_system_note(tokenizer, cfg.data.system, cfg.model.model, cfg.model.template):
        console.print(note, markup=False, highlight=False)
    model.config.pad_token_id = tokenizer.pad_token_id  # pooling finds the last token through it
    model.train()
    return model, tokenizer, ref, merged


@contextmanager
def quiet_load_report(active: bool) -> Iterator[None]:
    """transformers' warnings (its load report) off while `active`, as they were after."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    if active:
        hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def scores(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
    return out.logits.squeeze(-1).float()


def rm_loss_fn(margin: float = 0.0) -> LossFn:
    """The engine's loss_fn: score chosen and rejected in one forward pass, Bradley-Terry loss."""

    def loss_fn(model: Any, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        chosen, rejected = split_pairs(scores(model, inputs))
        losses, metrics = bradley_terry_loss(chosen, rejected, margin)
        return losses.mean(), metrics

    return loss_fn


class RewardModel:
    """A trained reward model run directory, ready to score conversations that end with an assistant reply."""

    def __init__(self, model: Any, tokenizer: Any, max_length: int = 1024) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_length = max_length

    @classmethod
    def load(cls, run_dir: str | Path, dtype: str = "fp32") -> RewardModel:
        """Load `run_dir` (written by `temper rm`), or a Hugging Face sequence-classification dir with one label
        (`temper export RMRUN --merge` writes one); raises TemperError for other run kinds."""
        from transformers import AutoModelForSequenceClassification

        if not (Path(run_dir) / RUN_MANIFEST).is_file():
            return cls._load_plain(Path(run_dir), dtype)
        manifest = read_manifest(run_dir)
        if manifest.get("kind") != "rm":
            raise TemperError(
                f"{run_dir} is a {manifest.get('kind')!r} run, not a reward model.",
                hint="Train one with `temper rm --dataset PAIRS.json`.",
            )
        ref = resolve(str(run_dir))
        tokenizer = load_tokenizer(ref)
        src = Path(run_dir) if manifest.get("weights") == "full" else ref.path
        with quiet_load_report(manifest.get("weights") == "adapter"):
            # The base has no score head: transformers reports it "newly initialized", but the adapter holds
            # the trained one (modules_to_save), loaded just below.
            model = AutoModelForSequenceClassification.from_pretrained(
                src, num_labels=1, dtype=pick_dtype(dtype), local_files_only=True
            )
        if manifest.get("weights") == "adapter":
            from peft import PeftModel

            with quiet_peft():
                model = PeftModel.from_pretrained(model, str(run_dir))
        model.config.pad_token_id = tokenizer.pad_token_id
        max_length = int(manifest.get("max_length", 1024))
        return cls(model, tokenizer, max_length)

    @classmethod
    def _load_plain(cls, path: Path, dtype: str) -> RewardModel:
        from transformers import AutoConfig, AutoModelForSequenceClassification

        config = (
            AutoConfig.from_pretrained(path, local_files_only=True)
            if (path / "config.json").is_file()
            else None
        )
        heads = [
            a
            for a in (getattr(config, "architectures", None) or [])
            if a.endswith("ForSequenceClassification")
        ]
        if config is None or not heads or config.num_labels != 1:
            raise TemperError(
                f"{path} is neither a `temper rm` run nor a reward model (a sequence-classification model with one "
                "output).",
                hint="Pass a `temper rm` run dir, or its merged export (temper export RMRUN --merge).",
            )
        tokenizer = load_tokenizer(resolve(str(path)))
        model = AutoModelForSequenceClassification.from_pretrained(
            path, dtype=pick_dtype(dtype), local_files_only=True
        )
        model.config.pad_token_id = tokenizer.pad_token_id
        return cls(model, tokenizer, int(getattr(config, "reward_max_length", 1024)))

    def encode(self, messages: list[dict[str, str]]) -> list[int]:
        """Token ids of a conversation, tokenized as in training (prompt, then the last reply)."""
        if not messages or messages[-1].get("role") != "assistant":
            raise TemperError("a conversation to score must end with an assistant message.")
        system = messages[0]["content"] if messages[0].get("role") == "system" else None
        prompt = [Message(m["role"], m["content"]) for m in messages[1 if system else 0 : -1]]
        dicts = chat_dicts(prompt, system)
        prompt_text = render_prompt(self.tokenizer, dicts, add_generation_prompt=True)
        reply = reply_ids(self.tokenizer, dicts, prompt_text, messages[-1]["content"])
        prompt_ids, (reply,), _ = fit_lengths(
            token_ids(self.tokenizer, prompt_text), [reply], self.max_length
        )
        return prompt_ids + reply

    def score_batch(self, conversations: list[list[dict[str, str]]]) -> list[float]:
        """One scalar per conversation (higher = preferred)."""
        rows = [{"prompt_ids": self.encode(c), "chosen_ids": [], "rejected_ids": []} for c in conversations]
        batch = PairCollator(self.tokenizer.pad_token_id)(rows)
        n = len(rows)
        device = next(self.model.parameters()).device
        with torch.no_grad():
            out = scores(self.model, {k: v[:n].to(device) for k, v in batch.items()})
        return [float(x) for x in out]

    def score(self, messages: list[dict[str, str]]) -> float:
        """The reward of one conversation."""
        return self.score_batch([messages])[0]

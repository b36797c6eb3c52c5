"""Embedding training, top to bottom: pair records -> loss choice -> encoder -> tuning -> engine -> a run dir
that is a plain HF encoder folder plus the pooling config (so `embed_texts(run_dir, ...)`, a mean-pooling
`/v1/embeddings` server and `SentenceTransformer(run_dir)` all embed the same way).

Pairs with a similarity label train with the cosine loss; anchor/positive pairs without labels train with
InfoNCE over in-batch negatives. Validation pairs are scored before and after training (mean cosine of the
pairs, Spearman against labels when present, in-set retrieval accuracy), so the run shows what changed.

Example:
    >>> from temper.config.encoder import EmbedConfig
    >>> cfg = EmbedConfig.from_sources(None, ["--dataset", "pairs.jsonl", "--output-dir", "runs/emb"])
    >>> result = train_embedder(cfg)       # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from temper.config.encoder import EmbedConfig
from temper.data.cls_formats import read_embedding_file
from temper.data.records import EmbeddingExample
from temper.errors import ConfigError
from temper.models.adapters import attach_adapters, continue_lora
from temper.models.dtype import pick_dtype
from temper.models.heads import embed_texts, write_pooling
from temper.models.load import load_tokenizer, resolve
from temper.objectives.embedding import EmbeddingCollator, embedding_loss_fn
from temper.recipes.encoder_tools import sample, split_off
from temper.runs import fingerprint_files, write_json_atomic, write_manifest
from temper.training.checkpoint import check_output_dir, resume_changes
from temper.training.engine import train
from temper.training.preflight import check_trainer_names, start_notes
from temper.training.results import TrainResult
from temper.tuning import apply_tuning

console = Console(stderr=True)


@dataclass
class EmbedResult:
    run_dir: Path
    loss: str
    before: dict[str, float] = field(default_factory=dict)  # validation metrics of the base model
    after: dict[str, float] = field(default_factory=dict)  # ... and of the trained one
    train: TrainResult | None = None
    seconds: float = 0.0


def pair_metrics(model: Any, tokenizer: Any, pairs: list[EmbeddingExample], pooling: str) -> dict[str, float]:
    """Mean pair cosine, its margin over non-pairs, Spearman(cosine, label) when labelled, and top-1
    retrieval of each positive among all positives of the set.

    Example:
        >>> m = pair_metrics(model, tok, pairs, "mean")   # doctest: +SKIP
    """
    if not pairs:
        return {}
    a = embed_texts(model, [p.anchor for p in pairs], tokenizer, pooling)
    b = embed_texts(model, [p.positive for p in pairs], tokenizer, pooling)
    cos = (a * b).sum(-1)
    sims = a @ b.T
    off = (sims.sum() - sims.diagonal().sum()) / max(1, len(pairs) * (len(pairs) - 1))
    out = {
        "pair_cosine": float(cos.mean()),
        # how much closer a pair is than two unrelated texts of the set: the quantity contrastive training raises
        "pair_margin": float(cos.mean() - off),
        "retrieval_accuracy": float(((a @ b.T).argmax(-1) == torch.arange(len(pairs))).float().mean()),
    }
    labels = [p.label for p in pairs]
    if all(x is not None for x in labels) and len(set(labels)) > 1:
        from scipy.stats import spearmanr

        out["spearman"] = float(spearmanr(cos.numpy(), labels)[0])
    return out


def _rows(pairs: list[EmbeddingExample]) -> list[dict[str, Any]]:
    return [{k: v for k, v in asdict(p).items() if k != "source"} for p in pairs]


def train_embedder(cfg: EmbedConfig, callbacks: Sequence[Any] = ()) -> EmbedResult:
    """Train sentence embeddings as configured and write the run directory."""
    from transformers import AutoModel

    start = time.perf_counter()
    run_dir = Path(cfg.train.output_dir)
    check_trainer_names(cfg.train, cfg.tune.tuning)
    check_output_dir(run_dir, cfg.train.resume, cfg.train.overwrite_output_dir)
    fingerprint = fingerprint_files(list(cfg.data.dataset))
    for line in [*start_notes(cfg), *resume_changes(run_dir, cfg.train.resume, cfg.to_dict(), fingerprint)]:
        console.print(line, markup=False, highlight=False)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.train.seed)

    # 1. Pairs, validation split and the loss (cosine needs a label on every pair).
    if not cfg.data.dataset:
        raise ConfigError(
            "embed needs --dataset FILE (pairs).", hint="See docs/encoder.md for the pair formats."
        )
    pairs = [p for path in cfg.data.dataset for p in read_embedding_file(path)]
    if cfg.data.validation:
        train_pairs, val_pairs = pairs, read_embedding_file(cfg.data.validation)
    else:
        train_pairs, val_pairs = split_off(pairs, cfg.data.val_size, cfg.train.seed)
    train_pairs = sample(train_pairs, cfg.data.max_train_samples, cfg.train.seed)
    labelled = all(p.label is not None for p in train_pairs)
    loss = cfg.data.loss if cfg.data.loss != "auto" else ("cosine" if labelled else "infonce")
    if loss == "cosine" and not labelled:
        missing = next(p.source for p in train_pairs if p.label is None)
        raise ConfigError(
            f"loss=cosine needs a label on every pair; {missing} has none.", hint="Use --loss infonce."
        )
    console.print(f"[bold]data[/] {len(train_pairs)} train / {len(val_pairs)} validation pairs; loss={loss}")

    # 2. Encoder (the backbone only: no head), tuning, and the validation score before training.
    ref = resolve(cfg.model.model)
    tokenizer = load_tokenizer(ref)
    model = AutoModel.from_pretrained(ref.path, local_files_only=True, dtype=pick_dtype(cfg.model.dtype))
    # As in SFT: on an encoder with a LoRA adapter (a LoRA embed run), a LoRA run continues that adapter and
    # full/freeze start from it merged; neither drops what it learned.
    continues = cfg.tune.tuning == "lora" and bool(ref.adapters)
    if continues:
        model = continue_lora(model, next(iter(ref.adapters.values())))
    else:
        if ref.adapters:
            model = attach_adapters(model, ref.adapters).merge_and_unload()
        model = apply_tuning(model, cfg.tune)
    before = pair_metrics(model, tokenizer, val_pairs, cfg.data.pooling)

    # 3. Run directory contract, then train.
    cfg.save_yaml(run_dir / "config.yaml")
    weights = "adapter" if cfg.tune.tuning == "lora" else "full"
    extra = {
        "seed": cfg.train.seed,
        "loss": loss,
        "pooling": cfg.data.pooling,
        "data_fingerprint": fingerprint,
    }
    base = ref.base_for_new_run(continues)
    write_manifest(run_dir, "embed", base, weights, **extra)
    result = train(
        model=model,
        tokenizer=tokenizer,
        train_dataset=_rows(train_pairs),
        eval_dataset=_rows(val_pairs) or None,
        data_collator=EmbeddingCollator(tokenizer, cfg.data.max_length),
        cfg=cfg.train,
        tune=cfg.tune,
        run_dir=run_dir,
        loss_fn=embedding_loss_fn(loss, cfg.data.pooling, cfg.data.temperature),
        callbacks=callbacks,
    )
    write_pooling(run_dir, cfg.data.pooling, int(model.config.hidden_size))
    after = pair_metrics(model, tokenizer, val_pairs, cfg.data.pooling)
    write_json_atomic(run_dir / "eval_results.json", {"before": before, "after": after})
    write_manifest(run_dir, "embed", base, weights, **extra, result={"before": before, "after": after})
    for name in after:
        console.print(f"[bold]{name}[/] {before.get(name, float('nan')):.4f} -> {after[name]:.4f}")
    return EmbedResult(run_dir, loss, before, after, result, time.perf_counter() - start)

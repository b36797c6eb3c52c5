"""sft_loss (head applied to labelled positions only) must equal the plain transformers loss."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from temper.config import TuneCfg
from temper.objectives.sft import reference_loss, sft_loss
from temper.tuning import apply_tuning


def _batch(vocab: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (2, 12), generator=g)
    labels = ids.clone()
    labels[:, :5] = -100  # prompt
    labels[1, 9:] = -100  # padding of the shorter row
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


@pytest.mark.parametrize("tuning", ["full", "lora"])
def test_sft_loss_equals_transformers_loss(tiny_llama_dir: Path, tuning: str) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32)
    model = apply_tuning(model, TuneCfg(tuning=tuning, lora_rank=4))
    batch = _batch(model.config.vocab_size)
    ours, _ = sft_loss(model, batch)
    theirs = reference_loss(model, batch)
    assert torch.allclose(ours, theirs, atol=1e-5), (ours.item(), theirs.item())
    ours.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)


def test_sft_loss_normalises_by_global_token_count(tiny_llama_dir: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32)
    batch = _batch(model.config.vocab_size)
    n = int(batch["labels"][:, 1:].ne(-100).sum())
    mean, _ = sft_loss(model, batch)
    scaled, _ = sft_loss(model, batch, num_items_in_batch=torch.tensor(2 * n))
    assert torch.allclose(scaled, mean / 2, atol=1e-6)

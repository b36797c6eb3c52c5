"""Padding, length grouping, padding-free batches and packing: a packed batch gives the same per-sample losses as
unpacked, a padding-free batch the same loss and gradients as the padded one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from temper.data.collate import (
    IGNORE,
    PackedCollator,
    PadCollator,
    PaddingFreeCollator,
    batches_of,
    length_grouped_order,
    pack_samples,
    padding_ratio,
)
from temper.data.load import load_records
from temper.data.tokenize import encode_dataset


def test_pad_collator() -> None:
    feats: list[dict[str, Any]] = [
        {"input_ids": [5, 6, 7], "labels": [-100, 6, 7], "extra": 1},
        {"input_ids": [8], "labels": [8]},
    ]
    b = PadCollator(0, pad_to_multiple_of=4)(feats)
    assert b["input_ids"].tolist() == [[5, 6, 7, 0], [8, 0, 0, 0]]
    assert b["labels"].tolist() == [[-100, 6, 7, -100], [8, -100, -100, -100]]
    assert b["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 0, 0, 0]]
    assert set(b) == {"input_ids", "labels", "attention_mask"}


def test_pack_samples_fills_rows_and_resets_positions() -> None:
    samples = [{"input_ids": list(range(n)), "labels": list(range(n))} for n in (5, 3, 4, 2, 6)]
    rows = pack_samples(samples, 8)
    assert sorted(len(r["input_ids"]) for r in rows) == [4, 8, 8]  # best-fit decreasing: 6+2, 5+3, 4
    for r in rows:
        starts = [i for i, p in enumerate(r["position_ids"]) if p == 0]
        assert all(r["labels"][s] == IGNORE for s in starts)  # never predicted from the previous sample
    total = sum(sum(x != IGNORE for x in r["labels"]) for r in rows)
    assert total == sum(n - 1 for n in (5, 3, 4, 2, 6))
    with pytest.raises(ValueError, match="exceed max_length"):
        pack_samples(samples, 5)


def test_length_grouping_reduces_padding() -> None:
    import random

    rng = random.Random(0)
    lengths = [rng.randint(10, 500) for _ in range(403)]  # not a multiple of the batch: a short last batch
    order = length_grouped_order(lengths, 4, seed=1)
    assert sorted(order) == list(range(403)) and order == length_grouped_order(lengths, 4, seed=1)
    grouped = padding_ratio(batches_of(lengths, order, 4))
    plain = padding_ratio(lengths, batch_size=4)
    assert grouped < 0.05 < 0.3 < plain
    assert padding_ratio([[4, 2], [3, 3]]) == pytest.approx(2 / 14)


def _per_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(
        logits[:-1].float(), labels[1:], ignore_index=IGNORE, reduction="none"
    )


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_batch_gives_the_same_per_sample_losses(
    tiny_llama_dir: Path, tok: Any, lf: Path, attn: str
) -> None:
    from transformers import AutoModelForCausalLM

    records = load_records([str(lf / "glaive_toolcall_en_demo.json#5"), str(lf / "c4_demo.jsonl#2")], seed=3)
    samples, _ = encode_dataset(records, tok, 160)
    model = AutoModelForCausalLM.from_pretrained(
        tiny_llama_dir, dtype=torch.float32, attn_implementation=attn
    )
    model.train()  # the training configuration: dropout is 0 in this config, and use_cache is on by default
    with torch.no_grad():
        padded = PadCollator(tok)(samples)
        logits = model(input_ids=padded["input_ids"], attention_mask=padded["attention_mask"]).logits
        expected = {}
        for i, s in enumerate(samples):
            n = len(s["input_ids"])
            lab = torch.tensor(s["labels"])
            loss = _per_token_loss(logits[i, :n], lab)
            expected[tuple(s["input_ids"])] = loss[lab[1:] != IGNORE].mean().item()
        rows = pack_samples(samples, 320)
        assert len(rows) < len(samples)
        batch = PackedCollator(tok)(rows)
        assert "attention_mask" not in batch
        assert batch.pop("num_tokens") == sum(len(r["input_ids"]) for r in rows)
        out = model(**batch)
    got = {}
    for r, row in enumerate(rows):
        starts = [i for i, p in enumerate(row["position_ids"]) if p == 0] + [len(row["position_ids"])]
        for a, z in zip(starts, starts[1:], strict=False):
            lab = torch.tensor(row["labels"][a:z])
            loss = _per_token_loss(out.logits[r, a:z], lab)
            got[tuple(row["input_ids"][a:z])] = loss[lab[1:] != IGNORE].mean().item()
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-5)
    # The model's own mean loss over the packed batch equals the token-weighted mean of the unpacked one.
    assert torch.isfinite(out.loss)


@pytest.mark.parametrize(("attn", "dtype"), [("temper", torch.bfloat16), ("sdpa", torch.float32)])
def test_padding_free_batch_gives_the_padded_loss_and_gradients(
    tiny_llama_dir: Path, tok: Any, lf: Path, attn: str, dtype: torch.dtype
) -> None:
    """The SFT objective on real rows of three lengths: one padded batch against the same rows end to end in
    one row. temper's kernel attends per sample from the boundaries; sdpa gets transformers' block-diagonal mask."""
    from transformers import AutoModelForCausalLM

    import temper.models.attention  # noqa: F401  (registers "temper" with transformers)
    from temper.objectives.sft import sft_loss

    records = load_records(
        [str(lf / "alpaca_en_demo.json#3"), str(lf / "glaive_toolcall_en_demo.json#1")], seed=5
    )
    samples, _ = encode_dataset(records, tok, 1024)
    lengths = [len(s["input_ids"]) for s in samples]
    assert len(set(lengths)) > 2  # padding to the longest is real work here
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=dtype, attn_implementation=attn)
    padded, free = PadCollator(tok)(samples), PaddingFreeCollator(tok)(samples)
    assert free["input_ids"].shape == (1, sum(lengths)) and "attention_mask" not in free
    assert free["cu_seq_lens_q"].tolist() == [0, *torch.tensor(lengths).cumsum(0).tolist()]
    assert free.pop("num_tokens") == sum(lengths) == int(padded["attention_mask"].sum())
    results = []
    for batch in (padded, free):
        model.zero_grad()
        loss, _ = sft_loss(model, batch)
        loss.backward()
        results.append(
            (float(loss.detach()), torch.cat([p.grad.flatten().float() for p in model.parameters()]))
        )
    (pad_loss, pad_grad), (free_loss, free_grad) = results
    tol = 2e-2 if dtype == torch.bfloat16 else 1e-5
    assert free_loss == pytest.approx(pad_loss, rel=tol)
    assert float((free_grad - pad_grad).norm() / pad_grad.norm()) < tol

"""Batches: dynamic padding, length grouping, and packing without cross-sample attention.

Packing relies on transformers' packed-sequence detection (masking_utils.find_packed_sequence_indices): when a
batch has `position_ids` that restart at 0 for every sample and NO attention_mask, sdpa and eager attention build
a block-diagonal causal mask, and flash-attention uses the same position_ids for varlen kernels. The detection
is skipped when a KV cache exists, and models create one when `use_cache` is on (the config default), so the
packed batch carries `use_cache=False`. tests/data/test_collate.py checks per-sample losses against unpacked.

    >>> batch = PadCollator(tok.pad_token_id)([{"input_ids": [1, 2], "labels": [-100, 2]}])  # doctest: +SKIP
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Sequence
from typing import Any

import torch

IGNORE = -100


def _pad_id(pad: Any) -> int:
    """Accept a pad id or a tokenizer (its pad_token_id, else eos)."""
    if isinstance(pad, int):
        return pad
    pid = getattr(pad, "pad_token_id", None)
    pid = pid if pid is not None else getattr(pad, "eos_token_id", None)
    if pid is None:
        raise ValueError("the tokenizer has neither a pad nor an eos token id; set tokenizer.pad_token")
    return int(pid)


def _round_up(n: int, multiple: int | None) -> int:
    return n if not multiple else -(-n // multiple) * multiple


class PadCollator:
    """Right-pad a list of {input_ids, labels} to the longest in the batch (optionally to a multiple of N).

    Pads get label -100 and attention_mask 0. Extra keys in the features are ignored.

    >>> b = PadCollator(0)([{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [5], "labels": [5]}])
    >>> b["attention_mask"].tolist()
    [[1, 1, 1], [1, 0, 0]]
    """

    def __init__(self, pad: int | Any, pad_to_multiple_of: int | None = None) -> None:
        self.pad_token_id = _pad_id(pad)
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        width = _round_up(max(len(f["input_ids"]) for f in features), self.pad_to_multiple_of)
        ids = torch.full((len(features), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(features), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(features), width), dtype=torch.long)
        for i, f in enumerate(features):
            n = len(f["input_ids"])
            ids[i, :n] = torch.as_tensor(f["input_ids"], dtype=torch.long)
            labels[i, :n] = torch.as_tensor(f["labels"], dtype=torch.long)
            mask[i, :n] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def pack_samples(samples: Sequence[dict[str, list[int]]], max_length: int) -> list[dict[str, list[int]]]:
    """Concatenate samples into rows of at most `max_length` tokens (best-fit decreasing, deterministic).

    Each row has input_ids, labels and position_ids that restart at 0 for every sample. The first label of
    every sample is -100: in the unpacked sample it is never predicted (labels shift by one), and in a row it
    would otherwise be predicted from the previous sample's last token.

    >>> rows = pack_samples([{"input_ids": [1, 2], "labels": [1, 2]}, {"input_ids": [3], "labels": [3]}], 4)
    >>> rows[0]["position_ids"], rows[0]["labels"]
    ([0, 1, 0], [-100, 2, -100])
    """
    too_long = [i for i, s in enumerate(samples) if len(s["input_ids"]) > max_length]
    if too_long:
        raise ValueError(
            f"{len(too_long)} sample(s) exceed max_length={max_length} (first: #{too_long[0]}); encode with the same max_length"
        )
    order = sorted(range(len(samples)), key=lambda i: -len(samples[i]["input_ids"]))
    rows: list[list[int]] = []  # sample indices per row
    free: list[tuple[int, int]] = []  # (free tokens, row), sorted: bisect finds the tightest fit in O(log n)
    for i in order:
        n = len(samples[i]["input_ids"])
        k = bisect.bisect_left(free, (n, -1))
        if k == len(free):
            rows.append([i])
            bisect.insort(free, (max_length - n, len(rows) - 1))
        else:
            room, r = free.pop(k)
            rows[r].append(i)
            bisect.insort(free, (room - n, r))
    return [_join([samples[i] for i in sorted(members)]) for members in rows]


def _join(parts: Sequence[dict[str, list[int]]]) -> dict[str, list[int]]:
    ids: list[int] = []
    labels: list[int] = []
    pos: list[int] = []
    for p in parts:
        ids += p["input_ids"]
        labels += [IGNORE, *p["labels"][1:]]
        pos += list(range(len(p["input_ids"])))
    return {"input_ids": ids, "labels": labels, "position_ids": pos}


class PackedCollator:
    """Batch packed rows: pad to the longest row; pads form their own position run so they attend only to pads.

    No attention_mask is returned on purpose (it would disable packed-sequence detection), and
    `use_cache=False` keeps the model from creating a KV cache that would do the same.

    >>> b = PackedCollator(0)(pack_samples([{"input_ids": [1, 2], "labels": [1, 2]}], 8))
    >>> sorted(b)
    ['input_ids', 'labels', 'num_tokens', 'position_ids', 'use_cache']
    """

    def __init__(self, pad: int | Any, pad_to_multiple_of: int | None = None) -> None:
        self.pad_token_id = _pad_id(pad)
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        width = _round_up(max(len(r["input_ids"]) for r in rows), self.pad_to_multiple_of)
        ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
        pos = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            n = len(r["input_ids"])
            ids[i, :n] = torch.as_tensor(r["input_ids"], dtype=torch.long)
            labels[i, :n] = torch.as_tensor(r["labels"], dtype=torch.long)
            pos[i, :n] = torch.as_tensor(r["position_ids"], dtype=torch.long)
            pos[i, n:] = torch.arange(
                width - n
            )  # a separate "sequence" of pads: never attended by real tokens
        # num_tokens lets the engine count real tokens/s (there is no attention_mask to count from); it pops it.
        real = sum(len(r["input_ids"]) for r in rows)
        return {
            "input_ids": ids,
            "labels": labels,
            "position_ids": pos,
            "use_cache": False,
            "num_tokens": real,
        }


class PaddingFreeCollator:
    """A batch as one row: its samples end to end, position ids restarting at 0 for each, and no padding at all.

    The same samples and labels as `PadCollator` gives (a sample's first label is never predicted in either), so
    the loss is the same; what goes is the padding. `cu_seq_lens_q/k` and `max_length_q/k` are transformers'
    names for the sample boundaries: flash-attention runs its variable-length kernel on them and temper's CPU
    kernel attends within each sample; sdpa and eager get the block-diagonal mask that transformers builds
    from the restarting position ids.

    >>> b = PaddingFreeCollator(0)([{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [8, 9], "labels": [8, 9]}])
    >>> b["input_ids"].tolist(), b["position_ids"].tolist(), b["cu_seq_lens_q"].tolist()
    ([[5, 6, 7, 8, 9]], [[0, 1, 2, 0, 1]], [0, 3, 5])
    """

    def __init__(self, pad: int | Any) -> None:
        self.packed = PackedCollator(pad)

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, Any]:
        batch = self.packed([_join(features)])
        lengths = [len(f["input_ids"]) for f in features]
        bounds = torch.tensor([0, *itertools.accumulate(lengths)], dtype=torch.int32)
        batch.update(
            cu_seq_lens_q=bounds, cu_seq_lens_k=bounds, max_length_q=max(lengths), max_length_k=max(lengths)
        )
        return batch


def length_grouped_order(
    lengths: Sequence[int], batch_size: int, seed: int = 42, mega: int = 50
) -> list[int]:
    """Indices in an order where each batch holds similar lengths (less padding) but batches are shuffled.

    Like transformers' group_by_length: shuffle, cut into mega-batches of `mega` batches, sort each by length,
    then shuffle the batches so training does not run from short to long.

    >>> sorted(length_grouped_order([5, 1, 9, 3], batch_size=2, seed=0))
    [0, 1, 2, 3]
    """
    rng = random.Random(seed)
    idx = list(range(len(lengths)))
    rng.shuffle(idx)
    chunk = batch_size * mega
    ordered: list[int] = []
    for s in range(0, len(idx), chunk):
        ordered += sorted(idx[s : s + chunk], key=lambda i: -lengths[i])
    batches = [ordered[s : s + batch_size] for s in range(0, len(ordered), batch_size)]
    # Only full batches move: a short batch in the middle would shift every later batch boundary.
    tail = batches.pop() if batches and len(batches[-1]) < batch_size else []
    rng.shuffle(batches)
    return [i for b in batches for i in b] + tail


def batches_of(lengths: Sequence[int], order: Sequence[int], batch_size: int) -> list[list[int]]:
    """The lengths of each batch when `order` is cut into batches of `batch_size`."""
    return [[lengths[i] for i in order[s : s + batch_size]] for s in range(0, len(order), batch_size)]


def padding_ratio(
    batches: Sequence[Sequence[int]] | Sequence[int],
    batch_size: int | None = None,
    pad_to_multiple_of: int | None = None,
) -> float:
    """Fraction of the padded batch tensors that is padding.

    Takes the real lengths per batch, or a flat list of lengths plus `batch_size` (cut in that order).

    >>> round(padding_ratio([[4, 2], [3, 3]]), 3), round(padding_ratio([4, 2, 3, 3], batch_size=2), 3)
    (0.143, 0.143)
    """
    if batches and isinstance(batches[0], int):
        flat = [int(n) for n in batches]  # type: ignore[arg-type]
        size = batch_size or len(flat)
        groups: list[Sequence[int]] = [flat[s : s + size] for s in range(0, len(flat), size)]
    else:
        groups = list(batches)  # type: ignore[arg-type]
    real = sum(sum(b) for b in groups)
    total = sum(_round_up(max(b), pad_to_multiple_of) * len(b) for b in groups if b)
    return 0.0 if total == 0 else 1 - real / total

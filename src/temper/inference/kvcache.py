"""The batch KV cache of the continuous batcher: left-padded rows that join and leave between decode steps.

Every row's real tokens sit at the right end of the time axis, so one new token per row is appended in the same
column for the whole batch. A joining request is prefilled alone (exactly the numbers a solo run computes) and
then merged in by left-padding the shorter side; a finishing row is dropped with an index select, and columns
that are padding in every remaining row are trimmed so the cache never grows past the longest live row.

The cache is a plain `DynamicCache` built without a config, i.e. full-attention layers only: sliding-window
layers keep their whole history, which is correct (the model's mask still applies the window) and avoids
per-layer bookkeeping when rows are merged.

Example:
    >>> import torch
    >>> a = BatchKV.from_layers([(torch.ones(1, 1, 2, 1), torch.ones(1, 1, 2, 1))], [2])
    >>> a.merge(BatchKV.from_layers([(torch.ones(1, 1, 3, 1), torch.ones(1, 1, 3, 1))], [3]))
    >>> a.lengths, a.width
    ([2, 3], 3)
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from transformers import DynamicCache


def cache_kwarg(model: Any) -> str:
    """The forward keyword that takes a KV cache: `cache` in newer transformers 5.x, `past_key_values` before.

    Why ask: the old name still works in between but warns on every call (and goes in 5.40). peft's wrapper
    forwards **kwargs, so the question goes to the transformers model underneath.
    """
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(inner.forward).parameters else "past_key_values"


def output_cache(out: Any) -> Any:
    """The KV cache a forward returned, under either name (reading `past_key_values` warns where it is renamed)."""
    return out["cache"] if "cache" in out else out["past_key_values"]


class BatchKV:
    """A DynamicCache plus the real length of each row (the rest of the row, on the left, is padding)."""

    def __init__(self, cache: DynamicCache, lengths: list[int]) -> None:
        self.cache = cache
        self.lengths = lengths

    @classmethod
    def from_layers(cls, layers: list[tuple[torch.Tensor, torch.Tensor]], lengths: list[int]) -> BatchKV:
        return cls(DynamicCache(ddp_cache_data=layers), lengths)

    @property
    def width(self) -> int:
        return self.cache.get_seq_length()

    def layers(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        layers: list[Any] = list(self.cache.layers)
        return [(layer.keys, layer.values) for layer in layers]

    def attention_mask(self, extra: int = 1) -> torch.Tensor:
        """[B, width + extra] mask: 0 on each row's left padding, 1 on its tokens and the `extra` new ones."""
        width = self.width + extra
        cols = torch.arange(width)
        starts = torch.tensor([self.width - n for n in self.lengths])
        return (cols[None, :] >= starts[:, None]).long()

    def merge(self, other: BatchKV) -> None:
        """Append `other`'s rows below ours, left-padding whichever side is narrower."""
        width = max(self.width, other.width)
        merged = []
        for (k1, v1), (k2, v2) in zip(self.layers(), other.layers(), strict=True):
            merged.append(
                (
                    torch.cat([_left_pad(k1, width), _left_pad(k2, width)], dim=0),
                    torch.cat([_left_pad(v1, width), _left_pad(v2, width)], dim=0),
                )
            )
        self.cache = DynamicCache(ddp_cache_data=merged)
        self.lengths = self.lengths + other.lengths

    def keep(self, rows: list[int]) -> None:
        """Keep only `rows` (in that order) and trim columns that are now padding in every row."""
        index = torch.tensor(rows, dtype=torch.long)
        lengths = [self.lengths[i] for i in rows]
        trim = self.width - max(lengths)
        kept = [(k[index, :, trim:], v[index, :, trim:]) for k, v in self.layers()]
        self.cache = DynamicCache(ddp_cache_data=kept)
        self.lengths = lengths

    def advance(self) -> None:
        """Record that the forward pass just appended one token to every row."""
        self.lengths = [n + 1 for n in self.lengths]


def _left_pad(x: torch.Tensor, width: int) -> torch.Tensor:
    missing = width - x.shape[-2]
    if missing == 0:
        return x
    pad = x.new_zeros(*x.shape[:-2], missing, x.shape[-1])
    return torch.cat([pad, x], dim=-2)

"""Sampling parameters and the per-row next-token choice used by the batch scheduler.

Each row of a batch carries its own parameters and its own `torch.Generator`, so a seeded request samples the
same tokens whether it runs alone or shares a batch with others. Greedy (temperature 0) is a plain argmax of the
(repetition-penalised) logits, which is what `transformers.generate(do_sample=False)` does.

Example:
    >>> p = SamplingParams(temperature=0.0, max_tokens=16)
    >>> p.greedy
    True
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from temper.errors import ConfigError


@dataclass
class SamplingParams:
    """How one request generates. `max_tokens=None` means "up to the context length"."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    max_tokens: int | None = 256
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    repetition_penalty: float = 1.0

    def __post_init__(self) -> None:
        checks = [
            ("temperature", self.temperature, self.temperature >= 0, "a number >= 0 (0 = greedy)"),
            ("top_p", self.top_p, 0 < self.top_p <= 1, "a number in (0, 1]"),
            ("top_k", self.top_k, self.top_k >= 0, "an integer >= 0 (0 = off)"),
            ("repetition_penalty", self.repetition_penalty, self.repetition_penalty > 0, "a number > 0"),
            (
                "max_tokens",
                self.max_tokens,
                self.max_tokens is None or self.max_tokens >= 1,
                "an integer >= 1",
            ),
        ]
        for name, value, ok, expected in checks:
            if not ok:
                raise ConfigError(f"{name}={value!r} is invalid; expected {expected}.")
        if len(self.stop) > 16 or any(not isinstance(s, str) or not s for s in self.stop):
            raise ConfigError(f"stop={self.stop!r} is invalid; expected at most 16 non-empty strings.")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def make_generator(self) -> torch.Generator:
        # A per-request generator: seeded requests are reproducible regardless of what else is batched.
        g = torch.Generator()
        if self.seed is not None:
            g.manual_seed(int(self.seed))
        else:
            g.seed()
        return g


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """HF semantics: a seen token's logit is divided by `penalty` when positive, multiplied when negative."""
    scores = logits.gather(-1, seen)
    scores = torch.where(scores > 0, scores / penalty, scores * penalty)
    return logits.scatter(-1, seen, scores)


def filter_top_k_top_p(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Mask logits outside the top-k and outside the smallest set whose probability exceeds top_p."""
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k).values[..., -1, None]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        cum = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
        # Drop a token when the mass before it already reaches top_p (the first token always stays).
        drop_sorted = (cum - torch.softmax(sorted_logits, dim=-1)) >= top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def choose_tokens(
    logits: torch.Tensor,
    params: list[SamplingParams],
    generators: list[torch.Generator],
    seen: list[list[int]],
) -> list[int]:
    """Pick one token per row of `logits` [B, V] (float32) under each row's own parameters."""
    out: list[int] = []
    for i, p in enumerate(params):
        row = logits[i]
        if p.repetition_penalty != 1.0 and seen[i]:
            row = apply_repetition_penalty(row, torch.tensor(sorted(set(seen[i]))), p.repetition_penalty)
        if p.greedy:
            out.append(int(torch.argmax(row)))
            continue
        row = filter_top_k_top_p(row / p.temperature, p.top_k, p.top_p)
        probs = torch.softmax(row, dim=-1)
        out.append(int(torch.multinomial(probs, 1, generator=generators[i])))
    return out

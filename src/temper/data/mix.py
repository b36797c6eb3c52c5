"""How several datasets become one list of rows: concatenated, or interleaved (LLaMA-Factory's mix_strategy,
ms-swift's interleave_prob / stopping_strategy).

Interleaving follows `datasets.interleave_datasets` on map-style datasets, which both peers call: without
probabilities the datasets take turns row by row; with them each next row comes from a dataset drawn with
those probabilities (numpy's generator seeded with the run's seed, drawn in blocks of 1000 as `datasets` does,
so the same seed picks the same sequence). `interleave_under` stops once one dataset has run out
(undersampling the others), `interleave_over` goes on, restarting the ones that ran out, until every dataset
has been used whole at least once (oversampling the small ones), and `interleave_once` (datasets'
`all_exhausted_without_replacement`) goes on until every dataset is used whole, skipping the ones that ran
out, so every row is used exactly once.

Example:
    >>> mix([["a1", "a2"], ["b1", "b2", "b3"]], "interleave_under", [], seed=0)
    ['a1', 'b1', 'a2', 'b2']
    >>> mix([["a1", "a2"], ["b1", "b2", "b3"]], "interleave_over", [], seed=0)
    ['a1', 'b1', 'a2', 'b2', 'a1', 'b3']
    >>> mix([["a1", "a2"], ["b1", "b2", "b3"]], "interleave_once", [], seed=0)
    ['a1', 'b1', 'a2', 'b2', 'b3']
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

from temper.errors import ConfigError

T = TypeVar("T")

MIX_STRATEGIES = ("concat", "interleave_under", "interleave_over", "interleave_once")


def mix(parts: Sequence[list[T]], strategy: str, probs: Sequence[float], seed: int) -> list[T]:
    """One list from the datasets' rows (`parts`, in the order the datasets were given)."""
    if strategy == "concat":
        return [row for part in parts for row in part]
    if probs and len(probs) != len(parts):
        raise ConfigError(
            f"interleave_probs: got {len(probs)} probabilities {list(probs)} for {len(parts)} dataset(s).",
            hint="Give one probability per dataset, in the order of --dataset, summing to 1.",
            key="interleave_probs",
        )
    if not parts:
        return []
    empty = [i + 1 for i, p in enumerate(parts) if not p]
    if empty:  # interleaving would stop at once (under) or never (over)
        raise ConfigError(
            f"mix_strategy {strategy}: dataset(s) number {empty} (in --dataset order) have no rows to interleave.",
            hint="Remove the empty dataset(s), or write mix_strategy: concat.",
            key="mix_strategy",
        )
    once = strategy == "interleave_once"
    all_exhausted = strategy == "interleave_over" or once
    if not probs:  # turns: datasets.interleave_datasets' closed form for map-style datasets
        rounds = max(map(len, parts)) if all_exhausted else min(map(len, parts))
        if once:  # the datasets that ran out drop out of the turns
            return [part[r] for r in range(rounds) for part in parts if r < len(part)]
        return [part[r % len(part)] for r in range(rounds) for part in parts]
    out: list[T] = []
    index = [0] * len(parts)
    exhausted = [False] * len(parts)
    for i in _draws(len(parts), probs, seed):
        if all(exhausted) if all_exhausted else any(exhausted):
            break
        if once and exhausted[i]:  # a draw of a used-up dataset gives no row (as datasets does)
            continue
        out.append(parts[i][index[i]])
        index[i] += 1
        if index[i] >= len(parts[i]):
            exhausted[i], index[i] = True, 0
    return out


def mix_note(strategy: str | None, probs: Sequence[float], n_datasets: int, n_rows: int) -> str | None:
    """The line a recipe prints when datasets were interleaved (concatenation says nothing)."""
    if strategy in (None, "concat") or n_datasets < 2:
        return None
    how = f"drawn with probabilities {', '.join(f'{p:g}' for p in probs)}" if probs else "taking turns"
    return f"data: {n_datasets} datasets interleaved ({strategy}, {how}): {n_rows} training rows"


def _draws(n: int, probs: Sequence[float], seed: int) -> Iterator[int]:
    import numpy as np

    rng = np.random.default_rng(seed)
    while True:
        yield from (int(i) for i in rng.choice(n, size=1000, p=list(probs)))


def check_mix(strategy: str, probs: Sequence[float]) -> None:
    """Config-time checks of mix_strategy / interleave_probs (their count is checked against the datasets later)."""
    if strategy not in MIX_STRATEGIES:
        raise ConfigError(
            f"mix_strategy: got {strategy!r}, expected one of {', '.join(MIX_STRATEGIES)}.",
            key="mix_strategy",
        )
    if not probs:
        return
    if strategy == "concat":
        raise ConfigError(
            f"interleave_probs {list(probs)} with mix_strategy concat: concatenated datasets draw no rows at random.",
            hint="Write mix_strategy: interleave_under (stop when one dataset runs out), interleave_over "
            "(repeat the small ones until every dataset is used whole) or interleave_once (every row once), "
            "or remove interleave_probs.",
            key="interleave_probs",
        )
    if any(p < 0 for p in probs) or abs(sum(probs) - 1) > 1e-6:
        raise ConfigError(
            f"interleave_probs: got {list(probs)} (sum {sum(probs):g}); expected non-negative numbers summing to 1.",
            hint="E.g. --interleave-probs 0.7,0.3 for two datasets.",
            key="interleave_probs",
        )

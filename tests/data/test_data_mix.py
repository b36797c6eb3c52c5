"""Several datasets mixed: concatenated, taking turns, or drawn by probability until one (or every) dataset is
used up, as `datasets.interleave_datasets` does for LLaMA-Factory's mix_strategy and ms-swift's interleave_prob."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from temper.config import SFTConfig
from temper.data.load import load_records
from temper.data.mix import mix
from temper.errors import ConfigError

A = [f"a{i}" for i in range(3)]
B = [f"b{i}" for i in range(7)]
C = [f"c{i}" for i in range(5)]


def test_concat_keeps_the_datasets_in_order() -> None:
    assert mix([A, B], "concat", [], seed=0) == A + B


def test_taking_turns_stops_at_the_shortest_or_repeats_up_to_the_longest() -> None:
    under = mix([A, B, C], "interleave_under", [], seed=0)
    assert under == [x for i in range(3) for x in (A[i], B[i], C[i])]
    over = mix([A, B, C], "interleave_over", [], seed=0)
    assert len(over) == 3 * 7 and over[:3] == ["a0", "b0", "c0"] and over[9:12] == ["a0", "b3", "c3"]
    assert set(over) == set(A + B + C)


def test_drawing_by_probability_stops_when_one_or_every_dataset_is_used_up() -> None:
    long_a, long_b = [f"a{i}" for i in range(300)], [f"b{i}" for i in range(300)]
    under = mix([long_a, long_b], "interleave_under", [0.8, 0.2], seed=3)
    # each dataset's rows come in their own order, and the draw ends right after the first one ran out
    assert [x for x in under if x[0] == "a"] == long_a[: len([x for x in under if x[0] == "a"])]
    assert under[-1] == "a299" and "b299" not in under
    share = Counter(x[0] for x in under)
    assert 0.75 < share["a"] / len(under) < 0.85
    over = mix([A, B], "interleave_over", [0.5, 0.5], seed=3)
    assert set(over) == set(A + B) and over[-1] in {A[-1], B[-1]}
    assert Counter(over)["a0"] >= 2  # the short dataset was restarted while the long one was used up
    # the seed decides the sequence
    assert mix([long_a, long_b], "interleave_under", [0.5, 0.5], seed=1) == mix(
        [long_a, long_b], "interleave_under", [0.5, 0.5], seed=1
    )
    assert mix([long_a, long_b], "interleave_under", [0.5, 0.5], seed=1) != mix(
        [long_a, long_b], "interleave_under", [0.5, 0.5], seed=2
    )


def test_interleave_once_uses_every_row_exactly_once() -> None:
    # LLaMA-Factory's interleave_once is datasets' all_exhausted_without_replacement: turns skip the datasets
    # that ran out (datasets' own example: lengths [3, 4, 3] -> indices 0, 3, 7, 1, 4, 8, 2, 5, 9, 6)
    a, b, c = ["a0", "a1", "a2"], ["b0", "b1", "b2", "b3"], ["c0", "c1", "c2"]
    assert mix([a, b, c], "interleave_once", [], seed=0) == [
        "a0", "b0", "c0", "a1", "b1", "c1", "a2", "b2", "c2", "b3"
    ]  # fmt: skip
    long_a, short_b = [f"a{i}" for i in range(200)], [f"b{i}" for i in range(20)]
    once = mix([long_a, short_b], "interleave_once", [0.5, 0.5], seed=3)
    assert sorted(once) == sorted(long_a + short_b)  # nothing repeated, nothing left out
    assert [x for x in once if x[0] == "b"] == short_b and [x for x in once if x[0] == "a"] == long_a
    # the draws are the same as interleave_under's until the first dataset runs out
    under = mix([long_a, short_b], "interleave_under", [0.5, 0.5], seed=3)
    assert once[: len(under)] == under and once[len(under) :] == long_a[len(under) - 20 :]
    lf = SFTConfig.from_sources(None, ["--mix_strategy", "interleave_once"])
    assert lf.data.mix_strategy == "interleave_once"


def test_probabilities_that_do_not_fit_the_datasets_are_refused() -> None:
    with pytest.raises(ConfigError, match="3 probabilities.*2 dataset"):
        mix([A, B], "interleave_under", [0.2, 0.3, 0.5], seed=0)
    with pytest.raises(ConfigError, match=r"number \[2\].*no rows"):
        mix([A, []], "interleave_over", [], seed=0)
    with pytest.raises(ConfigError, match="sum 0.9"):
        SFTConfig.from_sources(None, ["--interleave-probs", "0.5,0.4"])
    with pytest.raises(ConfigError, match="mix_strategy concat"):
        SFTConfig.from_sources(None, ["--mix-strategy", "concat", "--interleave-probs", "0.5,0.5"])


def test_peer_spellings_of_interleaving() -> None:
    lf = SFTConfig.from_sources(None, ["--mix_strategy", "interleave_over", "--interleave_probs", "0.7,0.3"])
    assert (lf.data.mix_strategy, lf.data.interleave_probs) == ("interleave_over", [0.7, 0.3])
    # ms-swift: interleave_prob alone interleaves until the first dataset runs out; stopping_strategy says how
    swift = SFTConfig.from_sources(None, ["--interleave_prob", "0.7", "0.3"])
    assert (swift.data.mix_strategy, swift.data.interleave_probs) == ("interleave_under", [0.7, 0.3])
    over = SFTConfig.from_sources(
        None, ["--interleave_prob", "0.5", "0.5", "--stopping_strategy", "all_exhausted"]
    )
    assert over.data.mix_strategy == "interleave_over"
    assert SFTConfig.from_sources(None, []).data.mix_strategy == "concat"


def test_real_files_interleave_row_by_row(lf: Path) -> None:
    files = [str(lf / "identity.json"), str(lf / "alpaca_en_demo.json#40")]
    rows = load_records(files, model_name="Ember", model_author="us", mix_strategy="interleave_under")
    alone = [load_records([f], model_name="Ember", model_author="us") for f in files]
    assert rows == [r for pair in zip(*alone, strict=False) for r in pair]
    assert len(rows) == 2 * 40


def test_swift_stopping_strategy_alone_keeps_datasets_concatenated() -> None:
    # ms-swift interleaves only with interleave_prob; its args.json always carries stopping_strategy, so on its own
    # the key must leave the datasets concatenated, as ms-swift does, and say so.
    cfg = SFTConfig.from_sources(None, ["--stopping_strategy", "first_exhausted"])
    assert cfg.data.mix_strategy == "concat"
    assert any("stopping_strategy first_exhausted" in n and "concatenated" in n for n in cfg.notes)
    with_probs = SFTConfig.from_sources(
        None, ["--stopping_strategy", "first_exhausted", "--interleave_prob", "0.5", "0.5"]
    )
    assert with_probs.data.mix_strategy == "interleave_under"
    # an ms-swift args.json lists interleave_prob as null when it was not set
    args_json = SFTConfig.from_dict({"stopping_strategy": "first_exhausted", "interleave_prob": None})
    assert args_json.data.mix_strategy == "concat"

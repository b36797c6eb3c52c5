"""Pure pieces of the engine: sampling, incremental detokenization with stop strings, the batch KV cache."""

from __future__ import annotations

import pytest
import torch

from temper.errors import ConfigError
from temper.inference.detok import TextStream
from temper.inference.kvcache import BatchKV
from temper.inference.sampling import SamplingParams, choose_tokens, filter_top_k_top_p


def _chars(ids: list[int]) -> str:
    return "".join(chr(i) for i in ids)


def test_text_stream_holds_back_a_possible_stop_string() -> None:
    s = TextStream(_chars, stop=["END"])
    assert [s.push(ord(c)) for c in "abE"] == ["a", "b", ""]  # "E" might start "END"
    assert s.push(ord("x")) == "Ex"  # it did not
    assert [s.push(ord(c)) for c in "EN"] == ["", ""]
    assert s.push(ord("D")) == "" and s.stopped and s.text == "abEx"


def test_text_stream_flushes_a_partial_stop_at_the_end() -> None:
    s = TextStream(_chars, stop=["\n\n"])
    assert s.push(ord("a")) + s.push(ord("\n")) == "a"
    assert s.flush() == "\n" and not s.stopped


def test_text_stream_waits_for_complete_characters() -> None:
    pieces = {1: "h", 2: "\ufffd", 3: "é"}  # token 2 alone decodes to a replacement char
    s = TextStream(lambda ids: "".join(pieces[i] for i in ids).replace("\ufffdé", "é"))
    assert s.push(1) == "h" and s.push(2) == "" and s.push(3) == "é"


@pytest.mark.parametrize(
    "bad", [{"temperature": -1}, {"top_p": 0}, {"top_p": 2}, {"top_k": -1}, {"max_tokens": 0}, {"stop": [""]}]
)
def test_sampling_params_reject_invalid_values(bad: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match=next(iter(bad))):
        SamplingParams(**bad)  # type: ignore[arg-type]


def test_choose_tokens_greedy_top_k_and_seeds() -> None:
    torch.manual_seed(0)
    logits = torch.randn(3, 50)
    greedy = SamplingParams()
    top1 = SamplingParams(temperature=1.0, top_k=1)
    seeded = SamplingParams(temperature=1.0, seed=3)
    gens = [p.make_generator() for p in (greedy, top1, seeded)]
    out = choose_tokens(logits, [greedy, top1, seeded], gens, [[], [], []])
    assert out[0] == int(logits[0].argmax()) and out[1] == int(logits[1].argmax())
    again = choose_tokens(logits, [seeded], [seeded.make_generator()], [[]])
    assert again[0] == out[2]


def test_repetition_penalty_discourages_seen_tokens() -> None:
    logits = torch.tensor([[2.0, 1.9, -1.0]])
    p = SamplingParams(repetition_penalty=2.0)
    assert choose_tokens(logits, [p], [p.make_generator()], [[0]]) == [1]


def test_top_p_keeps_the_smallest_set_above_the_mass() -> None:
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    kept = filter_top_k_top_p(logits, 0, 0.7).isfinite().tolist()
    assert kept == [True, True, False, False]


def _kv(batch: int, length: int, fill: float) -> BatchKV:
    t = torch.full((batch, 1, length, 2), fill)
    return BatchKV.from_layers([(t, t.clone())], [length] * batch)


def test_batch_kv_merges_left_padded_and_trims_when_rows_leave() -> None:
    kv = _kv(1, 2, 1.0)
    kv.merge(_kv(1, 4, 2.0))
    assert kv.width == 4 and kv.lengths == [2, 4]
    assert kv.attention_mask().tolist() == [[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]]
    keys = kv.layers()[0][0]
    assert keys[0, 0, :2].abs().sum() == 0 and (keys[0, 0, 2:] == 1).all()
    kv.keep([0])  # the long row leaves: the padding columns go with it
    assert kv.width == 2 and kv.lengths == [2] and (kv.layers()[0][0] == 1).all()

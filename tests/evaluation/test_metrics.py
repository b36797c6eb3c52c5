"""BLEU/ROUGE on hand-computed cases (English, Chinese) and against sacrebleu and rouge-score."""

from __future__ import annotations

import math

import pytest
from rouge_score import rouge_scorer
from sacrebleu.metrics import BLEU

from temper.evaluation.metrics import METRIC_NAMES, bleu, lcs_len, qa_metrics, rouge, sample_metrics, tokenize

ENGLISH = [
    ("the cat sat on the mat", "the cat is on the mat"),
    ("there is a cat on the mat", "the cat is on the mat"),
    ("a quick brown fox jumps over the lazy dog", "the quick brown fox jumped over the lazy dog"),
    ("paris is the capital of france", "the capital of france is paris"),
    ("hello", "hello world"),
    ("completely different words here", "nothing in common at all"),
    ("the the the the", "the cat"),
]


def test_hand_computed_english() -> None:
    pred, ref = tokenize("The cat sat on the mat."), tokenize("the cat is on the mat")
    assert pred == ["the", "cat", "sat", "on", "the", "mat"]
    # 1-grams: 5 of 6 match; 2-grams: "the cat", "on the", "the mat" = 3 of 5; same length so BP = 1.
    assert bleu(pred, ref, 1) == pytest.approx(5 / 6)
    assert bleu(pred, ref, 2) == pytest.approx(math.sqrt(5 / 6 * 3 / 5))
    # 3-grams: "on the mat" = 1 of 4; 4-grams: none -> BLEU-4 is 0 without smoothing.
    assert bleu(pred, ref, 3) == pytest.approx((5 / 6 * 3 / 5 * 1 / 4) ** (1 / 3))
    assert bleu(pred, ref, 4) == 0.0
    r = rouge(pred, ref)
    assert r["Rouge-1-P"] == pytest.approx(5 / 6) and r["Rouge-1-R"] == pytest.approx(5 / 6)
    assert r["Rouge-2-F"] == pytest.approx(3 / 5)
    assert lcs_len(pred, ref) == 5 and r["Rouge-L-F"] == pytest.approx(5 / 6)


def test_hand_computed_chinese() -> None:
    pred, ref = tokenize("我爱北京。"), tokenize("我爱北京天安门")
    assert pred == ["我", "爱", "北京"] and ref == ["我", "爱", "北京", "天安门"]
    m = sample_metrics("我爱北京。", "我爱北京天安门")
    bp = math.exp(1 - 4 / 3)  # prediction shorter than the reference
    assert m["bleu-1"] == pytest.approx(bp)
    assert m["bleu-3"] == pytest.approx(bp)  # every 1-, 2- and 3-gram of the prediction matches
    assert m["Rouge-1-P"] == pytest.approx(1.0) and m["Rouge-1-R"] == pytest.approx(3 / 4)
    assert m["Rouge-1-F"] == pytest.approx(6 / 7)
    assert m["Rouge-2-R"] == pytest.approx(2 / 3) and m["Rouge-L-R"] == pytest.approx(3 / 4)


@pytest.mark.parametrize(("pred", "ref"), ENGLISH)
def test_rouge_equals_rouge_score(pred: str, ref: str) -> None:
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"])
    expected = scorer.score(ref, pred)  # score(target, prediction)
    ours = sample_metrics(pred, ref, lang="en")
    for kind, key in (("1", "rouge1"), ("2", "rouge2"), ("L", "rougeL")):
        assert ours[f"Rouge-{kind}-P"] == pytest.approx(expected[key].precision)
        assert ours[f"Rouge-{kind}-R"] == pytest.approx(expected[key].recall)
        assert ours[f"Rouge-{kind}-F"] == pytest.approx(expected[key].fmeasure)


@pytest.mark.parametrize(("pred", "ref"), ENGLISH)
@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_bleu_equals_sacrebleu(pred: str, ref: str, order: int) -> None:
    metric = BLEU(tokenize="none", smooth_method="none", max_ngram_order=order, effective_order=False)
    expected = metric.sentence_score(pred, [ref]).score / 100
    assert bleu(tokenize(pred), tokenize(ref), order) == pytest.approx(expected, abs=1e-9)


def test_qa_metrics_averages_and_edge_cases() -> None:
    m = qa_metrics(["the cat", ""], ["the cat", "a dog"])
    assert set(m) == set(METRIC_NAMES)
    assert m["bleu-1"] == pytest.approx(0.5) and m["Rouge-L-F"] == pytest.approx(0.5)
    assert qa_metrics([], []) == {name: 0.0 for name in METRIC_NAMES}
    with pytest.raises(ValueError):
        qa_metrics(["a"], [])

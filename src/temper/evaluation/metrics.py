"""Generation metrics: BLEU-1..4 and ROUGE-1/2/L precision, recall and F, on words or jieba-segmented Chinese.

Definitions (so that numbers are comparable with the standard tools):
- tokens: text with CJK characters is segmented with jieba, otherwise split into words; lower-cased, and
  punctuation dropped (as rouge-score's default tokenizer does).
- BLEU-n: sentence-level cumulative BLEU, geometric mean of the clipped 1..n-gram precisions times the brevity
  penalty, no smoothing (sacrebleu `sentence_bleu(..., smooth_method="none", tokenize="none")` and nltk
  `sentence_bleu` with uniform weights give the same number on the same tokens).
- ROUGE-N: clipped n-gram overlap / prediction n-grams (P) and / reference n-grams (R), F = 2PR/(P+R);
  ROUGE-L: longest common subsequence instead of the overlap (rouge-score's `rougeL`).
Corpus numbers are the mean of the per-sample numbers (EvalScope's general_qa report does the same).

Example:
    >>> m = qa_metrics(["the cat sat on the mat"], ["the cat is on the mat"])
    >>> round(m["Rouge-1-F"], 4), round(m["bleu-1"], 4)
    (0.8333, 0.8333)
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

from temper.evaluation.datasets import has_cjk

BLEU_ORDERS = (1, 2, 3, 4)
ROUGE_KINDS = ("1", "2", "L")
METRIC_NAMES = [f"bleu-{n}" for n in BLEU_ORDERS] + [f"Rouge-{k}-{s}" for k in ROUGE_KINDS for s in "RPF"]
_WORD = re.compile(r"\w+")


def tokenize(text: str, lang: str = "auto") -> list[str]:
    """Words of `text`: jieba segments for Chinese (lang zh, or auto with CJK characters), else \\w+ runs."""
    text = text.lower()
    if lang == "zh" or (lang == "auto" and has_cjk(text)):
        import jieba

        jieba.setLogLevel(60)  # jieba prints its dictionary loading at INFO level on first use
        return [t for t in jieba.lcut(text) if _WORD.search(t)]
    return _WORD.findall(text)


def ngrams(tokens: Sequence[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def bleu(pred: Sequence[str], ref: Sequence[str], max_order: int = 4) -> float:
    """Sentence BLEU over orders 1..max_order (uniform weights), 0 when any precision is 0; 0..1."""
    if not pred or not ref:
        return 0.0
    log_p = 0.0
    for n in range(1, max_order + 1):
        p_ngrams, r_ngrams = ngrams(pred, n), ngrams(ref, n)
        matches = sum((p_ngrams & r_ngrams).values())
        total = sum(p_ngrams.values())
        if matches == 0 or total == 0:
            return 0.0
        log_p += math.log(matches / total) / max_order
    bp = 1.0 if len(pred) > len(ref) else math.exp(1 - len(ref) / len(pred))
    return bp * math.exp(log_p)


def _prf(overlap: int, n_pred: int, n_ref: int) -> tuple[float, float, float]:
    p = overlap / n_pred if n_pred else 0.0
    r = overlap / n_ref if n_ref else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f


def lcs_len(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence (O(len(a)*len(b)) time, O(len(b)) memory)."""
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge(pred: Sequence[str], ref: Sequence[str]) -> dict[str, float]:
    """Rouge-1/2/L R, P and F of one prediction against one reference."""
    out: dict[str, float] = {}
    for kind in ROUGE_KINDS:
        if kind == "L":
            p, r, f = _prf(lcs_len(pred, ref), len(pred), len(ref))
        else:
            n = int(kind)
            pn, rn = ngrams(pred, n), ngrams(ref, n)
            p, r, f = _prf(sum((pn & rn).values()), sum(pn.values()), sum(rn.values()))
        out.update({f"Rouge-{kind}-R": r, f"Rouge-{kind}-P": p, f"Rouge-{kind}-F": f})
    return out


def sample_metrics(prediction: str, reference: str, lang: str = "auto") -> dict[str, float]:
    """Every metric of METRIC_NAMES for one prediction; the language is decided from the reference."""
    if lang == "auto":
        lang = "zh" if has_cjk(reference) else "en"
    pred, ref = tokenize(prediction, lang), tokenize(reference, lang)
    out = {f"bleu-{n}": bleu(pred, ref, n) for n in BLEU_ORDERS}
    out.update(rouge(pred, ref))
    return out


def qa_metrics(predictions: Sequence[str], references: Sequence[str], lang: str = "auto") -> dict[str, float]:
    """Mean of each metric over the samples (the function the training engine calls on its val split)."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        return {name: 0.0 for name in METRIC_NAMES}
    per = [sample_metrics(p, r, lang) for p, r in zip(predictions, references, strict=True)]
    return {name: sum(m[name] for m in per) / len(per) for name in METRIC_NAMES}


def llamafactory_similarity(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """LLaMA-Factory's predict metrics (its ComputeSimilarity), so that `temper infer PREDICT.yaml` writes the
    predict_results.json it writes: ROUGE-1/2/L F of rouge-chinese on jieba words, and BLEU-4 of nltk over
    characters with smoothing method 3; per sample x 100, rounded to 4 places, then averaged.

    These are not temper's qa_metrics (words, no smoothing, rouge-score's ROUGE-L): rouge-chinese also cuts
    sentences and takes a summary-level ROUGE-L, so the numbers differ; the names say whose they are.
    """
    import jieba
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
    from rouge_chinese import Rouge

    jieba.setLogLevel(60)
    scores: dict[str, list[float]] = {"rouge-1": [], "rouge-2": [], "rouge-l": [], "bleu-4": []}
    for pred, label in zip(predictions, references, strict=True):
        hypothesis, reference = " ".join(jieba.cut(pred)), " ".join(jieba.cut(label))
        if not hypothesis.split() or not reference.split():
            result = {"rouge-1": {"f": 0.0}, "rouge-2": {"f": 0.0}, "rouge-l": {"f": 0.0}}
        else:
            result = Rouge().get_scores(hypothesis, reference)[0]
        for key, value in result.items():
            scores[key].append(round(value["f"] * 100, 4))
        bleu4 = sentence_bleu([list(label)], list(pred), smoothing_function=SmoothingFunction().method3)
        scores["bleu-4"].append(round(bleu4 * 100, 4))
    return {k: sum(v) / len(v) if v else 0.0 for k, v in scores.items()}

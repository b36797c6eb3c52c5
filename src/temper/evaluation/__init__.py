"""temper.evaluation: MCQ (general_mcq, C-Eval, CMMLU, MMLU), open QA (BLEU/ROUGE) and perplexity.

    >>> from temper.evaluation import EvalConfig, evaluate, qa_metrics
    >>> qa_metrics(["the cat"], ["the cat"])["bleu-2"]
    1.0

`temper.evaluation.generation.generate_answers(model, tokenizer, prompts, ...)` and `qa_metrics` are what the
training engine calls for generation metrics on a validation split.
"""

from temper.evaluation.api import evaluate
from temper.evaluation.config import EvalConfig
from temper.evaluation.metrics import qa_metrics

__all__ = ["EvalConfig", "evaluate", "qa_metrics"]

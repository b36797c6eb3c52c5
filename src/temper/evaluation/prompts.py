"""Prompt text for evaluation: MCQ questions (zero/few-shot) and the chat-template wrapper.

`render_chat` is the one place that turns messages into model text; it calls temper.data.templates.render_prompt,
the renderer training and inference use, so a fine-tuned model is evaluated on the prompts it was trained on.

Example:
    >>> from temper.evaluation.datasets import MCQItem
    >>> print(format_question(MCQItem("1", "2+2=?", ["3", "4"], "B"), "en"))
    2+2=?
    A. 3
    B. 4
    Answer:
"""

from __future__ import annotations

from typing import Any

from temper.evaluation.datasets import LETTERS, MCQItem, MCQSubset

# Header and answer cue per prompt language. The zh header is C-Eval's; the en one is MMLU's (Hendrycks et al.).
HEADERS = {
    "zh": "以下是中国关于{subject}考试的单项选择题，请选出其中的正确答案。\n\n",
    "en": "The following are multiple choice questions (with answers) about {subject}.\n\n",
}
GENERIC_HEADERS = {
    "zh": "以下是单项选择题，请选出其中的正确答案。\n\n",
    "en": "The following are multiple choice questions (with answers).\n\n",
}
ANSWER_CUE = {"zh": "答案：", "en": "Answer:"}


def format_question(item: MCQItem, lang: str, with_answer: bool = False) -> str:
    lines = [item.question] + [f"{LETTERS[i]}. {opt}" for i, opt in enumerate(item.options)]
    cue = ANSWER_CUE[lang]
    lines.append(f"{cue}{item.answer if lang == 'zh' else ' ' + item.answer}" if with_answer else cue)
    return "\n".join(lines)


def mcq_text(subset: MCQSubset, item: MCQItem, generic_header: bool = False) -> str:
    """Header + few-shot exemplars (each ending with its answer) + the question ending with the answer cue."""
    header = (GENERIC_HEADERS if generic_header else HEADERS)[subset.lang].format(subject=subset.display)
    shots = "".join(format_question(d, subset.lang, with_answer=True) + "\n\n" for d in subset.dev)
    return header + shots + format_question(item, subset.lang)


def uses_chat_template(tokenizer: Any, mode: str) -> bool:
    """mode auto: use the tokenizer's chat template when it has one; on/off force it."""
    if mode == "off":
        return False
    has = bool(getattr(tokenizer, "chat_template", None))
    if mode == "on" and not has:
        from temper.errors import TemperError

        raise TemperError(
            "chat_template=on, but this tokenizer has no chat template.", hint="Use --chat-template off."
        )
    return has


def render_chat(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """Messages -> the model's prompt text, ending where the assistant's reply starts."""
    from temper.data.templates import render_prompt

    return render_prompt(tokenizer, messages, add_generation_prompt=True)


def build_prompt(
    tokenizer: Any,
    user_text: str,
    chat: bool,
    system: str | None = None,
    history: list[dict[str, str]] | None = None,
) -> str:
    """Plain text as is, or wrapped as one user turn (after `system` and `history`) in the chat template."""
    if not chat:
        return user_text
    messages = ([{"role": "system", "content": system}] if system else []) + list(history or [])
    return render_chat(tokenizer, [*messages, {"role": "user", "content": user_text}])


def letter_continuation(prompt: str, chat: bool, letter: str) -> str:
    """The text the model should produce for `letter`: " A" after an ASCII cue ("Answer:"), else "A"."""
    if chat or not prompt or prompt[-1].isspace() or not prompt[-1].isascii():
        return letter
    return " " + letter

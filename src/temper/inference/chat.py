"""`temper chat`: answer one query, or an interactive REPL that streams tokens as they are generated.

Example:
    >>> from temper.inference.engine import Engine
    >>> with Engine.load("runs/identity") as eng:                                    # doctest: +SKIP
    ...     print(answer_once(eng, "Who are you?", adapter=eng.default_adapter))
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TextIO

from temper.inference.engine import Engine
from temper.inference.sampling import SamplingParams

HELP_TEXT = (
    "commands: /reset or clear (forget the conversation), /system TEXT (set the system prompt), /exit or exit"
)
# LLaMA-Factory's and ms-swift's chat commands are bare words: a user of theirs who types `exit` means it.
_EXIT = ("/exit", "/quit", "exit", "quit")
_RESET = ("/reset", "/clear", "clear")


def conversation(system: str | None, history: list[dict[str, str]]) -> list[dict[str, str]]:
    return ([{"role": "system", "content": system}] if system else []) + history


def answer_once(
    engine: Engine,
    query: str,
    system: str | None = None,
    params: SamplingParams | None = None,
    adapter: str | None = None,
) -> str:
    """The model's answer to one user message (greedy unless `params` says otherwise)."""
    messages = conversation(system, [{"role": "user", "content": query}])
    return engine.chat(messages, params or SamplingParams(), adapter).text


def fit_history(engine: Engine, system: str | None, history: list[dict[str, str]], max_tokens: int) -> None:
    """Drop the oldest exchanges until the prompt plus `max_tokens` fits the context (the last turn stays)."""
    while len(history) > 1:
        n = len(engine.chat_prompt(conversation(system, history)))
        if n + max_tokens <= engine.context_length:
            return
        del history[:2]


def repl(
    engine: Engine,
    system: str | None = None,
    params: SamplingParams | None = None,
    adapter: str | None = None,
    read: Callable[[str], str] = input,
    out: TextIO = sys.stdout,
) -> None:
    """Read a line, stream the answer, repeat; the conversation is kept until /reset."""
    params = params or SamplingParams(temperature=0.7, top_p=0.9)
    history: list[dict[str, str]] = []
    print(f"chatting with {adapter or engine.base_id}. {HELP_TEXT}", file=sys.stderr)
    while True:
        try:
            line = read("\nyou> ").strip()
        except EOFError:
            return
        if not line:
            continue
        if line in _EXIT:
            return
        if line in _RESET:
            history.clear()
            print("(conversation cleared)", file=out)
            continue
        if line.startswith("/system"):
            system = line[len("/system") :].strip() or None
            history.clear()
            print(f"(system prompt {'set' if system else 'cleared'}; conversation cleared)", file=out)
            continue
        if line.startswith("/"):
            print(HELP_TEXT, file=out)
            continue
        history.append({"role": "user", "content": line})
        fit_history(engine, system, history, params.max_tokens or 256)
        history.append(
            {"role": "assistant", "content": _stream_reply(engine, system, history, params, adapter, out)}
        )


def _stream_reply(
    engine: Engine,
    system: str | None,
    history: list[dict[str, str]],
    params: SamplingParams,
    adapter: str | None,
    out: TextIO,
) -> str:
    parts: list[str] = []
    out.write("bot> ")
    try:
        for event in engine.stream(engine.chat_prompt(conversation(system, history)), params, adapter):
            out.write(event.text)
            out.flush()
            parts.append(event.text)
            if event.finish_reason == "error":
                out.write(f"\n(error: {event.error})")
    except KeyboardInterrupt:  # Ctrl-C stops this answer (the stream cancels its request), not the REPL
        out.write(" (interrupted)")
    out.write("\n")
    return "".join(parts)

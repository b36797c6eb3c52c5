"""`temper infer`: generate an answer for every row of a data file, in order, resumably.

Input rows are OpenAI `messages` (a trailing assistant turn is kept as the reference answer), `prompt` rows
(the prompt is the user message), or any training format the data layer reads (alpaca, sharegpt, ...; the
last assistant turn becomes the reference, and may be absent: an alpaca row without `output` is a prompt).
All rows go through the continuous batcher together; each output line is written as soon as it and every row
before it are done, so an interrupted run resumes after the last line written (a half-written last line is
dropped and redone).

Example:
    >>> from temper.inference.engine import Engine
    >>> with Engine.load("runs/identity") as eng:                                     # doctest: +SKIP
    ...     infer_file(eng, "prompts.jsonl", "answers.jsonl")
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from temper.errors import DataError, TemperError
from temper.inference.engine import Engine
from temper.inference.sampling import SamplingParams
from temper.inference.scheduler import GenEvent


@dataclass
class PromptRow:
    messages: list[dict[str, str]]
    reference: str | None = None


@dataclass
class InferSummary:
    rows: int
    skipped: int  # already in the output (resumed)
    generated_tokens: int
    seconds: float


def read_prompts(path: str | Path, format: str = "auto", system: str | None = None) -> list[PromptRow]:  # noqa: A002
    """Prompts (and references when the row has an answer) from `path`, in file order."""
    from temper.data.readers import read_rows

    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"input file {path} does not exist.", hint="Pass --input with a .jsonl/.json/.csv/.parquet file."
        )
    problems: list[str] = []
    rows = [row for _, row in read_rows(path, problems)]
    if problems:
        raise DataError(f"cannot read {path}", problems)
    if format == "auto" and rows and all(_is_prompt_row(r) for r in rows):
        out = [_from_prompt_row(r) for r in rows]
    else:
        out = _from_records(path, format)
    if system:
        for p in out:
            if not p.messages or p.messages[0]["role"] != "system":
                p.messages.insert(0, {"role": "system", "content": system})
    return out


def _is_prompt_row(row: dict[str, Any]) -> bool:
    return isinstance(row.get("messages"), list) or isinstance(row.get("prompt"), str)


def _from_prompt_row(row: dict[str, Any]) -> PromptRow:
    if isinstance(row.get("prompt"), str):
        return PromptRow([{"role": "user", "content": row["prompt"]}], row.get("reference"))
    messages = [{"role": str(m["role"]), "content": str(m.get("content") or "")} for m in row["messages"]]
    if messages and messages[-1]["role"] == "assistant":
        return PromptRow(messages[:-1], messages[-1]["content"])
    return PromptRow(messages)


def _answer_optional(convert: Any, add_answer: Any) -> Any:
    """A training converter for prompt rows: a row without its answer (alpaca `output`, query `response`, a
    sharegpt conversation ending on the user) is converted with a placeholder answer that is then dropped, so
    every other field is validated exactly as for training."""

    def convert_prompt(row: Any, tags: Any) -> Any:
        from temper.data.records import ChatExample

        filled = add_answer(row, tags)
        if filled is None:
            return convert(row, tags)
        rec = convert(filled, tags)
        return ChatExample(rec.messages[:-1], rec.system, rec.tools)

    return convert_prompt


def _prompt_formats() -> dict[str, Any]:
    """The data layer's formats, with the answer of alpaca, query-response and sharegpt rows optional."""
    from dataclasses import replace

    from temper.data.formats import FORMATS, ShareGPTTags

    def answer_key(key: str) -> Any:
        return lambda row, tags: {**row, key: "-"} if row.get(key) in (None, "") else None

    def sharegpt_turn(row: Any, tags: Any) -> Any:
        t, turns = ShareGPTTags.from_tags(tags), row.get("conversations")
        if not (isinstance(turns, list) and turns and isinstance(turns[-1], dict)):
            return None
        if turns[-1].get(t.role_tag) != t.user_tag:
            return None
        return {**row, "conversations": [*turns, {t.role_tag: t.assistant_tag, t.content_tag: "-"}]}

    out = dict(FORMATS)
    for name, add in (("alpaca", answer_key("output")), ("query_response", answer_key("response"))):
        out[name] = replace(FORMATS[name], convert=_answer_optional(FORMATS[name].convert, add))
    out["sharegpt"] = replace(
        FORMATS["sharegpt"], convert=_answer_optional(FORMATS["sharegpt"].convert, sharegpt_turn)
    )
    return out


def _from_records(path: Path, format: str) -> list[PromptRow]:  # noqa: A002
    return dataset_prompts([str(path)], format=format)


def dataset_prompts(
    datasets: list[str],
    dataset_dir: str | Path | None = None,
    format: str = "auto",  # noqa: A002
    max_samples: int | None = None,
) -> list[PromptRow]:
    """Prompt rows (with references) of data files or dataset_info names, read as training reads them."""
    from temper.data.load import load_records
    from temper.data.records import ChatExample
    from temper.data.templates import to_chat_dicts

    out = []
    records = load_records(
        datasets,
        dataset_dir=dataset_dir,
        format=format,
        converters=_prompt_formats(),
        max_samples=max_samples,
    )
    for rec in records:
        if not isinstance(rec, ChatExample):
            raise DataError(
                f"{rec.source}: {type(rec).__name__} rows have no prompt to answer; expected chat rows."
            )
        messages = to_chat_dicts(rec)
        reference = messages.pop()["content"] if messages[-1]["role"] == "assistant" else None
        out.append(PromptRow(messages, reference))
    return out


def finished_rows(output: Path) -> int:
    """How many leading rows the output already holds; a torn last line (a crash mid-write) is cut off."""
    if not output.exists():
        return 0
    good: list[str] = []
    for line in output.read_text(encoding="utf-8").splitlines(keepends=True):
        try:
            json.loads(line)
        except json.JSONDecodeError:
            break
        if not line.endswith("\n"):
            break
        good.append(line)
    text = "".join(good)
    if text != output.read_text(encoding="utf-8"):
        output.write_text(text, encoding="utf-8")
    return len(good)


class _Pending:
    """One submitted row: collects its events until finished (written from the batcher thread)."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.last: GenEvent | None = None
        self.done = threading.Event()

    def __call__(self, event: GenEvent) -> None:
        self.parts.append(event.text)
        if event.finished:
            self.last = event
            self.done.set()


def infer_file(
    engine: Engine,
    input_path: str | Path,
    output_path: str | Path,
    params: SamplingParams | None = None,
    adapter: str | None = None,
    system: str | None = None,
    format: str = "auto",  # noqa: A002
    progress: bool = True,
) -> InferSummary:
    """Answer every row of `input_path` into `output_path` (jsonl, one line per row, input order)."""
    rows = read_prompts(input_path, format, system)
    return generate_rows(engine, rows, output_path, params, adapter, progress)


Line = Callable[[int, PromptRow, str, GenEvent, str], dict[str, Any]]


def generate_rows(
    engine: Engine,
    rows: list[PromptRow],
    output_path: str | Path,
    params: SamplingParams | None = None,
    adapter: str | None = None,
    progress: bool = True,
    line: Line | None = None,
    prompt_ids: Callable[[int], list[int]] | None = None,
) -> InferSummary:
    """Answer `rows` into `output_path`, resuming after its last complete line; `line(index, row, text,
    final event, model)` is the dict written per row (default: temper infer's own); `prompt_ids(index)` the
    tokens a row's answer continues (default: its messages in the chat template)."""
    params = params or SamplingParams()
    line = line or output_row
    prompt_ids = prompt_ids or (lambda i: engine.chat_prompt(rows[i].messages))
    output = Path(output_path)
    output.parent.mkdir(parents=True, exist_ok=True)
    done = finished_rows(output)
    start, tokens = time.perf_counter(), 0
    # Enough queued to refill every free slot at once, never more than the queue accepts.
    b = engine.batcher
    window = min(2 * b.max_batch_size, b.max_batch_size + b.max_queue)
    inflight: deque[tuple[int, _Pending]] = deque()
    with output.open("a", encoding="utf-8") as f, _Progress(len(rows), done, progress) as advance:
        next_row = done
        while next_row < len(rows) or inflight:
            while next_row < len(rows) and len(inflight) < window:
                pending = _Pending()
                engine.submit(prompt_ids(next_row), params, adapter, pending)
                inflight.append((next_row, pending))
                next_row += 1
            index, pending = inflight.popleft()
            pending.done.wait()
            last = pending.last
            if last is None or last.finish_reason == "error":
                # Not written, so that a rerun (which resumes here) tries this row again.
                raise TemperError(
                    f"row {index + 1}: generation failed: {last.error if last else 'no result'}"
                )
            row = line(index, rows[index], "".join(pending.parts), last, adapter or engine.base_id)
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()
            tokens += last.completion_tokens
            advance(tokens / max(time.perf_counter() - start, 1e-9))
    return InferSummary(len(rows), done, tokens, time.perf_counter() - start)


def output_row(index: int, row: PromptRow, text: str, last: GenEvent, model: str) -> dict[str, Any]:
    """One line of `temper infer`'s output."""
    out: dict[str, Any] = {
        "index": index,
        "model": model,
        "messages": row.messages,
        "generation": text,
        "finish_reason": last.finish_reason,
        "prompt_tokens": last.prompt_tokens,
        "completion_tokens": last.completion_tokens,
    }
    if row.reference is not None:
        out["reference"] = row.reference
    return out


class _Progress:
    """A rich progress bar over rows (tokens/s in the description), or nothing."""

    def __init__(self, total: int, done: int, enabled: bool) -> None:
        self.total, self.done, self.enabled = total, done, enabled
        self.bar: Any = None

    def __enter__(self) -> Any:
        if not self.enabled:
            return lambda tps: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()
        )
        self.bar.__enter__()
        task = self.bar.add_task("infer", total=self.total, completed=self.done)
        return lambda tps: self.bar.update(task, advance=1, description=f"infer {tps:6.1f} tok/s")

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)

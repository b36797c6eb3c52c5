"""`temper infer` (order, references, resume) and the chat REPL, on the tiny llama."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from temper.inference.batch import infer_file, read_prompts
from temper.inference.chat import repl
from temper.inference.engine import Engine
from temper.inference.sampling import SamplingParams


@pytest.fixture(scope="module")
def tiny_engine(tiny_llama_dir: Path) -> Iterator[Engine]:
    eng = Engine.load(tiny_llama_dir, dtype="fp32", max_batch_size=4)
    yield eng
    eng.close()


def _rows(n: int) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for i in range(n):
        if i % 2:
            rows.append({"prompt": f"Prompt number {i}"})
        else:
            msgs = [
                {"role": "user", "content": f"Question {i}"},
                {"role": "assistant", "content": f"Answer {i}"},
            ]
            rows.append({"messages": msgs})
    return rows


def test_infer_writes_one_line_per_row_in_order_and_resumes(tiny_engine: Engine, tmp_path: Path) -> None:
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in _rows(7)))
    params = SamplingParams(max_tokens=8)
    first = infer_file(tiny_engine, src, out, params, progress=False)
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert first.rows == 7 and first.skipped == 0 and [x["index"] for x in lines] == list(range(7))
    assert lines[0]["reference"] == "Answer 0" and lines[0]["messages"] == [
        {"role": "user", "content": "Question 0"}
    ]
    assert (
        lines[1]["messages"] == [{"role": "user", "content": "Prompt number 1"}]
        and "reference" not in lines[1]
    )
    for line in lines:
        solo = tiny_engine.chat(line["messages"], params)
        assert line["generation"] == solo.text and line["completion_tokens"] == solo.completion_tokens
        assert line["prompt_tokens"] == solo.prompt_tokens and line["finish_reason"] == solo.finish_reason

    # Interrupted after three rows, the fourth half-written: a rerun redoes only rows 4..7.
    kept = out.read_text().splitlines(keepends=True)[:3]
    out.write_text("".join(kept) + '{"index": 3, "gen')
    again = infer_file(tiny_engine, src, out, params, progress=False)
    assert again.skipped == 3
    assert [json.loads(x) for x in out.read_text().splitlines()] == lines


def test_infer_reads_training_formats_through_the_data_layer(tmp_path: Path) -> None:
    src = tmp_path / "alpaca.json"
    src.write_text(json.dumps([{"instruction": "Say hi", "input": "to Bob", "output": "Hi Bob"}]))
    rows = read_prompts(src, system="Be brief.")
    assert rows[0].reference == "Hi Bob"
    assert rows[0].messages[0] == {"role": "system", "content": "Be brief."}
    assert rows[0].messages[-1]["role"] == "user" and "Say hi" in rows[0].messages[-1]["content"]


def test_rows_without_their_answer_are_prompts_and_the_rest_is_still_validated(
    tmp_path: Path, shared_data: Path
) -> None:
    from temper.errors import DataError

    files = {  # one format per file, as the data layer detects it
        "alpaca": [{"instruction": "Say hi", "input": "to Bob"}, {"instruction": "Name a colour.", "output": ""}],
        "query": [{"query": "Count to 3.", "history": [["Hi", "Hello!"]]}],
        "sharegpt": [{"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"},
                                        {"from": "human", "value": "Bye"}]}],
    }  # fmt: skip
    got = []
    for name, rows in files.items():
        src = tmp_path / f"{name}.jsonl"
        src.write_text("".join(json.dumps(r) + "\n" for r in rows))
        got += read_prompts(src)
    assert [r.reference for r in got] == [None, None, None, None]
    assert [r.messages[-1] for r in got] == [
        {"role": "user", "content": "Say hi\nto Bob"},
        {"role": "user", "content": "Name a colour."},
        {"role": "user", "content": "Count to 3."},
        {"role": "user", "content": "Bye"},
    ]
    assert got[2].messages[:2] == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
    ]
    assert len(got[3].messages) == 3
    # A real LLaMA-Factory file with its answers: each answer is the reference, as before.
    path = shared_data / "llamafactory" / "alpaca_en_demo.json"
    alpaca = read_prompts(path)
    assert [r.reference for r in alpaca] == [row["output"] for row in json.loads(path.read_text())]
    # Everything but the answer is validated as for training.
    src = tmp_path / "bad.jsonl"
    src.write_text(
        json.dumps({"instruction": 3}) + "\n" + json.dumps({"instruction": "q", "history": "x"}) + "\n"
    )
    with pytest.raises(DataError) as err:
        read_prompts(src)
    assert err.value.problems == [
        f"{src}:1:instruction: expected a string, got int '3'",
        f"{src}:2:history: expected a list of [query, response] pairs, got str",
    ]


@pytest.mark.parametrize(("reset", "leave"), [("/reset", "/exit"), ("clear", "exit")])  # ours; the peers'
def test_repl_streams_answers_keeps_history_and_obeys_commands(
    tiny_engine: Engine, reset: str, leave: str
) -> None:
    lines = iter(["hello", reset, "", "hello", leave, "never read"])
    out = io.StringIO()
    params = SamplingParams(max_tokens=6)
    repl(tiny_engine, params=params, read=lambda _: next(lines), out=out)
    answer = tiny_engine.chat([{"role": "user", "content": "hello"}], params).text
    text = out.getvalue()
    assert text.count(f"bot> {answer}\n") == 2  # the same first answer before and after the reset
    assert text.count("bot> ") == 2  # the commands were not sent to the model
    assert "(conversation cleared)" in text
    assert next(lines) == "never read"  # the exit command stopped reading


def test_encoder_models_serve_embeddings_only(tiny_bert_dir: Path) -> None:
    from temper.inference.engine import NotGenerativeError

    with Engine.load(tiny_bert_dir) as eng:
        vecs, n_tokens = eng.embed(["a cat", "a dog on a mat"])
        assert len(vecs) == 2 and len(vecs[0]) == 32 and n_tokens > 4
        assert abs(sum(x * x for x in vecs[0]) - 1.0) < 1e-4
        with pytest.raises(NotGenerativeError):
            eng.submit([1, 2, 3], SamplingParams())


def test_generate_many_keeps_input_order(tiny_engine: Engine) -> None:
    prompts = [tiny_engine.chat_prompt([{"role": "user", "content": "x " * i}]) for i in range(1, 7)]
    params = SamplingParams(max_tokens=5)
    together = tiny_engine.generate_many(prompts, params)
    assert [c.token_ids for c in together] == [tiny_engine.generate(p, params).token_ids for p in prompts]

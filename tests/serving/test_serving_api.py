"""The OpenAI-compatible server, driven over real HTTP by the real `openai` client (and httpx for bad requests)."""

from __future__ import annotations

import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from serving_helpers import API_KEY, LiveServer

from temper.inference.engine import Engine
from temper.inference.sampling import SamplingParams

SEA = [{"role": "user", "content": "Tell me about the sea."}]


def solo(
    engine: Engine, messages: list[dict[str, str]], adapter: str | None = None, max_tokens: int = 16
) -> Any:
    return engine.chat(messages, SamplingParams(max_tokens=max_tokens), adapter)


def test_models_lists_base_and_adapters(client: Any, engine: Engine) -> None:
    ids = [m.id for m in client.models.list().data]
    assert ids == [engine.base_id, "ember", "other"]


def test_chat_non_stream_and_stream_match_the_engine(client: Any, engine: Engine) -> None:
    ref = solo(engine, SEA, "ember")
    assert ref.completion_tokens == 16 and ref.text
    r = client.chat.completions.create(model="ember", messages=SEA, temperature=0, max_tokens=16)
    assert r.choices[0].message.content == ref.text
    assert r.choices[0].finish_reason == "length"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (ref.prompt_tokens, 16)
    assert r.usage.total_tokens == ref.prompt_tokens + 16

    chunks = list(
        client.chat.completions.create(
            model="ember",
            messages=SEA,
            temperature=0,
            max_tokens=16,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    with_choices = [c for c in chunks if c.choices]
    assert with_choices[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in with_choices) == ref.text
    assert with_choices[-1].choices[0].finish_reason == "length"
    assert chunks[-1].usage.completion_tokens == 16 and chunks[-1].usage.prompt_tokens == ref.prompt_tokens


def test_stop_string_ends_the_answer(client: Any, engine: Engine) -> None:
    ref = solo(engine, SEA, "ember").text
    stop = ref[5:8]
    r = client.chat.completions.create(model="ember", messages=SEA, temperature=0, max_tokens=16, stop=[stop])
    assert r.choices[0].finish_reason == "stop"
    assert r.choices[0].message.content == ref[: ref.index(stop)]


def test_completions_non_stream_and_stream(client: Any, engine: Engine) -> None:
    prompt = "Once upon a time"
    ref = engine.generate(engine.text_prompt(prompt), SamplingParams(max_tokens=12))
    r = client.completions.create(model="base", prompt=prompt, temperature=0, max_tokens=12)
    assert r.choices[0].text == ref.text and r.usage.completion_tokens == ref.completion_tokens
    chunks = list(
        client.completions.create(model="base", prompt=prompt, temperature=0, max_tokens=12, stream=True)
    )
    assert "".join(c.choices[0].text for c in chunks) == ref.text
    assert chunks[-1].choices[0].finish_reason == r.choices[0].finish_reason


def test_embeddings_float_and_base64(client: Any, engine: Engine) -> None:
    texts = ["a cat sat on the mat", "the sea is blue"]
    b64 = client.embeddings.create(model="base", input=texts)  # the client asks for base64 by default
    flt = client.embeddings.create(model="base", input=texts, encoding_format="float")
    assert len(b64.data) == 2 and b64.usage.prompt_tokens > 0
    for a, b in zip(b64.data, flt.data, strict=True):
        assert len(a.embedding) == engine.model.config.hidden_size
        assert math.isclose(sum(x * x for x in a.embedding), 1.0, rel_tol=1e-4)
        assert a.embedding == pytest.approx(b.embedding, abs=1e-6)
    tuned = client.embeddings.create(model="ember", input=texts, encoding_format="float")
    assert tuned.data[0].embedding != pytest.approx(flt.data[0].embedding, abs=1e-3)


def test_two_adapters_give_different_greedy_outputs(client: Any) -> None:
    def ask(model: str) -> str:
        r = client.chat.completions.create(model=model, messages=SEA, temperature=0, max_tokens=12)
        return str(r.choices[0].message.content)

    outs = {m: ask(m) for m in ("base", "ember", "other")}
    assert len(set(outs.values())) == 3, outs


def test_sixteen_concurrent_requests_each_equal_their_solo_answer(client: Any, engine: Engine) -> None:
    models = ["base", "ember", "other"]
    jobs = [
        ([{"role": "user", "content": f"Question {i}: " + "why " * (i % 5)}], models[i % 3])
        for i in range(16)
    ]
    refs = [solo(engine, m, engine.adapter_for(name), 20).text for m, name in jobs]
    engine.batcher.max_rows_seen = 0

    def ask(job: tuple[list[dict[str, str]], str]) -> str:
        r = client.chat.completions.create(model=job[1], messages=job[0], temperature=0, max_tokens=20)
        return str(r.choices[0].message.content)

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(ask, jobs))
    assert answers == refs
    assert engine.batcher.max_rows_seen > 1  # they really were decoded together, adapters mixed


def _post(
    server: LiveServer, path: str, body: Any, key: str | None = API_KEY, raw: bytes | None = None
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    if raw is not None:
        return httpx.post(
            server.url + path, content=raw, headers=headers | {"Content-Type": "application/json"}
        )
    return httpx.post(server.url + path, json=body, headers=headers, timeout=30)


def _error(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    return dict(err)


def test_every_error_status(server: LiveServer, client: Any) -> None:
    ok = {"model": "base", "messages": SEA, "max_tokens": 2}
    assert _error(_post(server, "/v1/chat/completions", ok, key=None), 401)["type"] == "authentication_error"
    _error(_post(server, "/v1/chat/completions", ok, key="sk-wrong"), 401)
    _error(_post(server, "/v1/models", None, key="sk-wrong"), 405)  # POST on a GET route, still OpenAI-shaped
    _error(_post(server, "/v1/chat/completions", None, raw=b'{"model": "base", "messages": ['), 400)
    _error(_post(server, "/v1/chat/completions", None, raw=b"[1, 2]"), 400)
    assert (
        _error(_post(server, "/v1/chat/completions", ok | {"model": "nope"}), 404)["code"]
        == "model_not_found"
    )
    long = {"model": "base", "messages": [{"role": "user", "content": "sea " * 1500}]}
    assert _error(_post(server, "/v1/chat/completions", long), 400)["code"] == "context_length_exceeded"
    _error(_post(server, "/v1/completions", {"model": "base", "prompt": "hi", "max_tokens": 5000}), 400)
    for bad in ({"temperature": -1}, {"top_p": 2}, {"n": 2}, {"max_tokens": 0}, {"messages": []}):
        assert _error(_post(server, "/v1/chat/completions", ok | bad), 422)["param"] == next(iter(bad))
    # Asked-for features the server does not have are refused by name (they used to be ignored in silence).
    for bad in ({"logprobs": True, "top_logprobs": 2}, {"response_format": {"type": "json_object"}}):
        err = _error(_post(server, "/v1/chat/completions", ok | bad), 422)
        assert err["param"] == next(iter(bad)) and "not" in err["message"], err
    assert _error(_post(server, "/v1/completions", {"model": "base", "prompt": "hi", "logprobs": 2}), 422)
    for fine in ({"logprobs": False}, {"response_format": {"type": "text"}}):
        assert _post(server, "/v1/chat/completions", ok | fine).status_code == 200
    _error(
        _post(server, "/v1/chat/completions", ok | {"messages": [{"role": "wizard", "content": "x"}]}), 422
    )
    huge = {"model": "base", "messages": [{"role": "user", "content": "x" * 70_000}]}
    assert _error(_post(server, "/v1/chat/completions", huge), 413)["code"] == "body_too_large"
    # The openai client maps the same statuses to its exception types.
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=SEA)
    with pytest.raises(openai.UnprocessableEntityError):
        client.chat.completions.create(model="base", messages=SEA, temperature=-1)


@pytest.fixture()
def small_server(tiny_llama_dir: Path) -> Any:
    """One batch slot and one queue place, so that a third concurrent request is refused."""
    from temper.serving.app import create_app

    eng = Engine.load(tiny_llama_dir, dtype="fp32", max_batch_size=1, max_queue=1)
    live = LiveServer(create_app(eng))
    yield live, eng
    live.stop()
    eng.close()


def _wait(cond: Any, timeout: float = 20.0) -> None:
    deadline = time.time() + timeout
    while not cond():
        assert time.time() < deadline, "condition not reached in time"
        time.sleep(0.02)


def test_queue_full_is_429_and_a_disconnected_stream_frees_its_slot(small_server: Any) -> None:
    live, eng = small_server
    long = {"model": "base", "messages": SEA, "max_tokens": 900, "temperature": 0, "stream": True}
    queued: dict[str, Any] = {}
    with httpx.stream("POST", live.url + "/v1/chat/completions", json=long, timeout=60) as stream:
        lines = stream.iter_lines()
        got = [next(lines) for _ in range(6)]  # the stream is running: it holds the only batch slot
        assert any(line.startswith("data: ") for line in got)
        waiter = threading.Thread(
            target=lambda: queued.update(
                r=_post(live, "/v1/chat/completions", long | {"stream": False, "max_tokens": 3})
            )
        )
        waiter.start()
        _wait(lambda: eng.batcher.queued_count == 1)
        third = _post(live, "/v1/chat/completions", long | {"stream": False})
        assert _error(third, 429)["code"] == "queue_full"
        cancelled_before = eng.batcher.cancelled
    # Leaving the block closed the connection mid-stream: the slot goes to the queued request, then all is idle.
    waiter.join(timeout=60)
    assert queued["r"].status_code == 200 and queued["r"].json()["usage"]["completion_tokens"] <= 3
    _wait(lambda: eng.batcher.active_count == 0 and eng.batcher.queued_count == 0)
    assert eng.batcher.cancelled == cancelled_before + 1
    health = httpx.get(live.url + "/health").json()
    assert health["active"] == 0 and health["queued"] == 0


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def test_tools_and_tool_calls_are_rendered_as_training_renders_them(client: Any, engine: Engine) -> None:
    """`tools` and an assistant turn's `tool_calls` reach the prompt (they were dropped: the same prompt tokens
    as without them), in the form a sharegpt function_call row trains on."""
    from temper.data.templates import render_prompt

    ask = [{"role": "user", "content": "Weather in Paris?"}]
    plain = client.chat.completions.create(model="base", messages=ask, max_tokens=1)
    with_tools = client.chat.completions.create(model="base", messages=ask, tools=[WEATHER], max_tokens=1)
    rendered = render_prompt(engine.tokenizer, ask, add_generation_prompt=True, tools=[WEATHER])
    assert "get_weather" in rendered
    assert with_tools.usage.prompt_tokens == len(
        engine.tokenizer(rendered, add_special_tokens=False)["input_ids"]
    )
    assert with_tools.usage.prompt_tokens > plain.usage.prompt_tokens
    none = client.chat.completions.create(
        model="base", messages=ask, tools=[WEATHER], tool_choice="none", max_tokens=1
    )
    assert none.usage.prompt_tokens == plain.usage.prompt_tokens
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
    }
    history = [
        *ask,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    r = client.chat.completions.create(model="base", messages=history, tools=[WEATHER], max_tokens=1)
    turns = [
        *ask,
        {"role": "assistant", "content": '{"name": "get_weather", "arguments": {"city": "Paris"}}'},
        history[2],
    ]
    want = render_prompt(engine.tokenizer, turns, add_generation_prompt=True, tools=[WEATHER])
    assert r.usage.prompt_tokens == len(engine.tokenizer(want, add_special_tokens=False)["input_ids"])


def test_an_answer_that_calls_a_tool_comes_back_as_tool_calls() -> None:
    from temper.serving.protocol import chat_response, parse_tool_calls

    one = parse_tool_calls(' {"name": "get_weather", "arguments": {"city": "Paris"}}\n', [WEATHER])
    assert one is not None and len(one) == 1 and one[0]["type"] == "function"
    assert one[0]["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    two = parse_tool_calls('[{"name": "get_weather", "arguments": "{}"}, {"name": "get_weather"}]', [WEATHER])
    assert two is not None and [c["function"]["arguments"] for c in two] == ["{}", "{}"]
    for not_a_call in ('{"name": "other_tool", "arguments": {}}', "It is sunny.", "[]", '{"arguments": {}}'):
        assert parse_tool_calls(not_a_call, [WEATHER]) is None, not_a_call
    assert parse_tool_calls('{"name": "get_weather", "arguments": {}}', None) is None  # no tools: just text
    body = chat_response("id", "m", "x", "stop", 1, 1, one)
    assert body["choices"][0]["finish_reason"] == "tool_calls"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": None, "tool_calls": one}

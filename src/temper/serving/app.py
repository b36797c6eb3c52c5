"""The OpenAI-compatible HTTP server: FastAPI routes over one inference Engine.

Every generation request becomes a request of the engine's continuous batcher; the batcher thread pushes each
step's text into the request's asyncio queue. A client that disconnects (mid-stream, or while waiting for a
non-streamed answer) cancels its request, which frees its batch slot at the next decode step.

Example:
    >>> from temper.serving.app import serve
    >>> serve("runs/identity", port=8000, api_key="sk-local")                  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import base64
import json
import struct
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from temper.errors import TemperError
from temper.inference.engine import ContextLengthError, Engine, NotGenerativeError, UnknownModelError
from temper.inference.sampling import SamplingParams
from temper.inference.scheduler import GenEvent, GenRequest, QueueFullError
from temper.serving import protocol as P

DEFAULT_MAX_BODY = 1 << 20  # 1 MiB: far above any prompt that fits a small model's context


class APIError(Exception):
    """An error answered in OpenAI's JSON shape with an HTTP status."""

    def __init__(
        self, status: int, message: str, type_: str, param: str | None = None, code: str | None = None
    ):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code


def _from_temper(e: TemperError) -> APIError:
    """Map the engine's errors to HTTP statuses."""
    table: dict[type, tuple[int, str, str | None, str]] = {
        UnknownModelError: (404, "invalid_request_error", "model", "model_not_found"),
        ContextLengthError: (400, "invalid_request_error", "messages", "context_length_exceeded"),
        QueueFullError: (429, "rate_limit_error", None, "queue_full"),
        NotGenerativeError: (400, "invalid_request_error", "model", "model_not_generative"),
    }
    status, type_, param, code = table.get(type(e), (422, "invalid_request_error", None, "invalid_value"))
    return APIError(status, str(e), type_, param, code)


def create_app(
    engine: Engine,
    api_key: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY,
    default_max_tokens: int = 512,
) -> FastAPI:
    """A FastAPI app serving `engine`: /v1/models, /v1/chat/completions, /v1/completions, /v1/embeddings."""
    app = FastAPI(title="temper", docs_url=None, redoc_url=None)
    app.state.engine = engine

    async def parse(request: Request, model: type[BaseModel]) -> Any:
        return await _parse(request, model, api_key, max_body_bytes)

    _install_error_handlers(app)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "active": engine.batcher.active_count, "queued": engine.batcher.queued_count}

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        _check_key(request, api_key)
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "temper"} for m in engine.model_ids]
        return {"object": "list", "data": data}

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(request: Request) -> Any:
        req: P.ChatRequest = await parse(request, P.ChatRequest)
        adapter = engine.adapter_for(req.model)
        ids = engine.chat_prompt([m.as_dict() for m in req.messages], req.tool_list())
        return await _generate(request, engine, req, ids, adapter, default_max_tokens, chat=True)

    @app.post("/v1/completions", response_model=None)
    async def completions(request: Request) -> Any:
        req: P.CompletionRequest = await parse(request, P.CompletionRequest)
        adapter = engine.adapter_for(req.model)
        try:
            text, ids = req.prompt_kind()
        except ValueError as e:
            raise APIError(422, str(e), "invalid_request_error", "prompt", "invalid_value") from None
        prompt_ids = ids if ids is not None else engine.text_prompt(text or "")
        return await _generate(request, engine, req, prompt_ids, adapter, 16, chat=False)

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> dict[str, Any]:
        req: P.EmbeddingRequest = await parse(request, P.EmbeddingRequest)
        adapter = engine.adapter_for(req.model)
        texts = _embedding_texts(engine, req.input)
        for t in texts:
            engine.check_fits(len(engine.tokenizer(t)["input_ids"]), None)
        vecs, n_tokens = await run_in_threadpool(engine.embed, texts, adapter)
        data = [
            {
                "object": "embedding",
                "index": i,
                "embedding": _encode_vec(v[: req.dimensions], req.encoding_format),
            }
            for i, v in enumerate(vecs)
        ]
        return {"object": "list", "data": data, "model": req.model, "usage": P.usage(n_tokens, 0)}

    return app


def _install_error_handlers(app: FastAPI) -> None:
    """Every error, ours or the framework's (unknown route, wrong method), leaves in OpenAI's JSON shape."""

    @app.exception_handler(APIError)
    async def _api_error(_: Request, e: APIError) -> JSONResponse:
        return JSONResponse(P.error_body(e.message, e.type, e.param, e.code), status_code=e.status)

    @app.exception_handler(TemperError)
    async def _temper_error(_: Request, e: TemperError) -> JSONResponse:
        return await _api_error(_, _from_temper(e))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, e: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(P.error_body(str(e.detail), "invalid_request_error"), status_code=e.status_code)


async def _parse(request: Request, model: type[BaseModel], api_key: str | None, max_body: int) -> Any:
    """Check the key, read the capped body, parse JSON (400) and validate it against `model` (422)."""
    _check_key(request, api_key)
    body = await _read_body(request, max_body)
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise APIError(400, f"the request body is not valid JSON: {e}", "invalid_request_error") from None
    if not isinstance(data, dict):
        raise APIError(400, "the request body must be a JSON object", "invalid_request_error")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        param = ".".join(str(x) for x in err["loc"])
        raise APIError(
            422, f"{param}: {err['msg']}", "invalid_request_error", param, "invalid_value"
        ) from None


async def _generate(
    request: Request,
    engine: Engine,
    req: Any,
    ids: list[int],
    adapter: str | None,
    default_max: int,
    chat: bool,
) -> Any:
    """Submit to the batcher and answer as a stream (SSE) or as one JSON response."""
    params: SamplingParams = req.sampling(default_max)
    if req.max_tokens is None and req.max_completion_tokens is None:
        # No explicit budget: generate up to the default or what the context leaves, whichever is smaller.
        params.max_tokens = max(1, min(params.max_tokens or default_max, engine.context_length - len(ids)))
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[GenEvent] = asyncio.Queue()
    handle = engine.submit(ids, params, adapter, lambda e: loop.call_soon_threadsafe(events.put_nowait, e))
    rid = P.new_id("chatcmpl" if chat else "cmpl")
    if req.stream:
        body = _sse(request, events, handle, rid, req.model, chat, req.include_usage)
        return StreamingResponse(body, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    text, last = await _collect(request, events, handle)
    finish, pt, ct = last.finish_reason or "stop", last.prompt_tokens, last.completion_tokens
    if chat:
        return P.chat_response(
            rid, req.model, text, finish, pt, ct, P.parse_tool_calls(text, req.tool_list())
        )
    return P.completion_response(rid, req.model, text, finish, pt, ct)


async def _collect(
    request: Request, events: asyncio.Queue[GenEvent], handle: GenRequest
) -> tuple[str, GenEvent]:
    """Wait for the whole answer, cancelling the request if the client goes away meanwhile."""
    parts: list[str] = []
    try:
        while True:
            event = await _next_event(request, events, handle)
            if event is None:
                raise APIError(499, "client disconnected", "client_closed_request")
            parts.append(event.text)
            if event.finished:
                if event.finish_reason == "error":
                    raise APIError(500, f"generation failed: {event.error}", "server_error")
                return "".join(parts), event
    finally:
        handle.cancel()  # a no-op when finished; frees the slot on any other way out


async def _next_event(
    request: Request, events: asyncio.Queue[GenEvent], handle: GenRequest
) -> GenEvent | None:
    """The next event, or None once the client has gone away (the request is then cancelled)."""
    while True:
        try:
            return await asyncio.wait_for(events.get(), timeout=0.5)
        except asyncio.TimeoutError:
            # Starlette notices a disconnect only when it next sends (ASGI 2.4) or through its own listener
            # (2.3, which cancels us); polling here frees the slot even while no token is being produced.
            if await request.is_disconnected():
                handle.cancel()
                return None


async def _sse(
    request: Request,
    events: asyncio.Queue[GenEvent],
    handle: GenRequest,
    rid: str,
    model: str,
    chat: bool,
    include_usage: bool,
) -> AsyncIterator[str]:
    """Server-sent events in OpenAI's chunk format, ending with `data: [DONE]`."""
    try:
        if chat:
            yield _data(P.chat_chunk(rid, model, {"role": "assistant", "content": ""}, None))
        while True:
            event = await _next_event(request, events, handle)
            if event is None:
                return
            if event.finish_reason == "error":
                yield _data(P.error_body(f"generation failed: {event.error}", "server_error"))
                break
            if event.text or event.finished:
                finish = event.finish_reason if event.finished else None
                if chat:
                    delta = {"content": event.text} if event.text else {}
                    yield _data(P.chat_chunk(rid, model, delta, finish))
                else:
                    yield _data(P.completion_response(rid, model, event.text, finish, 0, 0) | {"usage": None})
            if event.finished:
                if include_usage:
                    obj = "chat.completion.chunk" if chat else "text_completion"
                    yield _data(P.usage_chunk(rid, model, obj, event.prompt_tokens, event.completion_tokens))
                break
        yield "data: [DONE]\n\n"
    finally:
        handle.cancel()  # the client went away (the generator was cancelled) or we are done: free the slot


def _data(obj: dict[str, Any]) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


def _check_key(request: Request, api_key: str | None) -> None:
    if api_key is None:
        return
    auth = request.headers.get("authorization", "")
    if not auth.startswith("Bearer ") or auth[7:] != api_key:
        what = "missing" if not auth else "invalid"
        raise APIError(
            401,
            f"{what} API key: send 'Authorization: Bearer <key>'",
            "authentication_error",
            None,
            "invalid_api_key",
        )


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise APIError(
            413,
            f"request body of {declared} bytes exceeds the {limit}-byte limit",
            "invalid_request_error",
            None,
            "body_too_large",
        )
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise APIError(
                413,
                f"request body exceeds the {limit}-byte limit",
                "invalid_request_error",
                None,
                "body_too_large",
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _embedding_texts(engine: Engine, value: Any) -> list[str]:
    """Texts from `input`: a string, a list of strings, token ids, or a list of token-id lists."""
    if isinstance(value, str):
        items: list[Any] = [value]
    elif value and all(isinstance(x, int) for x in value):
        items = [value]
    else:
        items = list(value)
    if not items or len(items) > 2048:
        raise APIError(
            422, "input must hold between 1 and 2048 items", "invalid_request_error", "input", "invalid_value"
        )
    return [x if isinstance(x, str) else engine.tokenizer.decode(x) for x in items]


def _encode_vec(vec: list[float], fmt: str) -> list[float] | str:
    if fmt == "float":
        return vec
    return base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode()


def serve(
    model: str | Path | Any,  # or a resolved ModelRef (models/load.py)
    adapters: Mapping[str, str | Path] | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    max_batch_size: int = 16,
    max_queue: int = 256,
    dtype: str = "auto",
    max_body_bytes: int = DEFAULT_MAX_BODY,
    default_max_tokens: int = 512,
    template: str | None = None,
    log_level: str = "info",
    system: str | None = None,
) -> None:
    """Load `model` (+ adapters) and serve it until interrupted.

    Example:
        >>> serve("smollm2-135m-instruct", adapters={"ember": "runs/identity"}, api_key="sk-local")  # doctest: +SKIP
    """
    import uvicorn

    engine = Engine.load(model, adapters, dtype, max_batch_size, max_queue, template, system=system)
    try:
        app = create_app(engine, api_key, max_body_bytes, default_max_tokens)
        uvicorn.run(app, host=host, port=port, log_level=log_level)
    finally:
        engine.close()

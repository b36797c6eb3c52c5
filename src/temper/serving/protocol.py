"""OpenAI-shaped request models and response builders for the HTTP server.

Requests are validated with pydantic: a value out of range (temperature -1, top_p 2) is a 422 naming the field.
Unknown fields are ignored, as OpenAI clients send optional ones we do not use (user, ...); those whose
absence would change the answer's meaning (logprobs, a JSON response_format) are refused by name when asked for.
`tools` are rendered into the prompt as training renders them, and a non-streamed answer that is a call to one
of them in the training data's form comes back as `tool_calls`.
Responses are plain dicts in OpenAI's shapes, built by the small functions at the bottom.

Example:
    >>> req = ChatRequest.model_validate({"model": "base", "messages": [{"role": "user", "content": "Hi"}]})
    >>> req.sampling(default_max_tokens=16).max_tokens
    16
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from temper.inference.sampling import SamplingParams


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ContentPart(_Lenient):
    type: Literal["text"]
    text: str


class FunctionCall(_Lenient):
    name: str
    arguments: str = "{}"  # OpenAI sends the arguments as a JSON string


class ToolCall(_Lenient):
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Lenient):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    tool_calls: list[ToolCall] | None = None

    def as_dict(self) -> dict[str, str]:
        # "developer" is OpenAI's new name for the system role.
        role = "system" if self.role == "developer" else self.role
        content = (
            self.content if isinstance(self.content, str) else "".join(p.text for p in self.content or [])
        )
        if self.tool_calls and not content:
            # An assistant turn that called tools reads as the training data writes it (a sharegpt
            # function_call turn): {"name": ..., "arguments": {...}}, a list when it called several.
            calls = [
                {"name": c.function.name, "arguments": _json_or_text(c.function.arguments)}
                for c in self.tool_calls
            ]
            content = json.dumps(calls[0] if len(calls) == 1 else calls, ensure_ascii=False)
        return {"role": role, "content": content}


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


class StreamOptions(_Lenient):
    include_usage: bool = False


class _Sampling(_Lenient):
    """The generation knobs both endpoints share (OpenAI's names, plus top_k and repetition_penalty)."""

    model: str
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0)
    repetition_penalty: float | None = Field(None, gt=0)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)  # accepted for compatibility, not applied
    presence_penalty: float | None = Field(None, ge=-2, le=2)  # accepted for compatibility, not applied
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = Field(1, ge=1, le=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    # Asked for, these would otherwise be ignored in silence (unknown fields are): refused by name instead.
    logprobs: bool | int | None = None
    response_format: dict[str, Any] | None = None

    @field_validator("logprobs")
    @classmethod
    def _check_logprobs(cls, v: bool | int | None) -> bool | int | None:
        if v:
            raise ValueError(
                "temper serve does not return log-probabilities; send logprobs false or leave it out"
            )
        return v

    @field_validator("response_format")
    @classmethod
    def _check_format(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v and v.get("type", "text") != "text":
            raise ValueError(
                f"response_format {v.get('type')!r} (constrained JSON output) is not supported by temper serve; "
                "ask for JSON in the prompt and parse the answer, or leave response_format out"
            )
        return v

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, v: str | list[str] | None) -> str | list[str] | None:
        items = [v] if isinstance(v, str) else v or []
        if len(items) > 16 or any(not s for s in items):
            raise ValueError("stop takes at most 16 non-empty strings")
        return v

    def sampling(self, default_max_tokens: int) -> SamplingParams:
        # OpenAI's defaults: temperature 1, top_p 1 (sampling); pass temperature=0 for greedy output.
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return SamplingParams(
            temperature=1.0 if self.temperature is None else self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p,
            top_k=self.top_k or 0,
            max_tokens=self.max_completion_tokens or self.max_tokens or default_max_tokens,
            stop=stop,
            seed=self.seed,
            repetition_penalty=self.repetition_penalty or 1.0,
        )

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    tools: list[dict[str, Any]] | None = (
        None  # rendered as training renders a row's tools (data/templates.py)
    )
    tool_choice: Any = None

    def tool_list(self) -> list[dict[str, Any]] | None:
        """The tools to render: none when the request says tool_choice "none"."""
        return None if self.tool_choice == "none" else self.tools or None


def parse_tool_calls(text: str, tools: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    """The answer as OpenAI tool_calls when it is a call in the training data's form ({"name", "arguments"}, or a
    list of them) to one of the request's tools; None for any other answer (it stays the message content)."""
    names = {str((t.get("function") or t).get("name")) for t in tools or []}
    try:
        parsed = json.loads(text.strip())
    except ValueError:
        return None
    calls = parsed if isinstance(parsed, list) else [parsed]
    if not names or not calls or not all(isinstance(c, dict) and c.get("name") in names for c in calls):
        return None
    return [
        {
            "id": new_id("call"),
            "type": "function",
            "function": {
                "name": c["name"],
                "arguments": c["arguments"]
                if isinstance(c.get("arguments"), str)
                else json.dumps(c.get("arguments", {}), ensure_ascii=False),
            },
        }
        for c in calls
    ]


class CompletionRequest(_Sampling):
    prompt: str | list[str] | list[int] = Field(min_length=1)

    def prompt_kind(self) -> tuple[str | None, list[int] | None]:
        """(text, None) or (None, token ids); a list holds exactly one prompt since n = 1 and no batching."""
        p = self.prompt
        if isinstance(p, str):
            return p, None
        if all(isinstance(x, int) for x in p):
            return None, [int(x) for x in p]  # type: ignore[arg-type]
        if len(p) != 1:
            raise ValueError("prompt: one prompt per request is supported (got a list of several)")
        return str(p[0]), None


class EmbeddingRequest(_Lenient):
    model: str
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)


# ---- responses ---------------------------------------------------------------------------------------
def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def chat_response(
    rid: str, model: str, text: str, finish: str, pt: int, ct: int, calls: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if calls:
        message, finish = {"role": "assistant", "content": None, "tool_calls": calls}, "tool_calls"
    return {
        "id": rid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
        "usage": usage(pt, ct),
    }


def chat_chunk(rid: str, model: str, delta: dict[str, str], finish: str | None) -> dict[str, Any]:
    return {
        "id": rid,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
    }


def completion_response(
    rid: str, model: str, text: str, finish: str | None, pt: int, ct: int
) -> dict[str, Any]:
    return {
        "id": rid,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}],
        "usage": usage(pt, ct),
    }


def usage_chunk(rid: str, model: str, obj: str, pt: int, ct: int) -> dict[str, Any]:
    return {
        "id": rid,
        "object": obj,
        "created": int(time.time()),
        "model": model,
        "choices": [],
        "usage": usage(pt, ct),
    }


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}

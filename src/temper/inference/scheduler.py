"""Continuous batching: one background thread decodes every active request together, one token per step.

Requests wait in a bounded queue. Between decode steps the loop admits waiting requests up to
`max_batch_size` (each is prefilled alone, then its KV cache is merged into the batch cache, see kvcache.py)
and drops finished or cancelled ones, so a short request never waits for a long one to end.

Requests for different LoRA adapters share a batch: the forward pass gets peft's `adapter_names` (one name per
row, "__base__" for the base model), so each row goes through its own adapter in the same step. Scheduling is
first come, first served across adapters.

Example:
    >>> b = Batcher(model, tokenizer, eos_ids={2}, context_length=2048)  # doctest: +SKIP
    >>> b.start(); b.submit(GenRequest([1, 42], SamplingParams(max_tokens=8), on_event=print))  # doctest: +SKIP
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import DynamicCache

from temper.errors import TemperError
from temper.inference.detok import TextStream
from temper.inference.kvcache import BatchKV, cache_kwarg, output_cache
from temper.inference.sampling import SamplingParams, choose_tokens

BASE = "__base__"  # peft's name for "no adapter" in a mixed batch
_ids = itertools.count()


class QueueFullError(TemperError):
    """The waiting queue is at `max_queue`: the caller should retry later (HTTP 429)."""


@dataclass
class GenEvent:
    """What a request's callback receives after each step: new text and, at the end, why it finished."""

    text: str
    token_ids: list[int]
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str | None = None  # stop | length | cancelled | error; None while running
    error: str | None = None
    first_token_time: float | None = None

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass
class GenRequest:
    prompt_ids: list[int]
    params: SamplingParams
    adapter: str | None = None  # None = base model
    on_event: Callable[[GenEvent], None] = lambda e: None
    id: str = field(default_factory=lambda: f"req-{next(_ids)}")
    cancelled: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        """Free this request's batch slot at the next step (e.g. when an HTTP client disconnects)."""
        self.cancelled.set()


@dataclass
class _Seq:
    req: GenRequest
    stream: TextStream
    generator: torch.Generator
    max_new: int
    last: int = -1
    generated: list[int] = field(default_factory=list)
    done: str | None = None
    first_token_time: float | None = None


class Batcher:
    """Owns the model while running: every forward pass (decode steps, prefills, embeddings) takes `lock`."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        eos_ids: set[int],
        context_length: int,
        max_batch_size: int = 16,
        max_queue: int = 256,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.eos_ids = eos_ids
        self.context_length = context_length
        self.max_batch_size = max_batch_size
        self.max_queue = max_queue
        self.lock = threading.Lock()
        self._peft = hasattr(model, "peft_config")
        self._cache_kw = cache_kwarg(model)  # fixed per model: not looked up again on every decode step
        self.device = next(model.parameters()).device
        self._cond = threading.Condition()
        self._waiting: deque[GenRequest] = deque()
        self._active: list[_Seq] = []
        self._kv: BatchKV | None = None
        self._stop = False
        self._thread: threading.Thread | None = None
        self.steps = 0  # decode steps run (for stats and tests)
        self.max_rows_seen = 0  # the largest batch decoded together so far
        self.cancelled = 0  # requests ended by cancel() (e.g. a client that disconnected)

    # ---- public API (any thread) -------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            # Measured: when the first multi-threaded torch op of the process runs in the batcher thread,
            # every later forward there is 3-5x slower on CPU; one small matmul on the calling thread first
            # (which sets up the OpenMP pool from it) avoids that.
            torch.ones(256, 256) @ torch.ones(256, 256)
            self._stop = False
            self._thread = threading.Thread(target=self._loop, name="temper-batcher", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def submit(self, req: GenRequest) -> GenRequest:
        with self._cond:
            if len(self._waiting) >= self.max_queue:
                raise QueueFullError(
                    f"the request queue is full ({self.max_queue} waiting, {len(self._active)} running).",
                    hint="Retry later, or start the server with a larger --max-queue / --max-batch-size.",
                )
            self._waiting.append(req)
            self._cond.notify_all()
        return req

    @property
    def active_count(self) -> int:
        return len(self._active)

    @property
    def queued_count(self) -> int:
        return len(self._waiting)

    # ---- the step loop (batcher thread) ------------------------------------------------------------
    def _loop(self) -> None:
        with torch.inference_mode():  # autograd state is per thread: set it here, not in the caller
            self._run()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stop and not self._waiting and not self._active:
                    self._cond.wait()
                if self._stop:
                    break
            try:
                self._admit()
                if self._active:
                    self._decode_step()
            except Exception as e:  # a failed step fails its requests, never the server
                self._fail_all(f"{type(e).__name__}: {e}")
        self._fail_all("the server is shutting down", reason="cancelled")

    def _admit(self) -> None:
        while len(self._active) < self.max_batch_size:
            with self._cond:
                if not self._waiting:
                    break
                req = self._waiting.popleft()
            if req.cancelled.is_set():
                self.cancelled += 1
                self._emit_end(req, "cancelled", prompt_tokens=len(req.prompt_ids))
                continue
            try:
                self._prefill(req)
            except Exception as e:  # e.g. an unknown adapter: fail this request only
                self._emit_end(req, "error", len(req.prompt_ids), f"{type(e).__name__}: {e}")
        self._drop_finished()

    def _prefill(self, req: GenRequest) -> None:
        # Alone, without padding: the prompt's keys/values are exactly those of a solo run.
        ids = torch.tensor([req.prompt_ids], dtype=torch.long, device=self.device)
        with self.lock:
            out = self.model(
                input_ids=ids,
                use_cache=True,
                logits_to_keep=1,
                **{self._cache_kw: DynamicCache()},
                **self._adapter_kwargs([req.adapter]),
            )
        kv = BatchKV(output_cache(out), [len(req.prompt_ids)])
        room = self.context_length - len(req.prompt_ids)
        max_new = min(req.params.max_tokens or room, room)
        seq = _Seq(req, TextStream(self._decode, req.params.stop), req.params.make_generator(), max_new)
        token = choose_tokens(out.logits[:, -1, :].float(), [req.params], [seq.generator], [req.prompt_ids])[
            0
        ]
        if self._kv is None:
            self._kv = kv
        else:
            self._kv.merge(kv)
        self._active.append(seq)
        self._accept(seq, token)

    def _decode_step(self) -> None:
        self._drop_finished()
        if not self._active or self._kv is None:
            return
        kv = self._kv
        input_ids = torch.tensor([[s.last] for s in self._active], dtype=torch.long, device=self.device)
        positions = torch.tensor([[n] for n in kv.lengths], dtype=torch.long, device=self.device)
        with self.lock:
            out = self.model(
                input_ids=input_ids,
                attention_mask=kv.attention_mask().to(self.device),
                position_ids=positions,
                use_cache=True,
                **{self._cache_kw: kv.cache},
                **self._adapter_kwargs([s.req.adapter for s in self._active]),
            )
        kv.cache = output_cache(out)
        kv.advance()
        self.steps += 1
        self.max_rows_seen = max(self.max_rows_seen, len(self._active))
        params = [s.req.params for s in self._active]
        gens = [s.generator for s in self._active]
        seen = (
            [s.req.prompt_ids + s.generated for s in self._active]
            if any(p.repetition_penalty != 1.0 for p in params)
            else [[] for _ in params]
        )
        tokens = choose_tokens(out.logits[:, -1, :].float().cpu(), params, gens, seen)
        for seq, token in zip(self._active, tokens, strict=True):
            self._accept(seq, token)
        self._drop_finished()

    def _accept(self, seq: _Seq, token: int) -> None:
        """Record one sampled token for `seq`, emit its text, and decide whether it is finished."""
        if seq.first_token_time is None:
            seq.first_token_time = time.perf_counter()
        if seq.req.cancelled.is_set():
            seq.done = "cancelled"
            self._emit(seq, "", [])
            return
        if token in self.eos_ids:
            seq.done = "stop"
            self._emit(seq, seq.stream.flush(), [])
            return
        seq.generated.append(token)
        seq.last = token
        delta = seq.stream.push(token)
        if seq.stream.stopped:
            seq.done = "stop"
        elif len(seq.generated) >= seq.max_new:
            seq.done = "length"
            delta += seq.stream.flush()
        self._emit(seq, delta, [token])

    def _emit(self, seq: _Seq, text: str, ids: list[int]) -> None:
        if not text and not ids and seq.done is None:
            return
        if seq.done == "cancelled":
            self.cancelled += 1
        seq.req.on_event(
            GenEvent(
                text=text,
                token_ids=ids,
                prompt_tokens=len(seq.req.prompt_ids),
                completion_tokens=len(seq.generated),
                finish_reason=seq.done,
                first_token_time=seq.first_token_time,
            )
        )

    def _drop_finished(self) -> None:
        for s in self._active:
            if s.done is None and s.req.cancelled.is_set():
                s.done = "cancelled"
                self._emit(s, "", [])
        keep = [i for i, s in enumerate(self._active) if s.done is None]
        if len(keep) == len(self._active):
            return
        self._active = [self._active[i] for i in keep]
        if not keep:
            self._kv = None
        elif self._kv is not None:
            self._kv.keep(keep)

    def _fail_all(self, message: str, reason: str = "error") -> None:
        with self._cond:
            waiting, self._waiting = list(self._waiting), deque()
        for s in self._active:
            s.done = reason
            s.req.on_event(GenEvent("", [], len(s.req.prompt_ids), len(s.generated), reason, message))
        for r in waiting:
            self._emit_end(r, reason, len(r.prompt_ids), message)
        self._active, self._kv = [], None

    @staticmethod
    def _emit_end(req: GenRequest, reason: str, prompt_tokens: int, error: str | None = None) -> None:
        req.on_event(GenEvent("", [], prompt_tokens, 0, reason, error))

    def _adapter_kwargs(self, adapters: list[str | None]) -> dict[str, Any]:
        return {"adapter_names": [a or BASE for a in adapters]} if self._peft else {}

    def _decode(self, ids: list[int]) -> str:
        return str(self.tokenizer.decode(ids, skip_special_tokens=True))

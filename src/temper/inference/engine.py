"""The inference engine shared by `temper chat`, `temper infer`, `temper serve` and evaluation.

An Engine holds one model (a bundled alias, HF dir, GGUF file or run dir) with any number of LoRA adapters,
renders chat messages with the training template, and generates through the continuous batcher
(scheduler.py): every call, from any thread, becomes a request in the same batch. Encoder models (BERT-style)
load as embedding-only engines.

Example:
    >>> from temper.inference.engine import Engine, SamplingParams
    >>> with Engine.load("smollm2-135m-instruct") as eng:                             # doctest: +SKIP
    ...     print(eng.chat([{"role": "user", "content": "Hi"}], SamplingParams(max_tokens=20)).text)
"""

from __future__ import annotations

import queue
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from temper.errors import TemperError
from temper.inference.prompts import encode_prompt, render_messages
from temper.inference.sampling import SamplingParams
from temper.inference.scheduler import Batcher, GenEvent, GenRequest, QueueFullError

__all__ = ["Completion", "Engine", "GenEvent", "QueueFullError", "SamplingParams"]

BASE_ALIAS = "base"  # always accepted as a model id for the base weights


class UnknownModelError(TemperError):
    """A request named a model id that this engine does not serve (HTTP 404)."""


class ContextLengthError(TemperError):
    """The prompt (plus the requested tokens) does not fit the model's context (HTTP 400)."""


class NotGenerativeError(TemperError):
    """Generation was asked of an encoder (embedding-only) model."""


@dataclass
class Completion:
    """A finished generation. `token_ids` excludes the end-of-sequence token."""

    text: str
    token_ids: list[int]
    finish_reason: str  # stop | length | cancelled | error
    prompt_tokens: int
    completion_tokens: int


class Engine:
    """Model + adapters + tokenizer + batcher. Thread-safe: call it from any number of threads."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        base_id: str,
        adapters: list[str] | None = None,
        generative: bool = True,
        max_batch_size: int = 16,
        max_queue: int = 256,
        pooling: str = "mean",
        default_adapter: str | None = None,
        merged: bool = False,
    ) -> None:
        self.model = model
        self.merged = merged  # the model is base + an adapter folded in: there are no base weights to serve
        self.default_adapter = default_adapter  # what chat/infer use unless told: a run dir's own adapter
        self.tokenizer = tokenizer
        self.base_id = base_id
        self.adapters = list(adapters or [])
        self.generative = generative
        self.pooling = pooling
        self.context_length = _context_length(model, tokenizer)
        self.batcher = Batcher(
            model,
            tokenizer,
            eos_ids=_eos_ids(model, tokenizer),
            context_length=self.context_length,
            max_batch_size=max_batch_size,
            max_queue=max_queue,
        )
        if generative:
            self.batcher.start()

    @classmethod
    def load(
        cls,
        model: str | Path | Any,  # or a resolved ModelRef (models/load.py)
        adapters: Mapping[str, str | Path] | None = None,
        dtype: str = "auto",
        max_batch_size: int = 16,
        max_queue: int = 256,
        template: str | None = None,
        merge_adapter: bool = False,
        system: str | None = None,
    ) -> Engine:
        """Load a model (and the adapter of a run dir, plus `adapters` {name: run or adapter dir}).

        `template` overrides the chat template (a built-in name or a Jinja file), as in training, and `system`
        becomes the default system prompt of conversations without one (training's --system).
        `merge_adapter`: when a run dir's own adapter is the only one and the weights are fp32, fold it into
        them (models/adapters.py: fold_single_adapter) and serve that under the adapter's name; the base model is
        then not available. For callers that use that one adapter throughout (chat, infer).
        """
        from temper.data.templates import prepare_tokenizer
        from temper.models.adapters import fold_single_adapter
        from temper.models.heads import is_decoder, load_encoder, read_pooling
        from temper.models.load import ModelRef, load_causal_lm, refuse_reward_model, resolve

        ref = model if isinstance(model, ModelRef) else resolve(str(model))
        refuse_reward_model(ref)  # its score head would be dropped: it would load as an embedder
        extra = {name: _adapter_dir(Path(p)) for name, p in (adapters or {}).items()}
        base_id = _base_id(ref)
        if not is_decoder(_read_config(ref.path)):
            enc, tok = load_encoder(ref, dtype="fp32" if dtype == "auto" else dtype)
            return cls(enc, tok, base_id, generative=False, pooling=read_pooling(ref.path))
        lm, tok = load_causal_lm(ref, dtype=dtype, adapters=extra)
        if template or system is not None:
            prepare_tokenizer(tok, template, system)
        names = [*ref.adapters, *extra]
        default = next(iter(ref.adapters), None)
        if merge_adapter and default:  # fold_single_adapter leaves two or more adapters (extras) alone
            folded = fold_single_adapter(lm)
            if folded is not lm:
                return cls(folded, tok, default, [], True, max_batch_size, max_queue, merged=True)
        return cls(lm, tok, base_id, names, True, max_batch_size, max_queue, default_adapter=default)

    # ---- lifecycle ----------------------------------------------------------------------------------
    def close(self) -> None:
        self.batcher.stop()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- names and prompts --------------------------------------------------------------------------
    @property
    def model_ids(self) -> list[str]:
        return [self.base_id, *self.adapters]

    def adapter_for(self, model_id: str | None) -> str | None:
        """The adapter a model id selects (None = base). Raises UnknownModelError for other ids."""
        if model_id == BASE_ALIAS and self.merged:
            raise UnknownModelError(
                f"this engine holds {self.base_id!r} with its adapter folded into the weights; the base model "
                "is not loaded.",
                hint="Load it without merge_adapter (`temper chat RUN --adapter base`) to use the base model.",
            )
        if model_id in (None, "", self.base_id, BASE_ALIAS):
            return None
        if model_id in self.adapters:
            return model_id
        raise UnknownModelError(
            f"model {model_id!r} is not served here; available: {', '.join(self.model_ids)}.",
            hint="Pass one of these ids or 'base' (a server takes more adapters: temper serve --adapter NAME=RUN_DIR).",
        )

    def chat_prompt(self, messages: list[dict[str, Any]], tools: list[Any] | None = None) -> list[int]:
        """Token ids of `messages` (and `tools`) rendered with the training chat template plus the generation
        prompt."""
        return encode_prompt(self.tokenizer, render_messages(self.tokenizer, messages, tools))

    def text_prompt(self, prompt: str) -> list[int]:
        """Token ids of a raw completion prompt (BOS added when the tokenizer normally adds one)."""
        return encode_prompt(self.tokenizer, prompt, special_tokens=True)

    # ---- generation ---------------------------------------------------------------------------------
    def submit(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        adapter: str | None = None,
        on_event: Any = None,
    ) -> GenRequest:
        """Queue one request; `on_event(GenEvent)` is called from the batcher thread after every step."""
        if not self.generative:
            raise NotGenerativeError(f"{self.base_id} is an encoder model: it serves embeddings only.")
        self.check_fits(len(prompt_ids), params.max_tokens)
        req = GenRequest(list(prompt_ids), params, adapter, on_event or (lambda e: None))
        return self.batcher.submit(req)

    def check_fits(self, prompt_tokens: int, max_tokens: int | None) -> None:
        """Raise ContextLengthError when the prompt (plus max_tokens, if given) exceeds the context."""
        needed = prompt_tokens + (max_tokens or 1)
        if prompt_tokens < 1 or needed > self.context_length:
            raise ContextLengthError(
                f"this model's context is {self.context_length} tokens, but the request needs {needed} "
                f"({prompt_tokens} in the prompt + {max_tokens or 1} to generate).",
                hint="Shorten the prompt or lower max_tokens.",
            )

    def stream(
        self, prompt_ids: list[int], params: SamplingParams, adapter: str | None = None
    ) -> Iterator[GenEvent]:
        """Yield events as tokens are generated; closing the iterator early cancels the request."""
        events: queue.Queue[GenEvent] = queue.Queue()
        req = self.submit(prompt_ids, params, adapter, events.put)
        try:
            while True:
                event = events.get()
                yield event
                if event.finished:
                    return
        finally:
            req.cancel()  # no-op when finished; frees the slot when the consumer stopped early

    def generate(
        self, prompt_ids: list[int], params: SamplingParams, adapter: str | None = None
    ) -> Completion:
        """Generate to the end and return the whole completion."""
        text, ids = [], []
        last: GenEvent | None = None
        for event in self.stream(prompt_ids, params, adapter):
            text.append(event.text)
            ids.extend(event.token_ids)
            last = event
        assert last is not None and last.finish_reason is not None
        if last.finish_reason == "error":
            raise TemperError(f"generation failed: {last.error}")
        return Completion("".join(text), ids, last.finish_reason, last.prompt_tokens, last.completion_tokens)

    def generate_many(
        self, prompts: list[list[int]], params: SamplingParams, adapter: str | None = None
    ) -> list[Completion]:
        """Generate for every prompt through the batcher together; results in input order (for evaluation).

        Example:
            >>> outs = eng.generate_many([eng.chat_prompt(m) for m in convs], SamplingParams(max_tokens=64))  # doctest: +SKIP
        """
        done: queue.Queue[tuple[int, GenEvent]] = queue.Queue()
        parts: list[list[str]] = [[] for _ in prompts]
        ids: list[list[int]] = [[] for _ in prompts]
        out: list[Completion | None] = [None] * len(prompts)
        window = self.batcher.max_batch_size + self.batcher.max_queue
        submitted = finished = 0
        while finished < len(prompts):
            while submitted < len(prompts) and submitted - finished < window:
                i = submitted
                self.submit(prompts[i], params, adapter, lambda e, i=i: done.put((i, e)))
                submitted += 1
            i, e = done.get()
            parts[i].append(e.text)
            ids[i].extend(e.token_ids)
            if e.finished:
                if e.finish_reason == "error":
                    raise TemperError(f"generation failed for prompt {i}: {e.error}")
                out[i] = Completion(
                    "".join(parts[i]), ids[i], e.finish_reason or "stop", e.prompt_tokens, e.completion_tokens
                )
                finished += 1
        return [c for c in out if c is not None]

    def chat(
        self, messages: list[dict[str, Any]], params: SamplingParams | None = None, adapter: str | None = None
    ) -> Completion:
        """Answer a conversation (greedy with 256 new tokens at most unless `params` says otherwise)."""
        return self.generate(self.chat_prompt(messages), params or SamplingParams(), adapter)

    # ---- embeddings ---------------------------------------------------------------------------------
    def embed(self, texts: list[str], adapter: str | None = None) -> tuple[list[list[float]], int]:
        """L2-normalised mean-pooled last-layer hidden states of each text, and the tokens read."""
        from temper.models.heads import pool

        enc = self.tokenizer(
            texts, padding=True, return_tensors="pt", truncation=True, max_length=self.context_length
        )
        with self.batcher.lock, torch.inference_mode():
            hidden = self._hidden_states(enc, adapter)
        vecs = torch.nn.functional.normalize(
            pool(hidden.float(), enc["attention_mask"], self.pooling), dim=-1
        )
        return vecs.tolist(), int(enc["attention_mask"].sum())

    def _hidden_states(self, enc: Any, adapter: str | None) -> torch.Tensor:
        if not self.generative:
            return self.model(**enc).last_hidden_state
        # The backbone's output is the final-norm hidden state; peft's LoRA layers live inside it.
        peft = hasattr(self.model, "peft_config")
        base = self.model.get_base_model() if peft else self.model
        backbone = base.get_decoder()
        if not peft:
            return backbone(
                input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]
            ).last_hidden_state
        if adapter is None:
            with self.model.disable_adapter():
                return backbone(
                    input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]
                ).last_hidden_state
        self.model.set_adapter(adapter)
        return backbone(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state


def _read_config(path: Path) -> Any:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(path, local_files_only=True)


def _base_id(ref: Any) -> str:
    """A short id for the base weights: the alias, or the last path component (without .gguf)."""
    name = ref.base_name if ref.adapters and ref.base_name else ref.name
    if ref.kind == "run" and not ref.adapters and ref.run_dir is not None:
        name = str(ref.run_dir)  # a full fine-tune: the run itself is the base model
    p = Path(str(name).rstrip("/"))
    return p.stem if p.suffix == ".gguf" else p.name or str(name)


def _adapter_dir(path: Path) -> Path:
    """A run dir with an adapter, or a bare adapter dir; both keep the adapter files at their root."""
    if (path / "adapter_config.json").exists():
        return path
    raise TemperError(
        f"{path} holds no LoRA adapter (adapter_config.json is missing).",
        hint="Pass --adapter NAME=RUN_DIR with the run dir of a `temper sft --tuning lora` run.",
    )


def _context_length(model: Any, tokenizer: Any) -> int:
    cfg = model.config
    n = int(getattr(cfg, "max_position_embeddings", 0) or 0) or 2048
    tok_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_max, int) and 0 < tok_max < n:
        n = tok_max
    return n


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    """End-of-sequence ids: the tokenizer's eos plus any the generation config lists (e.g. <|eot_id|>)."""
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    gen = getattr(model, "generation_config", None)
    extra = getattr(gen, "eos_token_id", None) if gen is not None else None
    if isinstance(extra, int):
        ids.add(extra)
    elif isinstance(extra, list):
        ids.update(int(i) for i in extra)
    return ids

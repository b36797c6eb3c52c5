"""The board's chat: one inference Engine at a time, loaded from a run (its adapter, the base, or another run's
adapter on the same base), streaming through the same Engine that `temper chat` and `temper serve` use."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from temper.errors import TemperError
from temper.inference.engine import Engine, SamplingParams
from temper.runs import read_manifest


def sibling_adapters(runs_root: Path, run_dir: Path) -> dict[str, Path]:
    """LoRA runs on the same base model as `run_dir`: they can be switched in without a second base copy."""
    try:
        base = read_manifest(run_dir).get("base_model")
    except TemperError:
        return {}
    out: dict[str, Path] = {}
    for p in sorted(runs_root.iterdir()):
        if p == run_dir or not p.is_dir() or not (p / "adapter_model.safetensors").exists():
            continue
        try:
            m = read_manifest(p)
        except TemperError:
            continue
        if m.get("weights") == "adapter" and m.get("base_model") == base and m.get("result"):
            out[p.name] = p
    return out


class ChatEngines:
    """Keeps the engine of the last model chatted with (one copy of weights in memory at a time)."""

    def __init__(self, runs_root: Path) -> None:
        self.runs_root = runs_root
        self.key: str | None = None
        self.engine: Engine | None = None
        self.lock = threading.Lock()

    def get(self, model: str) -> Engine:
        with self.lock:
            if self.engine is not None and self.key == model:
                return self.engine
            if self.engine is not None:
                self.engine.close()
                self.engine = None
            path = Path(model)
            extra = (
                sibling_adapters(self.runs_root, path)
                if path.is_dir() and path.parent == self.runs_root
                else {}
            )
            self.engine = Engine.load(model, adapters=extra, max_batch_size=4)
            self.key = model
            return self.engine

    def adapters(self, model: str) -> dict[str, Any]:
        eng = self.get(model)
        return {"default": eng.default_adapter, "adapters": eng.adapters}

    def start(
        self,
        model: str,
        adapter: str | None,
        messages: list[dict[str, Any]],
        max_tokens: int,
        temperature: float,
    ) -> Iterator[str]:
        """Check everything (model, adapter, prompt length), then return the stream of text pieces.

        adapter: None/"default" = the run's own, "base" = none, else a sibling run's name. Errors are raised
        here, before the HTTP response starts, so the page gets a message instead of a cut stream.
        """
        eng = self.get(model)
        chosen = eng.default_adapter if adapter in (None, "", "default") else eng.adapter_for(adapter)
        ids = eng.chat_prompt(messages)
        params = SamplingParams(max_tokens=max_tokens, temperature=temperature)
        eng.check_fits(len(ids), max_tokens)
        return self._pieces(eng, ids, params, chosen)

    @staticmethod
    def _pieces(eng: Engine, ids: list[int], params: SamplingParams, chosen: str | None) -> Iterator[str]:
        for event in eng.stream(ids, params, chosen):
            if event.error:
                raise TemperError(f"generation failed: {event.error}")
            if event.text:
                yield event.text

    def close(self) -> None:
        with self.lock:
            if self.engine is not None:
                self.engine.close()
                self.engine = None

"""The data preview: the first rows of a dataset as the trainer will see them.

Each row becomes segments of decoded text marked `trained` (the tokens with labels), `masked` (prompt, system,
template tokens: label -100) or `cut` (past max_length, dropped by truncation). The tokens come from the same
functions the recipes call (`chat_ids`, `text_ids`, `render_prompt`), so the preview cannot drift from training.
"""

from __future__ import annotations

from typing import Any

from temper.data.records import ChatExample, ClsExample, KTOExample, PreferenceExample, TextExample
from temper.data.tokenize import IGNORE, chat_ids, text_ids


def preview(cfg: Any, verb: str, limit: int = 3) -> list[dict[str, Any]]:
    """Rows {source, segments: [{text, kind}], note} for the first `limit` records of the launch's data."""
    from temper.board.forms import preview_records

    records = preview_records(cfg, verb, limit=limit)
    if verb == "classify":
        return [_cls_row(r) for r in records]
    tokenizer = _tokenizer(cfg)
    max_length = int(cfg.data.max_length)
    system = getattr(cfg.data, "system", None)
    rows = []
    for r in records:
        if isinstance(r, ChatExample):
            ids, labels = chat_ids(
                tokenizer,
                r,
                system,
                train_on_prompt=getattr(cfg.data, "train_on_prompt", False),
                mask_history=getattr(cfg.data, "mask_history", False),
            )
            rows.append(_token_row(tokenizer, r.source, ids, labels, max_length))
        elif isinstance(r, TextExample):
            ids, labels = text_ids(tokenizer, r)
            rows.append(_token_row(tokenizer, r.source, ids, labels, max_length))
        elif isinstance(r, PreferenceExample | KTOExample):
            rows.append(_pref_row(tokenizer, r, system))
    return rows


def _tokenizer(cfg: Any) -> Any:
    from temper.data.templates import prepare_tokenizer
    from temper.models.load import load_tokenizer, resolve_model

    return prepare_tokenizer(
        load_tokenizer(resolve_model(cfg.model.model, cfg.model.adapter)), cfg.model.template
    )


def _token_row(
    tokenizer: Any, source: str, ids: list[int], labels: list[int], max_length: int
) -> dict[str, Any]:
    kinds = [
        "cut" if i >= max_length else ("masked" if lab == IGNORE else "trained")
        for i, lab in enumerate(labels)
    ]
    segments: list[dict[str, Any]] = []
    start = 0
    for i in range(1, len(ids) + 1):
        if i == len(ids) or kinds[i] != kinds[start]:
            text = tokenizer.decode(ids[start:i], skip_special_tokens=False)
            segments.append({"text": text, "kind": kinds[start], "tokens": i - start})
            start = i
    trained = sum(1 for k in kinds if k == "trained")
    note = f"{min(len(ids), max_length)} tokens, {trained} trained"
    if len(ids) > max_length:
        note += f"; {len(ids) - max_length} past max_length={max_length} are cut"
    return {"source": source, "segments": segments, "note": note}


def _pref_row(tokenizer: Any, r: PreferenceExample | KTOExample, system: str | None) -> dict[str, Any]:
    from temper.data.pref_tokenize import chat_dicts
    from temper.data.templates import render_prompt

    messages = chat_dicts(r.prompt, r.system if r.system is not None else system)
    prompt = render_prompt(tokenizer, messages, add_generation_prompt=True)
    segments: list[dict[str, Any]] = [{"text": prompt, "kind": "masked"}]
    if isinstance(r, PreferenceExample):
        segments += [
            {"text": r.chosen, "kind": "trained", "label": "chosen"},
            {"text": r.rejected, "kind": "rejected", "label": "rejected"},
        ]
        note = "prompt (masked), then the chosen and the rejected reply"
    else:
        kind = "trained" if r.label else "rejected"
        segments.append(
            {"text": r.completion, "kind": kind, "label": "desirable" if r.label else "undesirable"}
        )
        note = f"prompt (masked), then a {'desirable' if r.label else 'undesirable'} completion"
    return {"source": r.source, "segments": segments, "note": note}


def _cls_row(r: ClsExample) -> dict[str, Any]:
    segments = [{"text": r.text, "kind": "trained"}]
    if r.text_pair is not None:
        segments.append({"text": r.text_pair, "kind": "trained", "label": "pair"})
    return {"source": r.source, "segments": segments, "note": f"label: {r.label}"}

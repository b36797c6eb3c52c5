"""`temper infer PREDICT.yaml`: LLaMA-Factory's batch prediction, from the YAML it runs it with.

    model_name_or_path: smollm2-135m-instruct
    adapter_name_or_path: runs/identity
    stage: sft
    do_predict: true
    predict_with_generate: true
    eval_dataset: identity,alpaca_en_demo
    dataset_dir: data
    max_samples: 50
    output_dir: runs/identity/predict

Every row of eval_dataset is answered (continuous batching, resumable, in order) into
OUTPUT_DIR/generated_predictions.jsonl, one {"prompt", "predict", "label"} line per row as LLaMA-Factory writes
it, and its BLEU-4 / ROUGE scores go to OUTPUT_DIR/predict_results.json (and into all_results.json, beside
any other split's metrics there) under its key names, computed as it
computes them (evaluation/metrics.py: llamafactory_similarity). Generation keys the YAML leaves unset take
LLaMA-Factory's defaults (it samples: do_sample true, temperature 0.95, top_p 0.7), and say so.

A row whose prompt and reference together exceed `cutoff_len` (2048 unless the YAML says) is cut as
LLaMA-Factory cuts it (data/processor/processor_utils.py: infer_seqlen): the longer side gives up tokens, the
prompt's are taken off its end, the reference keeps its start; the model answers the cut prompt and is scored
against the cut reference. Unlike LLaMA-Factory, the rows cut are counted (`PredictResult.cut`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from temper.inference.batch import InferSummary, PromptRow, dataset_prompts, generate_rows
from temper.inference.engine import Engine
from temper.inference.sampling import SamplingParams
from temper.inference.scheduler import GenEvent

PREDICTIONS = "generated_predictions.jsonl"
RESULTS = "predict_results.json"
ALL_RESULTS = "all_results.json"


@dataclass
class PredictResult:
    summary: InferSummary
    metrics: dict[str, float]
    predictions: Path
    results: Path
    cut: int  # rows whose prompt or reference cutoff_len shortened


def predict(
    engine: Engine,
    options: dict[str, Any],
    params: SamplingParams,
    adapter: str | None = None,
    output: str | Path | None = None,
    progress: bool = True,
) -> PredictResult:
    """Answer the YAML's eval_dataset into generated_predictions.jsonl and score it into predict_results.json."""
    from temper.evaluation.metrics import llamafactory_similarity
    from temper.runs import write_json_atomic

    datasets = options["eval_dataset"]
    names = datasets if isinstance(datasets, list) else str(datasets).split(",")
    rows = dataset_prompts(names, options.get("dataset_dir"), max_samples=options.get("max_samples"))
    predictions = Path(output) if output else Path(options.get("output_dir") or ".") / PREDICTIONS
    tokenizer = engine.tokenizer
    cutoff = int(options.get("cutoff_len") or 2048)
    encoded: list[tuple[list[int], list[int]]] = []  # (prompt, reference) tokens of each row, cut
    cut = 0
    for row in rows:
        ids, label = engine.chat_prompt(row.messages), reply_ids(tokenizer, row)
        keep_ids, keep_label = infer_seqlen(len(ids), len(label), cutoff)
        encoded.append((ids[:keep_ids], label[:keep_label]))
        cut += keep_ids + keep_label < len(ids) + len(label)

    def line(index: int, row: PromptRow, text: str, last: GenEvent, model: str) -> dict[str, Any]:
        ids, label = encoded[index]
        prompt = tokenizer.decode(ids, skip_special_tokens=False)
        return {"prompt": prompt, "predict": text, "label": tokenizer.decode(label, skip_special_tokens=True)}

    summary = generate_rows(
        engine, rows, predictions, params, adapter, progress, line, lambda i: encoded[i][0]
    )
    written = [json.loads(x) for x in predictions.read_text(encoding="utf-8").splitlines()]
    scores = llamafactory_similarity([r["predict"] for r in written], [r["label"] for r in written])
    metrics = {f"predict_{k}": v for k, v in scores.items()}
    # Of this call: a resumed run times only the rows it answered.
    metrics["predict_runtime"] = round(summary.seconds, 4)
    answered = summary.rows - summary.skipped
    metrics["predict_samples_per_second"] = round(answered / max(summary.seconds, 1e-9), 3)
    # The Trainer's steps are batches of per_device_eval_batch_size; rows here decode continuously in batches of
    # up to that many (the engine's max_batch_size), so the same count is ceil(rows / batch).
    steps = -(-answered // max(engine.batcher.max_batch_size, 1))
    metrics["predict_steps_per_second"] = round(steps / max(summary.seconds, 1e-9), 3)
    results = predictions.parent / RESULTS
    write_json_atomic(results, metrics)
    # The Trainer's save_metrics also merges every split's metrics into all_results.json (LF writes both).
    merged = predictions.parent / ALL_RESULTS
    try:
        before = json.loads(merged.read_text(encoding="utf-8")) if merged.exists() else {}
    except json.JSONDecodeError:
        before = {}
    write_json_atomic(merged, {**(before if isinstance(before, dict) else {}), **metrics})
    return PredictResult(summary, metrics, predictions, results, cut)


def infer_seqlen(source_len: int, target_len: int, cutoff_len: int) -> tuple[int, int]:
    """(prompt tokens, reference tokens) kept of a row under cutoff_len, as LLaMA-Factory computes them."""
    if target_len * 2 < cutoff_len:  # a short reference is kept whole; the prompt gives up what is over
        max_target = cutoff_len
    elif source_len * 2 < cutoff_len:  # a short prompt is kept whole; the reference gives up the rest
        max_target = cutoff_len - source_len
    else:  # both long: shared in proportion to their lengths
        max_target = int(cutoff_len * (target_len / (source_len + target_len)))
    target = min(max_target, target_len)
    return min(max(cutoff_len - target, 0), source_len), target


def reply_ids(tokenizer: Any, row: PromptRow) -> list[int]:
    """The reference's tokens as LLaMA-Factory's label holds them: the reply as the chat template renders it
    after the prompt (with ChatML, the reply, <|im_end|> and the newline after it). The reference alone when
    the template does not render the prompt as a prefix of the conversation."""
    from temper.data.templates import render_prompt

    if row.reference is None:
        return []
    prompt = render_prompt(tokenizer, row.messages, add_generation_prompt=True)
    full = render_prompt(
        tokenizer,
        [*row.messages, {"role": "assistant", "content": row.reference}],
        add_generation_prompt=False,
    )
    text = full[len(prompt) :] if full.startswith(prompt) else row.reference
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])

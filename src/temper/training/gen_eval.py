"""Generation metrics on the validation split while training (LLaMA-Factory's predict_with_generate).

`temper sft ... --val-size 0.1 --eval-dataset general_qa --eval-steps 50`: at every evaluation the model answers
the held-out prompts greedily and BLEU-1..4 / ROUGE-1/2/L are computed with the same functions as
`temper eval --eval-dataset general_qa`; the numbers go to metrics.jsonl next to eval_loss (and the plot).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from temper.data.records import ChatExample, Record
from temper.data.templates import render_prompt, to_chat_dicts


def qa_pairs(records: list[Record], system: str | None, tokenizer: Any) -> tuple[list[str], list[str]]:
    """(rendered prompt, reference answer) for every conversation that ends with an assistant turn."""
    prompts, refs = [], []
    for rec in records:
        if not isinstance(rec, ChatExample) or not rec.messages or rec.messages[-1].role != "assistant":
            continue
        turns = to_chat_dicts(rec, system)
        prompts.append(render_prompt(tokenizer, turns[:-1], add_generation_prompt=True))
        refs.append(turns[-1]["content"])
    return prompts, refs


class GenerationEval(TrainerCallback):
    """Greedy answers on (up to `limit`) validation prompts at each evaluation, scored with qa_metrics."""

    def __init__(
        self,
        records: list[Record],
        system: str | None,
        run_dir: Path,
        limit: int = 64,
        max_new_tokens: int = 128,
    ) -> None:
        self.records = records[:limit]
        self.system = system
        self.path = run_dir / "metrics.jsonl"
        self.max_new_tokens = max_new_tokens

    def on_evaluate(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        from temper.evaluation.generation import generate_answers
        from temper.evaluation.metrics import qa_metrics

        model, tokenizer = kw.get("model"), kw.get("processing_class")
        if model is None or tokenizer is None:
            return
        prompts, refs = qa_pairs(self.records, self.system, tokenizer)
        if not prompts:
            return
        was_training = model.training
        model.eval()
        # The training precision: under bf16 the LoRA inputs are not cast to the fp32 adapters (engine.train).
        with torch.autocast(args.device.type, dtype=torch.bfloat16, enabled=args.bf16):
            answers = generate_answers(
                model, tokenizer, prompts, self.max_new_tokens, args.per_device_eval_batch_size
            )
        if was_training:
            model.train()
        scores = {f"eval_{k}": round(float(v), 4) for k, v in qa_metrics(answers, refs).items()}
        if state.is_world_process_zero:
            row = {"step": state.global_step, "epoch": state.epoch, "time": time.time(), **scores}
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
            shown = {k: v for k, v in scores.items() if k in ("eval_bleu-4", "eval_Rouge-L-F")}
            print(f"generation eval @ step {state.global_step} on {len(prompts)} prompts: {shown}")

"""The baseline of bench/sft.py: LoRA SFT with nothing but a plain transformers Trainer and peft.

This is what a user writes by hand following the transformers + peft docs, with the peers' defaults: gradient
checkpointing on, pad to the longest sample of each batch, loss on the assistant reply only, bf16 through the
Trainer's autocast with the base loaded in bf16 and the LoRA weights kept in fp32 (as LLaMA-Factory does).
bench/sft.py launches it as a subprocess, exactly like the peers, and reads trainer_state.json afterwards.

Example:
    OMP_NUM_THREADS=1 .venv/bin/python bench/sft_plain.py --model DIR --data rows.json --steps 10 \
        --dtype bf16 --output-dir /tmp/plain-bf16
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="HF model directory")
    p.add_argument("--data", required=True, help="alpaca-format JSON list (instruction/input/output)")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--steps", type=int, default=10, help="optimizer steps")
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--grad-accum", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--lora-rank", type=int, default=8)
    p.add_argument("--lora-alpha", type=int, default=16)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--shuffle", action="store_true", help="random sample order (default: file order)")
    return p.parse_args(argv)


def encode(tok: Any, row: dict[str, str], max_length: int) -> dict[str, list[int]]:
    """Chat-template one alpaca row; labels are the assistant reply (with its end-of-turn), the prompt is -100."""
    query = row["instruction"] + ("\n" + row["input"] if row.get("input") else "")
    user = [{"role": "user", "content": query}]
    prompt = tok.apply_chat_template(user, add_generation_prompt=True, tokenize=True, return_dict=True)
    full = tok.apply_chat_template(
        [*user, {"role": "assistant", "content": row["output"]}], tokenize=True, return_dict=True
    )
    ids = list(full["input_ids"])[:max_length]
    n_prompt = min(len(prompt["input_ids"]), len(ids))
    labels = [-100] * n_prompt + ids[n_prompt:]
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}


def main(argv: list[str] | None = None) -> int:
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForSeq2Seq,
        Trainer,
        TrainingArguments,
    )

    args = parse_args(argv)
    torch.manual_seed(args.seed)
    tok = AutoTokenizer.from_pretrained(args.model, local_files_only=True)
    rows = json.loads(Path(args.data).read_text(encoding="utf-8"))
    train = [encode(tok, r, args.max_length) for r in rows]  # a list is a map-style dataset to the Trainer

    bf16 = args.dtype == "bf16"
    model = AutoModelForCausalLM.from_pretrained(
        args.model, dtype=torch.bfloat16 if bf16 else torch.float32, local_files_only=True
    )
    lora = LoraConfig(
        r=args.lora_rank, lora_alpha=args.lora_alpha, lora_dropout=0.0, target_modules="all-linear"
    )
    model = get_peft_model(model, lora)
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.float()  # fp32 master copy of the adapter, the usual mixed-precision recipe
    model.print_trainable_parameters()

    targs = TrainingArguments(
        output_dir=args.output_dir,
        max_steps=args.steps,
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=args.grad_accum,
        learning_rate=args.lr,
        lr_scheduler_type="cosine",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        seed=args.seed,
        bf16=bf16,
        use_cpu=True,
        gradient_checkpointing=True,
        gradient_checkpointing_kwargs={"use_reentrant": False},
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        dataloader_num_workers=0,
        include_num_input_tokens_seen="non_padding",
        train_sampling_strategy="random" if args.shuffle else "sequential",
        disable_tqdm=True,  # PrinterCallback prints each step's log dict on its own line
    )
    collator = DataCollatorForSeq2Seq(tok, padding="longest", label_pad_token_id=-100)
    trainer = Trainer(model=model, args=targs, train_dataset=train, data_collator=collator)
    trainer.train()
    trainer.save_state()  # trainer_state.json: per-step loss, tokens seen and runtime, read by bench/sft.py
    model.save_pretrained(args.output_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

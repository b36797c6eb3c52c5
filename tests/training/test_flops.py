"""The Trainer's FLOP count (trainer_state.json's total_flos) is unchanged by counting the parameters once."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

from temper.config import TuneCfg
from temper.training.callbacks import TokenMeter
from temper.training.engine import TemperTrainer
from temper.tuning import apply_tuning


def test_floating_point_ops_equal_the_trainers(tiny_llama_dir: Path, tmp_path: Path) -> None:
    model = apply_tuning(AutoModelForCausalLM.from_pretrained(tiny_llama_dir), TuneCfg(tuning="lora"))
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    trainer = TemperTrainer(model=model, args=args, loss_fn=None, meter=TokenMeter())
    n_params = model.num_parameters(exclude_embeddings=True)
    assert n_params > 0
    for shape in [(2, 7), (1, 30), (2, 7)]:
        inputs = {"input_ids": torch.zeros(shape, dtype=torch.long)}
        ours = trainer.floating_point_ops(inputs)
        assert ours == Trainer.floating_point_ops(trainer, inputs) == 6 * shape[0] * shape[1] * n_params
    assert trainer.floating_point_ops({"pixel_values": torch.zeros(1, 3)}) == 0  # no main input: no count

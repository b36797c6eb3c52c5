"""Held-out loss of each SFT bench contender's saved LoRA adapter (used by bench/sft.py).

Every tool trains the same rows, but in its own order (temper groups batches by length), so per-step losses
compare rows with rows and their mean depends on how rows were grouped. The fair loss comparison is the
trained adapters on rows none of them saw: the `--heldout` alpaca rows right after the training rows, encoded
once with temper's encoding (SmolLM2's chat template and default system prompt, loss on the reply tokens
only), scored by the same code for every adapter, fp32, token-weighted.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch


def find_adapter(out: Path) -> Path | None:
    """The adapter dir a run saved: its top level, else its newest checkpoint that has one."""
    if (out / "adapter_model.safetensors").exists():
        return out
    found = sorted(out.glob("**/adapter_model.safetensors"), key=lambda p: p.stat().st_mtime)
    return found[-1].parent if found else None


@torch.no_grad()
def held_out_losses(
    model_dir: Path,
    rows: list[dict[str, Any]],
    adapters: dict[str, Path],
    system: str,
    max_length: int,
    work: Path,
) -> dict[str, float]:
    """{"base": loss, name: loss for each adapter dir}; one shared base model, adapters loaded in turn."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from temper.data.collate import PadCollator
    from temper.data.load import load_records
    from temper.data.tokenize import encode_dataset
    from temper.objectives.sft import sft_loss
    from temper.tuning import quiet_peft

    tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    path = work / "heldout.json"
    path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    encoded, _ = encode_dataset(load_records([str(path)]), tok, max_length, system=system)
    collate = PadCollator(tok.pad_token_id)
    batches = [collate(encoded[i : i + 4]) for i in range(0, len(encoded), 4)]

    def loss_of(model: Any) -> float:
        total, count = 0.0, 0
        for batch in batches:
            n = int(batch["labels"][:, 1:].ne(-100).sum())
            loss, _ = sft_loss(model, batch)
            total, count = total + float(loss) * n, count + n
        return total / count

    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, local_files_only=True).eval()
    out = {"base": loss_of(base)}
    for name, adapter in adapters.items():
        with quiet_peft():  # peft's own deprecated-attribute read, as in temper's loaders
            model = PeftModel.from_pretrained(base, str(adapter)).eval()
        out[name] = loss_of(model)
        base = model.unload()  # back to the plain base for the next adapter
    return out

"""Merging LoRA / DoRA into the base: the merged dir computes the adapter model's logits and loads alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from temper.errors import TemperError
from temper.export.manifest import EXPORT_MANIFEST, sha256_file, verify_export
from temper.export.merge import merge_run, probe_ids
from temper.models.load import load_causal_lm, resolve


@pytest.mark.parametrize("run_fixture", ["lora_run", "dora_run"])
def test_merge_matches_adapter_model(
    run_fixture: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    run_dir: Path = request.getfixturevalue(run_fixture)
    out = tmp_path / "merged"
    manifest = merge_run(run_dir, out)

    assert manifest["max_abs_logit_diff"] < 1e-4
    ref = resolve(out)
    assert ref.kind == "hf_dir" and not ref.adapters  # standalone: no adapter, no run manifest needed
    merged, tok = load_causal_lm(ref, dtype="fp32")
    adapter_model, _ = load_causal_lm(str(run_dir), dtype="fp32")
    base, _ = load_causal_lm(
        str(json.loads((run_dir / "temper_run.json").read_text())["base_model"]), dtype="fp32"
    )
    ids = probe_ids(tok)
    with torch.no_grad():
        m, a, b = (x(input_ids=ids).logits for x in (merged, adapter_model, base))
    assert (m - a).abs().max() < 1e-4
    assert (m - b).abs().max() > 1e-2  # the adapter mattered, so the check above means something
    assert tok.chat_template and "<|im_start|>" in tok.chat_template

    saved = json.loads((out / EXPORT_MANIFEST).read_text())
    assert saved["method"] == "merge" and saved["source"] == str(run_dir)
    assert saved["files"]["model.safetensors"] == sha256_file(out / "model.safetensors")
    assert verify_export(out) == []
    assert not list(out.glob("*.bin")) and not list(out.glob("adapter_*"))
    modes = {p.name: p.stat().st_mode & 0o777 for p in out.iterdir() if p.is_file()}
    assert len(set(modes.values())) == 1 and modes["model.safetensors"] != 0o600, modes  # not owner-only


def test_merge_without_adapter_is_a_clear_error(
    tiny_bpe_llama_dir: Path, lora_run: Path, tmp_path: Path
) -> None:
    with pytest.raises(TemperError, match="--merge needs a run dir with a LoRA/DoRA adapter"):
        merge_run(tiny_bpe_llama_dir, tmp_path / "a")
    broken = tmp_path / "broken-run"
    broken.mkdir()
    (broken / "temper_run.json").write_text((lora_run / "temper_run.json").read_text())
    with pytest.raises(TemperError, match="adapter_model.safetensors"):
        merge_run(broken, tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_output_dir_is_not_clobbered(lora_run: Path, tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(TemperError, match="not empty"):
        merge_run(lora_run, mine)
    with pytest.raises(TemperError, match="refuses to delete"):
        merge_run(lora_run, mine, overwrite=True)
    assert (mine / "notes.txt").read_text() == "keep me"

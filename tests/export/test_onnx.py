"""ONNX export: decoder logits and encoder states match PyTorch in onnxruntime on new shapes, and a greedy
loop over the ONNX decoder gives PyTorch's tokens."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("onnxruntime")

from temper.export.manifest import verify_export  # noqa: E402
from temper.export.merge import load_source  # noqa: E402
from temper.export.onnx import ONNX_FILE, export_onnx, onnx_greedy, onnx_session  # noqa: E402
from temper.export.parity import greedy_tokens  # noqa: E402


def test_decoder_onnx_matches_pytorch(lora_run: Path, tmp_path: Path, prompts: list[str]) -> None:
    out = tmp_path / "onnx"
    manifest = export_onnx(lora_run, out)
    assert manifest["kind"] == "decoder" and manifest["max_abs_diff"] < 1e-4
    assert manifest["greedy_identical"] is True and verify_export(out) == []

    session = onnx_session(out / ONNX_FILE)
    src = load_source(lora_run)
    ids = src.tokenizer(
        ["a longer prompt than any traced one, to check the axes"] * 4, return_tensors="pt"
    ).input_ids
    feed = {"input_ids": ids.numpy(), "attention_mask": torch.ones_like(ids).numpy()}
    got = session.run(["logits"], feed)[0]
    with torch.no_grad():
        want = src.model(input_ids=ids).logits.numpy()
    assert got.shape == want.shape and abs(got - want).max() < 1e-4
    assert onnx_greedy(session, src.tokenizer, prompts, 10) == greedy_tokens(
        src.model, src.tokenizer, prompts, 10
    )


def test_encoder_onnx_matches_pytorch(tiny_bert_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoModel, AutoTokenizer

    out = tmp_path / "enc"
    manifest = export_onnx(tiny_bert_dir, out)
    assert manifest["kind"] == "encoder" and manifest["max_abs_diff"] < 1e-4
    session = onnx_session(out / ONNX_FILE)
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask", "token_type_ids"]
    tok = AutoTokenizer.from_pretrained(out)
    batch = tok(["one sentence", "and a second, longer sentence here"], return_tensors="pt", padding=True)
    got = session.run(None, {k: v.numpy() for k, v in batch.items()})[0]
    with torch.no_grad():
        want = AutoModel.from_pretrained(tiny_bert_dir).eval()(**batch).last_hidden_state.numpy()
    mask = batch["attention_mask"].bool().numpy()
    assert abs(got - want)[mask].max() < 1e-4


def test_sequence_classifier_onnx_keeps_its_head(tiny_bert_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    cls_dir = tmp_path / "cls"
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=3).save_pretrained(cls_dir)
    AutoTokenizer.from_pretrained(tiny_bert_dir).save_pretrained(cls_dir)
    manifest = export_onnx(cls_dir, tmp_path / "out")
    assert manifest["output"] == "logits" and manifest["max_abs_diff"] < 1e-4
    session = onnx_session(tmp_path / "out" / ONNX_FILE)
    assert session.get_outputs()[0].name == "logits" and session.get_outputs()[0].shape[-1] == 3

"""Embedding training on a tiny random encoder: InfoNCE pulls same-topic pairs together, and the run dir
embeds through the Python API and carries the sentence-transformers pooling files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from temper.config.encoder import ClassifyConfig, EmbedConfig
from temper.errors import ConfigError
from temper.models.heads import embed_texts, pool, read_pooling
from temper.recipes.classify import train_classifier
from temper.recipes.embed import train_embedder


def test_infonce_raises_pair_similarity_over_non_pairs(
    tiny_bert_dir: Path, pairs_jsonl: Path, tmp_path: Path
) -> None:
    cfg = EmbedConfig.from_sources(
        None,
        [
            "--model",
            str(tiny_bert_dir),
            "--dataset",
            str(pairs_jsonl),
            "--epochs",
            "4",
            "--lr",
            "5e-3",
            "--temperature",
            "0.1",
            "--batch-size",
            "16",
            "--val-size",
            "24",
            "--output-dir",
            str(tmp_path / "emb"),
            "--bf16",
            "false",
            "--logging-steps",
            "5",
        ],
    )
    result = train_embedder(cfg)
    assert result.loss == "infonce"
    assert result.after["pair_margin"] > result.before["pair_margin"] + 0.1
    assert result.after["retrieval_accuracy"] >= result.before["retrieval_accuracy"]
    run = tmp_path / "emb"
    assert read_pooling(run) == "mean"
    assert json.loads((run / "1_Pooling" / "config.json").read_text())["pooling_mode_mean_tokens"] is True
    vecs = embed_texts(str(run), ["about kitten 1", "text of feline", "text of automobile"])
    assert vecs.shape == (3, 32) and torch.allclose(vecs.norm(dim=-1), torch.ones(3), atol=1e-5)


def test_cosine_loss_needs_labels(tiny_bert_dir: Path, pairs_jsonl: Path, tmp_path: Path) -> None:
    cfg = EmbedConfig.from_sources(
        None,
        [
            "--model",
            str(tiny_bert_dir),
            "--dataset",
            str(pairs_jsonl),
            "--loss",
            "cosine",
            "--output-dir",
            str(tmp_path / "x"),
        ],
    )
    with pytest.raises(ConfigError, match="needs a label"):
        train_embedder(cfg)


def test_pooling_modes() -> None:
    hidden = torch.arange(12.0).reshape(1, 4, 3)
    mask = torch.tensor([[1, 1, 1, 0]])
    assert pool(hidden, mask, "mean").tolist() == [[3.0, 4.0, 5.0]]
    assert pool(hidden, mask, "cls").tolist() == [[0.0, 1.0, 2.0]]
    assert pool(hidden, mask, "last").tolist() == [[6.0, 7.0, 8.0]]
    left = torch.tensor([[0, 1, 1, 1]])  # left padding: the last real token is still the last position
    assert pool(hidden, left, "last").tolist() == [[9.0, 10.0, 11.0]]


def test_resuming_with_other_options_says_so(
    tiny_bert_dir: Path, pairs_jsonl: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def cfg(*extra: str) -> EmbedConfig:
        args = ["--model", str(tiny_bert_dir), "--dataset", str(pairs_jsonl), "--output-dir", str(tmp_path / "e"),
                "--bf16", "false", "--batch-size", "8", "--save-steps", "2", *extra]  # fmt: skip
        return EmbedConfig.from_sources(None, args)

    train_embedder(cfg("--max-steps", "2"))
    capsys.readouterr()
    train_embedder(cfg("--max-steps", "3", "--lr", "1e-3", "--resume", "auto"))
    err = capsys.readouterr().err
    assert "resuming with options that differ" in err and "max_steps 2 -> 3" in err and "learning_rate" in err


def test_a_model_named_by_a_relative_path_is_found_from_anywhere(
    tiny_bert_dir: Path, pairs_jsonl: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tiny_bert_dir.parent)
    args = ["--model", tiny_bert_dir.name, "--dataset", str(pairs_jsonl), "--output-dir", str(tmp_path / "e"),
            "--bf16", "false", "--batch-size", "8", "--max-steps", "1"]  # fmt: skip
    train_embedder(EmbedConfig.from_sources(None, args))
    assert json.loads((tmp_path / "e" / "temper_run.json").read_text())["base_model"] == str(tiny_bert_dir)
    monkeypatch.chdir(tmp_path)  # the run dir is read from another directory (the recorded path is absolute)
    assert embed_texts(str(tmp_path / "e"), ["about kitten 1"]).shape == (1, 32)


def test_training_on_a_lora_embed_run_keeps_what_it_learned(
    tiny_bert_dir: Path, pairs_jsonl: Path, tmp_path: Path, make_sentiment_file: Any
) -> None:
    def run(model: Path, out: Path, *extra: str) -> Path:
        args = ["--model", str(model), "--dataset", str(pairs_jsonl), "--output-dir", str(out), "--bf16", "false",
                "--batch-size", "16", "--tuning", "lora", "--lora-rank", "4", *extra]  # fmt: skip
        train_embedder(EmbedConfig.from_sources(None, args))
        return out

    texts = ["about kitten 1", "text of feline", "text of automobile"]
    first = run(tiny_bert_dir, tmp_path / "a", "--max-steps", "8", "--lr", "5e-2")
    second = run(first, tmp_path / "b", "--max-steps", "1", "--lr", "1e-9")
    base, after_a, after_b = (embed_texts(str(m), texts) for m in (tiny_bert_dir, first, second))
    assert not torch.allclose(base, after_a, atol=1e-3)  # run A changed the embeddings
    assert torch.allclose(after_a, after_b, atol=1e-4)  # run B started from them (a new adapter lost them)
    assert json.loads((second / "temper_run.json").read_text())["base_model"] == str(tiny_bert_dir)
    # classify puts a new head on a model without an adapter: a LoRA run is refused with the merge command.
    rows = make_sentiment_file("s.jsonl", 16)
    cfg = ClassifyConfig.from_sources(
        None, ["--model", str(first), "--train", str(rows), "--output-dir", str(tmp_path / "c")]
    )
    with pytest.raises(ConfigError, match="has a LoRA adapter") as err:
        train_classifier(cfg)
    assert "temper export" in str(err.value.hint)

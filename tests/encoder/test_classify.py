"""Classification recipes on tiny random models: they learn a separable task, keep the best checkpoint, and
cover LoRA on a decoder, multi-task heads, hyperparameter search and progressive unfreezing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from temper.config.encoder import ClassifyConfig
from temper.models.heads import MultiTaskClassifier, load_sequence_classifier
from temper.models.load import resolve
from temper.recipes.classify import train_classifier
from temper.runs import read_manifest, read_metrics

FAST = ["--bf16", "false", "--logging-steps", "5", "--per-device-eval-batch-size", "64"]


@pytest.mark.slow
def test_encoder_learns_separable_task_and_keeps_best(
    tiny_bert_dir: Path, sentiment_jsonl: Path, tmp_path: Path, make_sentiment_file: Any
) -> None:
    cfg = ClassifyConfig.from_sources(
        None,
        [
            "--model",
            str(tiny_bert_dir),
            "--train",
            str(sentiment_jsonl),
            "--val-size",
            "0.25",
            "--epochs",
            "5",
            "--lr",
            "5e-3",
            "--batch-size",
            "16",
            "--output-dir",
            str(tmp_path / "run"),
            *FAST,
            "--augment",
            "swap",
            "--warmup-ratio",
            "0.1",
            "--weight-decay",
            "0.01",
        ],
    )
    result = train_classifier(cfg)
    evals = [r["eval_accuracy"] for r in read_metrics(tmp_path / "run") if "eval_accuracy" in r]
    assert len(evals) >= 5 and evals[0] < 0.9  # evaluated every epoch, learned along the way
    assert result.metrics["eval_accuracy"] >= 0.9 and result.metrics["eval_accuracy"] == max(evals)
    manifest = read_manifest(tmp_path / "run")
    assert (
        manifest["kind"] == "classify" and manifest["weights"] == "full" and manifest["labels"] == ["0", "1"]
    )
    # The saved run dir reloads as a classifier that reproduces the reported accuracy on fresh rows.
    model, tok = load_sequence_classifier(str(tmp_path / "run"), ["0", "1"])
    rows = [json.loads(line) for line in make_sentiment_file("fresh.jsonl", 40, 7).read_text().splitlines()]
    batch = tok([r["text"] for r in rows], padding=True, return_tensors="pt")
    with torch.no_grad():
        preds = model.eval()(**batch).logits.argmax(-1).tolist()
    assert sum(p == r["label"] for p, r in zip(preds, rows, strict=True)) >= 34


def test_decoder_lora_classifier_trains_head(
    tiny_llama_dir: Path, sentiment_jsonl: Path, tmp_path: Path
) -> None:
    cfg = ClassifyConfig.from_sources(
        None,
        [
            "--model",
            str(tiny_llama_dir),
            "--train",
            str(sentiment_jsonl),
            "--tuning",
            "lora",
            "--epochs",
            "1",
            "--lr",
            "1e-3",
            "--batch-size",
            "16",
            "--output-dir",
            str(tmp_path / "lora"),
            *FAST,
        ],
    )
    result = train_classifier(cfg)
    run = tmp_path / "lora"
    assert read_manifest(run)["weights"] == "adapter" and (run / "adapter_model.safetensors").exists()
    from safetensors import safe_open

    with safe_open(str(run / "adapter_model.safetensors"), "pt") as f:
        assert any("score" in k for k in f.keys())  # noqa: SIM118  # the new head is saved with the adapter (modules_to_save)
    assert "eval_accuracy" in result.metrics and result.train is not None and result.train.global_step == 9
    model, tok = load_sequence_classifier(str(run), ["0", "1"])  # base + adapter (with the trained head)
    with torch.no_grad():
        logits = model.eval()(**tok(["really great film"], return_tensors="pt")).logits
    head = dict(model.named_parameters())
    assert logits.shape == (1, 2) and any("modules_to_save" in n and "score" in n for n in head)


@pytest.mark.slow
def test_hpo_search_runs_trials(tiny_bert_dir: Path, tmp_path: Path, make_sentiment_file: Any) -> None:
    a = make_sentiment_file("a.jsonl", 48)
    cfg = ClassifyConfig.from_sources(
        None,
        [
            "--model",
            str(tiny_bert_dir),
            "--train",
            str(a),
            "--hpo-trials",
            "2",
            "--epochs",
            "1",
            "--output-dir",
            str(tmp_path / "hpo"),
            *FAST,
        ],
    )
    result = train_classifier(cfg)
    saved = json.loads((tmp_path / "hpo" / "hpo_trials.json").read_text())
    assert len(result.hpo_trials) == 2 and set(saved["best"]) == {
        "learning_rate",
        "per_device_train_batch_size",
        "num_train_epochs",
        "weight_decay",
    }
    assert not list((tmp_path / "hpo" / "hpo").glob("trial-*/checkpoint-*"))  # trials keep no weights


def test_multitask_two_heads(tiny_bert_dir: Path, tmp_path: Path, shared_data: Path) -> None:
    cfg = ClassifyConfig.from_sources(
        None,
        [
            "--model",
            str(tiny_bert_dir),
            "--task",
            "glue-mrpc,glue-sst2",
            "--max-train-samples",
            "48",
            "--max-eval-samples",
            "32",
            "--max-length",
            "48",
            "--epochs",
            "1",
            "--output-dir",
            str(tmp_path / "mt"),
            *FAST,
        ],
    )
    result = train_classifier(cfg)
    for key in ("eval_glue-mrpc_accuracy", "eval_glue-mrpc_f1", "eval_glue-sst2_accuracy", "eval_score"):
        assert key in result.metrics
    model, tok = MultiTaskClassifier.load(tmp_path / "mt")
    assert [t["name"] for t in model.tasks] == ["glue-mrpc", "glue-sst2"]
    out = model(**tok(["a test"], return_tensors="pt"))
    assert out["logits"].shape == (1, 4)


def test_progressive_unfreezing_thaws_top_down(tiny_bert_dir: Path) -> None:
    from temper.recipes.encoder_tools import ProgressiveUnfreezing

    model, _ = load_sequence_classifier(str(tiny_bert_dir), ["a", "b"])
    cb = ProgressiveUnfreezing(model, ["classifier"])

    def trainable() -> set[str]:
        return {
            n.split(".")[0] + ("." + n.split(".")[3] if ".layer." in n else "")
            for n, p in model.named_parameters()
            if p.requires_grad
        }

    cb._set(0)
    assert trainable() == {"classifier"}
    cb._set(1)
    assert trainable() == {"classifier", "bert.1"}  # the top layer of two
    cb._set(3)
    assert all(p.requires_grad for p in model.parameters())  # past the layers: everything, embeddings too


def test_encoder_examples_train_in_random_or_file_order() -> None:
    """Encoder rows carry no single length to group by: random (default) and sequential are the choices."""
    from temper.config.encoder import EmbedConfig
    from temper.errors import ConfigError
    from temper.training.engine import build_training_args

    for config in (ClassifyConfig, EmbedConfig):
        cfg = config.from_sources(None, [])
        assert cfg.train.train_sampling_strategy == "random"
        seq = config.from_sources(None, ["--train-sampling-strategy", "sequential"])
        args = build_training_args(seq.train, Path(seq.train.output_dir), False, None, None)
        assert args.train_sampling_strategy == "sequential"
        with pytest.raises(ConfigError, match="expected one of \\['random', 'sequential'\\]"):
            config.from_sources(None, ["--train-sampling-strategy", "group_by_length"])


def test_a_lora_classifier_on_a_full_run_applies_to_that_run(
    tiny_bert_dir: Path, sentiment_jsonl: Path, tmp_path: Path
) -> None:
    def run(model: Path, out: Path, *extra: str) -> Path:
        args = ["--model", str(model), "--train", str(sentiment_jsonl), "--output-dir", str(out),
                "--max-steps", "2", *FAST, *extra]  # fmt: skip
        train_classifier(ClassifyConfig.from_sources(None, args))
        return out

    full = run(tiny_bert_dir, tmp_path / "full")
    lora = run(full, tmp_path / "lora", "--tuning", "lora")
    # The adapter was trained over the full run's weights, so that run is its base (not the model before it).
    assert read_manifest(lora)["base_model"] == str(full.resolve())
    assert resolve(str(lora)).path == full.resolve()

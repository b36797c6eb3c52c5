"""`temper infer PREDICT.yaml`: LLaMA-Factory's batch-prediction YAML (do_predict, eval_dataset, output_dir)
writes its generated_predictions.jsonl and predict_results.json, resumably; `temper sft` on it says where to go."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from temper.cli import main
from temper.evaluation.metrics import llamafactory_similarity
from temper.inference.engine import Engine
from temper.inference.predict import infer_seqlen
from temper.inference.sampling import SamplingParams

ROWS = [
    {"instruction": "Name a colour.", "input": "", "output": "Blue is a colour."},
    {"instruction": "Say hi.", "input": "", "output": "Hi there."},
    {"instruction": "Count to three.", "input": "", "output": "One, two, three."},
    {"instruction": "Translate 'cat'.", "input": "to French", "output": "Chat."},
    {"instruction": "Never answered.", "input": "", "output": "max_samples cuts this row."},
]


def _predict_yaml(tmp_path: Path, model: Path, **extra: Any) -> Path:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    (data / "rows.json").write_text(json.dumps(ROWS))
    (data / "dataset_info.json").write_text(json.dumps({"rows": {"file_name": "rows.json"}}))
    config = {
        "model_name_or_path": str(model),
        "stage": "sft",
        "do_predict": True,
        "predict_with_generate": True,
        "finetuning_type": "lora",
        "eval_dataset": "rows",
        "dataset_dir": str(data),
        "max_samples": 4,
        "cutoff_len": 512,
        "output_dir": str(tmp_path / "predict"),
        "per_device_eval_batch_size": 2,
        "do_sample": False,
        "max_new_tokens": 6,
        **extra,
    }
    path = tmp_path / "predict.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_predict_yaml_writes_llamafactory_predictions_and_scores(
    tiny_llama_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _predict_yaml(tmp_path, tiny_llama_dir)
    assert main(["infer", str(config), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "ignored: predict_with_generate" in err and "cut as LLaMA-Factory" not in err  # cutoff_len 512
    assert (
        "temperature" not in err
    )  # greedy (do_sample false): LLaMA-Factory's sampling defaults do not apply
    out = tmp_path / "predict" / "generated_predictions.jsonl"
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [sorted(x) for x in lines] == [["label", "predict", "prompt"]] * 4  # max_samples: the first 4 rows
    with Engine.load(tiny_llama_dir, dtype="fp32") as engine:
        for row, line in zip(ROWS, lines, strict=False):
            user = row["instruction"] + ("\n" + row["input"] if row["input"] else "")
            messages = [{"role": "user", "content": user}]
            ids = engine.chat_prompt(messages)
            assert line["prompt"] == engine.tokenizer.decode(ids, skip_special_tokens=False)
            assert line["predict"] == engine.chat(messages, SamplingParams(max_tokens=6)).text
            # LLaMA-Factory's label: the reply as the template renders it, special tokens dropped (ChatML's
            # newline after <|im_end|> included).
            assert line["label"] == row["output"] + "\n"
    results = json.loads((tmp_path / "predict" / "predict_results.json").read_text())
    scores = llamafactory_similarity([x["predict"] for x in lines], [x["label"] for x in lines])
    assert {k: results[f"predict_{k}"] for k in scores} == scores
    assert results["predict_runtime"] > 0 and results["predict_samples_per_second"] > 0
    # 4 rows in batches of the YAML's per_device_eval_batch_size: the Trainer's step count over the same runtime
    batch = int(yaml.safe_load(config.read_text()).get("per_device_eval_batch_size", 8))
    steps = -(-4 // batch)
    assert results["predict_steps_per_second"] == pytest.approx(
        steps / results["predict_runtime"], rel=0.01, abs=1e-3
    )
    # all_results.json holds them too, merged into what another split put there (the Trainer's save_metrics)
    all_results = tmp_path / "predict" / "all_results.json"
    assert json.loads(all_results.read_text()) == results
    all_results.write_text(json.dumps({"train_loss": 1.5, "predict_runtime": -1}))

    # Interrupted mid-write: the torn line is redone, the rows before it are kept, the file ends the same.
    whole = out.read_text()
    out.write_text("".join(whole.splitlines(keepends=True)[:2]) + '{"prompt": "torn')
    assert main(["infer", str(config), "--no-progress"]) == 0
    assert out.read_text() == whole
    assert "4 rows (2 already done)" in capsys.readouterr().err
    merged = json.loads(all_results.read_text())
    assert merged["train_loss"] == 1.5 and merged["predict_runtime"] > 0


def test_cutoff_len_cuts_prompt_and_reference_as_llamafactory_does(
    tiny_llama_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # LLaMA-Factory's infer_seqlen (values from its own function): a short reference is kept whole, a short
    # prompt is kept whole, two long ones share the budget in proportion
    assert [infer_seqlen(10, 3, 8), infer_seqlen(3, 10, 8), infer_seqlen(10, 10, 8)] == [
        (5, 3),
        (3, 5),
        (4, 4),
    ]
    assert infer_seqlen(100, 7, 64) == (57, 7) and infer_seqlen(30, 200, 64) == (30, 34)
    config = _predict_yaml(tmp_path, tiny_llama_dir, cutoff_len=12, max_new_tokens=3)
    assert main(["infer", str(config), "--no-progress"]) == 0
    assert "4 row(s) longer than cutoff_len 12 tokens" in capsys.readouterr().err
    lines = [
        json.loads(x) for x in (tmp_path / "predict" / "generated_predictions.jsonl").read_text().splitlines()
    ]
    with Engine.load(tiny_llama_dir, dtype="fp32") as engine:
        tok = engine.tokenizer
        for row, line in zip(ROWS, lines, strict=False):
            user = row["instruction"] + ("\n" + row["input"] if row["input"] else "")
            whole = engine.chat_prompt([{"role": "user", "content": user}])
            # the prompt lost its end: it is the decoded start of the whole prompt's tokens
            n = next(n for n in range(len(whole) + 1) if tok.decode(whole[:n]) == line["prompt"])
            kept, label = whole[:n], tok(line["label"], add_special_tokens=False)["input_ids"]
            assert 0 < n < len(whole)
            assert len(kept) + len(label) <= 12 and (row["output"] + "\n").startswith(line["label"])
            # the answer continues the cut prompt
            assert line["predict"] == engine.generate(kept, SamplingParams(max_tokens=3)).text


def test_predict_flags_override_the_yaml_and_sampling_defaults_are_named(
    tiny_llama_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _predict_yaml(tmp_path, tiny_llama_dir, do_sample=True, max_new_tokens=50, seed=3)
    output = tmp_path / "mine.jsonl"
    # ms-swift's spellings (--max_new_tokens, --result_path) are aliases of --max-tokens and --output.
    argv = ["infer", str(config), "--max_new_tokens", "2", "--temperature", "0", "--result_path", str(output)]
    assert main([*argv, "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "LLaMA-Factory's defaults for what the YAML leaves unset: top_p 0.7, top_k 50" in err
    lines = [json.loads(x) for x in output.read_text().splitlines()]
    with Engine.load(tiny_llama_dir, dtype="fp32") as engine:
        greedy = engine.chat(
            [{"role": "user", "content": ROWS[0]["instruction"]}], SamplingParams(max_tokens=2)
        )
    assert lines[0]["predict"] == greedy.text  # --temperature 0 and --max-tokens 2 over the YAML's
    assert (tmp_path / "predict_results.json").is_file()  # beside --output


def test_predict_yaml_refusals(
    tiny_llama_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _predict_yaml(tmp_path, tiny_llama_dir)
    # LLaMA-Factory runs it with `llamafactory-cli train`: temper's training verb says which verb predicts.
    assert main(["sft", str(config)]) == 2
    assert f"Predict with temper infer {config}" in capsys.readouterr().err
    both = _predict_yaml(tmp_path, tiny_llama_dir, do_train=True)
    assert main(["infer", str(both)]) == 2
    assert "do_train and do_predict together" in capsys.readouterr().err
    no_rows = _predict_yaml(tmp_path, tiny_llama_dir, eval_dataset="")
    assert main(["infer", str(no_rows)]) == 2
    assert "do_predict needs eval_dataset" in capsys.readouterr().err
    unknown = _predict_yaml(tmp_path, tiny_llama_dir, num_beams=4)
    assert main(["infer", str(unknown)]) == 2
    assert "unknown key 'num_beams'" in capsys.readouterr().err
    assert main(["infer", str(tiny_llama_dir)]) == 2  # a model without --input/--output
    assert "temper infer needs --input" in capsys.readouterr().err
    assert not (tmp_path / "predict").exists()  # nothing was written by any of them


def test_llamafactory_similarity_bounds() -> None:
    same = llamafactory_similarity(["The cat sat on the mat."], ["The cat sat on the mat."])
    assert same == pytest.approx({"rouge-1": 100.0, "rouge-2": 100.0, "rouge-l": 100.0, "bleu-4": 100.0})
    empty = llamafactory_similarity([""], ["The cat sat."])
    assert empty == {"rouge-1": 0.0, "rouge-2": 0.0, "rouge-l": 0.0, "bleu-4": 0.0}
    zh = llamafactory_similarity(
        ["我爱北京天安门"], ["我爱北京"]
    )  # jieba words for ROUGE, characters for BLEU
    assert 0 < zh["bleu-4"] < 100 and 0 < zh["rouge-1"] < 100

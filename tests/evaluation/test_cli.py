"""`temper eval` end to end on the tiny llama: MCQ, QA, perplexity, compare, run-dir output, the report files."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from temper.cli import main
from temper.evaluation.perplexity import sequence_nll
from temper.runs import write_manifest

COMMON = ["--dtype", "fp32", "--no-progress", "--eval-batch-size", "4"]


def only_dir(base: Path, prefix: str) -> Path:
    dirs = [d for d in base.iterdir() if d.name.startswith(prefix)]
    assert len(dirs) == 1, dirs
    return dirs[0]


def test_general_mcq_cli(
    tiny_llama_dir: Path, mcq_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = json.dumps(
        {"general_mcq": {"local_path": str(mcq_dir), "subset_list": ["example"], "few_shot_num": 1}}
    )
    out = tmp_path / "evals"
    rc = main(["eval", str(tiny_llama_dir), "--eval-dataset", "general_mcq", "--dataset-args", args,
               "--output-dir", str(out), *COMMON])  # fmt: skip
    assert rc == 0
    printed = capsys.readouterr().out
    for col in ("Model", "Dataset", "Metric", "Subset", "Num", "Score", "Cat.0"):
        assert col in printed
    folder = only_dir(out, "eval-general_mcq-")
    assert f"samples: {folder}/samples*.jsonl" in printed  # a log gets whole lines, not 80-column pieces
    folder = only_dir(out, "eval-general_mcq-")
    report = json.loads((folder / "report.json").read_text())
    rows = report["rows"]
    assert [(r["metric"], r["subset"], r["num"]) for r in rows] == [
        ("AverageAccuracy", "example", 5),
        ("AverageAccuracy", "OVERALL", 5),
    ]
    samples = [json.loads(x) for x in (folder / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 5 and {"prompt", "prediction", "gold", "score", "logprobs"} <= set(samples[0])
    assert rows[0]["score"] == pytest.approx(sum(s["score"] for s in samples) / 5)
    assert "What is 2+2?" in samples[0]["prompt"] and samples[0]["gold"] == "B"
    assert (
        (folder / "table.md")
        .read_text()
        .startswith("| Model | Dataset | Metric | Subset | Num | Score | Cat.0 |")
    )


def test_ms_swift_eval_line(
    tiny_llama_dir: Path, mcq_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`swift eval --model M --eval_dataset D --eval_limit N --eval_backend Native --infer_backend pt ...`."""
    args = json.dumps({"general_mcq": {"local_path": str(mcq_dir), "subset_list": ["example"]}})
    out = tmp_path / "evals"
    argv = ["--model", str(tiny_llama_dir), "--eval_dataset", "general_mcq", "--eval_limit", "2",
            "--eval_backend", "Native", "--infer_backend", "pt", "--dataset_args", args]  # fmt: skip
    assert main(["eval", *argv, "--output-dir", str(out), *COMMON]) == 0
    err = capsys.readouterr().err
    assert "ignored: eval_backend" in err and "ignored: infer_backend" in err
    report = json.loads((only_dir(out, "eval-general_mcq-") / "report.json").read_text())
    assert [r["num"] for r in report["rows"]] == [2, 2]  # --eval_limit is --limit


def test_bad_data_is_a_row_level_error(
    tiny_llama_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "bad_val.csv").write_text("id,question,A,B,answer\n1,q,a,b,X\n", encoding="utf-8")
    rc = main(
        ["eval", str(tiny_llama_dir), "--eval-dataset", "general_mcq", "--data-dir", str(tmp_path), *COMMON]
    )
    assert rc == 2
    assert f"{tmp_path}/bad_val.csv:2:answer: got 'X', expected one of A, B" in capsys.readouterr().err


def test_general_qa_and_compare(tiny_llama_dir: Path, tmp_path: Path) -> None:
    qa = tmp_path / "qa"
    qa.mkdir()
    rows = [
        {"query": "Capital of France?", "response": "Paris"},
        {"query": "中国的首都是哪里？", "response": "北京"},
    ]
    (qa / "demo.jsonl").write_text(
        "\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8"
    )
    out = tmp_path / "evals"
    rc = main(["eval", str(tiny_llama_dir), "--compare", str(tiny_llama_dir), "--eval-dataset", "general_qa",
               "--data-dir", str(qa), "--max-new-tokens", "4", "--output-dir", str(out), *COMMON])  # fmt: skip
    assert rc == 0
    report = json.loads((only_dir(out, "eval-general_qa-") / "report.json").read_text())
    metrics = {r["metric"] for r in report["rows"]}
    assert {"bleu-1", "bleu-4", "Rouge-1-P", "Rouge-2-R", "Rouge-L-F"} <= metrics
    assert len(report["models"]) == 2 and report["compare"]
    assert all(r["delta"] == 0.0 for r in report["compare"])  # the same model twice, greedy
    assert len(list(only_dir(out, "eval-general_qa-").glob("samples-*.jsonl"))) == 2


def test_run_dir_output_goes_inside_the_run(tiny_llama_dir: Path, mcq_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_llama_dir, run)
    write_manifest(run, kind="sft", base_model=str(tiny_llama_dir), weights="full")
    rc = main(["eval", str(run), "--eval-dataset", "general_mcq", "--data-dir", str(mcq_dir),
               "--mcq-mode", "generate", "--max-new-tokens", "2", *COMMON])  # fmt: skip
    assert rc == 0
    samples = (only_dir(run, "eval-general_mcq-") / "samples.jsonl").read_text().splitlines()
    assert "generated" in json.loads(samples[0])


def test_perplexity_matches_hf_loss(tiny_lm: tuple[Any, Any], tiny_llama_dir: Path, tmp_path: Path) -> None:
    model, tok = tiny_lm
    ids = tok("The quick brown fox jumps over the lazy dog.")["input_ids"]
    with torch.no_grad():
        loss = model(input_ids=torch.tensor([ids]), labels=torch.tensor([ids])).loss
    nll, n = sequence_nll(model, ids, ids)
    assert n == len(ids) - 1 and nll / n == pytest.approx(float(loss), rel=1e-5)
    nll_w, n_w = sequence_nll(
        model, ids, ids, max_length=4
    )  # windows of 4: each window's first token unscored
    assert n_w == len(ids) - math.ceil(len(ids) / 4)

    text = tmp_path / "t.txt"
    text.write_text(
        "The quick brown fox jumps over the lazy dog.\nA second line of text.\n", encoding="utf-8"
    )
    chat = tmp_path / "c.jsonl"
    chat.write_text(
        json.dumps(
            {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello there"}]}
        )
    )
    out = tmp_path / "evals"
    rc = main(["eval", str(tiny_llama_dir), "--eval-dataset", "ppl", "--data", f"{text},{chat}",
               "--output-dir", str(out), *COMMON])  # fmt: skip
    assert rc == 0
    folder = only_dir(out, "eval-ppl-")
    report = json.loads((folder / "report.json").read_text())
    samples = [json.loads(x) for x in (folder / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 3
    assert (
        samples[2]["tokens"] == len(tok("hello there", add_special_tokens=False)["input_ids"]) + 1
    )  # + <|im_end|>
    total = sum(s["nll"] for s in samples) / sum(s["tokens"] for s in samples)
    assert report["rows"][-1]["score"] == pytest.approx(math.exp(total))

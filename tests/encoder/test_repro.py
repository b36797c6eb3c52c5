"""repro recipes in their --quick forms (run in CI), and the CLI verbs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from temper.cli import main


def test_repro_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["repro", "list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("bert-mrpc", "word-similarity", "efficiency"))


@pytest.mark.slow
def test_word_similarity_report(tmp_path: Path, shared_data: Path) -> None:
    assert main(["repro", "word-similarity", "--quick", "--output-dir", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    table = {r["split"]: r for r in report["tables"]["Spearman x 100 by split"]}
    assert table["combined"]["glove_covered"] == 202 and table["combined"]["pairs"] == 353
    assert 45 < table["combined"]["glove_50d"] < 65  # GloVe 50d on its covered pairs
    assert table["combined"]["minilm-l6_all_pairs"] > 65  # MODELS.md: about 73
    assert report["rows"][0]["paper"] == 65.8 and "Pennington" in report["rows"][0]["source"]
    assert "Spearman" in (tmp_path / "report.md").read_text()


@pytest.mark.slow
def test_efficiency_quick(tmp_path: Path) -> None:
    assert main(["repro", "efficiency", "--quick", "--output-dir", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "report.json").read_text())["tables"]["Throughput"]
    assert {r["model"] for r in rows} == {"minilm-l6", "distilbert-base-shaped"}
    assert all(r["seq_per_s"] > 0 and r["length"] == 128 for r in rows)
    assert "random init" in (tmp_path / "report.md").read_text()


@pytest.mark.slow
def test_bert_mrpc_quick(tmp_path: Path, shared_data: Path) -> None:
    assert main(["repro", "bert-mrpc", "--quick", "--output-dir", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["quick"] is True and "NOT BERT-base" in report["model"]
    f1_row = report["rows"][0]
    assert f1_row["paper"] == 88.9 and f1_row["difference"] == pytest.approx(f1_row["ours"] - 88.9, abs=1e-3)
    assert (tmp_path / "run" / "temper_run.json").exists() and (tmp_path / "report.md").exists()

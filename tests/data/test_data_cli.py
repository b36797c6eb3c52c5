"""`temper data check` (exit codes, full report) and `temper data stats` (histogram, counts, padding)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from temper.cli import main
from temper.data.stats import data_stats


def test_check_ok_prints_rows_and_format(lf: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["data", "check", str(lf / "alpaca_zh_demo.json"), str(lf / "glaive_toolcall_en_demo.json")])
    out = capsys.readouterr().out
    assert rc == 0
    assert "alpaca_zh_demo.json: 1000 rows, format alpaca, ok" in out
    assert "glaive_toolcall_en_demo.json: 300 rows, format sharegpt, ok" in out


def test_check_detects_preference_and_kto_files(lf: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = ["dpo_en_demo.json", "v1_dpo_demo.jsonl", "kto_en_demo.json"]
    assert main(["data", "check", *(str(lf / f) for f in files)]) == 0
    out = capsys.readouterr().out
    assert "dpo_en_demo.json: 300 rows, format preference, ok" in out
    assert (
        "v1_dpo_demo.jsonl: 10 rows, format preference, ok" in out
    )  # LLaMA-Factory v1 chosen_/rejected_messages
    assert "kto_en_demo.json: 300 rows, format kto, ok" in out


def test_preference_and_kto_files_given_to_another_task_say_what_they_are(lf: Path) -> None:
    from temper.data.formats import FORMATS
    from temper.data.load import load_datasets
    from temper.data.pref_formats import PREFERENCE_FORMATS
    from temper.errors import DataError

    for name, registry, task, verb in [
        ("dpo_en_demo.json", FORMATS, "preference", "temper dpo"),  # each row fails: last turn is the user's
        ("v1_dpo_demo.jsonl", FORMATS, "preference", "temper dpo"),  # no SFT format has its keys
        (
            "kto_en_demo.json",
            FORMATS,
            "kto",
            "temper kto",
        ),  # readable as messages, with bad replies as targets
        ("kto_en_demo.json", PREFERENCE_FORMATS, "kto", "temper kto"),
    ]:
        with pytest.raises(DataError) as e:
            load_datasets([str(lf / name)], converters=registry)
        assert e.value.problems[0].startswith(f"{lf / name}: these rows hold"), e.value.problems[0]
        assert f"they are {task} data, for {verb}" in e.value.problems[0]
    # A forced format reads them as that format: the rows were not dropped, only not guessed.
    (loaded,) = load_datasets([str(lf / "kto_en_demo.json")], format="messages", converters=FORMATS)
    assert loaded.n_rows == len(loaded.records) == 300


def test_dataset_info_json_given_as_a_dataset_says_how_to_name_its_datasets(
    lf: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["data", "check", str(lf / "dataset_info.json")]) == 1
    err = capsys.readouterr().err
    assert "dataset_info.json: LLaMA-Factory's index of datasets, not a dataset" in err
    assert f"hint: Name its datasets: --dataset-dir {lf} --dataset NAME[,NAME] (local ones: identity," in err


def test_check_dataset_dir_names(lf: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "check", "identity,wiki_demo", "--dataset-dir", str(lf)]) == 0
    assert "wiki_demo.txt: 30 rows, format text, ok" in capsys.readouterr().out


def test_check_reports_every_problem_and_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.jsonl"
    rows = [json.dumps({"query": f"q{i}"}) for i in range(60)] + ["{not json"]
    bad.write_text("\n".join(rows) + "\n")
    assert main(["data", "check", str(bad)]) == 1
    err = capsys.readouterr().err
    assert (
        err.count(":response: missing; expected a non-empty string") == 60
    )  # all of them, no "... and N more"
    assert f"{bad}:61: invalid JSON line" in err
    assert f"{bad}:1:response:" in err


def test_check_of_an_empty_file_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    for fmt in ("auto", "alpaca"):  # a forced format used to report "0 rows, format alpaca, ok"
        assert main(["data", "check", str(empty), "--format", fmt]) == 1
        captured = capsys.readouterr()
        assert f"{empty} has no rows" in captured.err and "ok" not in captured.out


def test_check_exit_code_of_the_real_process(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"instruction": "x"}]))
    proc = subprocess.run(
        [sys.executable, "-m", "temper", "data", "check", str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert f"{bad}:1:output: missing" in proc.stderr


def _config(tmp_path: Path, model: Path, data: list[str]) -> Path:
    cfg = {
        "model": str(model),
        "dataset": data,
        "max_length": 128,
        "per_device_train_batch_size": 4,
        "model_name": "Ember",
        "model_author": "us",
    }
    path = tmp_path / "sft.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_stats_of_a_config_and_a_run_dir(
    tmp_path: Path, tiny_llama_dir: Path, lf: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from temper.config import SFTConfig
    from temper.runs import write_manifest

    yaml_path = _config(
        tmp_path, tiny_llama_dir, [str(lf / "identity.json"), str(lf / "alpaca_en_demo.json#40")]
    )
    s = data_stats(yaml_path)
    assert s.encode.n_rows == 131 and len(s.encode.lengths) == 131
    assert s.encode.n_truncated + s.encode.n_dropped == sum(n > 128 for n in s.encode.lengths) > 0
    assert max(s.padding_packed, s.padding_grouped) < 0.05 < s.padding_random < 1
    assert s.n_packed_rows < s.encode.n_rows
    # A run dir: config.yaml + manifest + tokenizer, as training writes them.
    run = tmp_path / "run"
    run.mkdir()
    SFTConfig.from_sources(yaml_path).save_yaml(run / "config.yaml")
    write_manifest(run, "sft", str(tiny_llama_dir), "adapter")
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(tiny_llama_dir).save_pretrained(run)
    assert main(["data", "stats", str(run)]) == 0
    out = capsys.readouterr().out
    assert "token lengths of" in out and "131 rows" in out
    assert f"{s.encode.n_truncated} truncated" in out and "padding at batch size 4" in out

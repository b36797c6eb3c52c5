"""`temper export` through the real CLI entry point: success paths print a summary, bad inputs exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from temper.cli import main
from temper.export.manifest import EXPORT_MANIFEST


def test_cli_merge_and_gguf(lora_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "merged"
    assert main(["export", str(lora_run), "--merge", "--output-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "max_abs_logit_diff" in printed and "model.safetensors" in printed
    assert json.loads((out / EXPORT_MANIFEST).read_text())["method"] == "merge"

    gg = tmp_path / "gguf"
    assert main(["export", str(lora_run), "--merge", "--gguf", "q8_0", "--output-dir", str(gg)]) == 0
    assert (gg / "model-q8_0.gguf").stat().st_size > 0 and "ollama create" in capsys.readouterr().out
    # an earlier export may be replaced, but only when asked
    assert main(["export", str(lora_run), "--gguf", "f16", "--output-dir", str(gg)]) == 2
    assert main(["export", str(lora_run), "--gguf", "f16", "--output-dir", str(gg), "--overwrite"]) == 0
    assert sorted(p.name for p in gg.iterdir()) == ["Modelfile", "model-f16.gguf", EXPORT_MANIFEST]


def test_cli_bad_inputs_exit_2_with_a_message(
    tiny_bpe_llama_dir: Path, tiny_bert_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = [
        (["export", str(tiny_bpe_llama_dir), "--merge"], "needs a run dir with a LoRA/DoRA adapter"),
        (
            ["export", str(tiny_bpe_llama_dir), "--merge", "--gguf", "f16"],
            "needs a run dir with a LoRA/DoRA adapter",
        ),
        (["export", str(tiny_bert_dir), "--gguf", "q8_0"], "not a causal language model"),
        (["export", str(tiny_bpe_llama_dir)], "nothing to do"),
        (["export", str(tmp_path / "nope"), "--onnx"], "cannot find model"),
    ]
    for argv, message in cases:
        assert main([*argv, "--output-dir", str(tmp_path / "out")]) == 2, argv
        assert message in capsys.readouterr().err, argv
    assert not (tmp_path / "out").exists()

"""Model names resolve offline: aliases, HF dirs, GGUF files (converted once, cached) and run dirs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from temper.errors import ModelNotFoundError, TemperError
from temper.models.load import BUNDLED, load_causal_lm, resolve
from temper.runs import write_manifest


def test_unknown_model_lists_what_was_looked_for(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError) as err:
        resolve(str(tmp_path / "nope"))
    text = str(err.value)
    for needle in ("bundled alias", "GGUF file", "temper_run.json", "config.json", *BUNDLED):
        assert needle in text
    assert "offline" in text


def test_a_config_file_given_as_the_model_names_the_model_inside(tmp_path: Path) -> None:
    # LLaMA-Factory's inference YAML, as `llamafactory-cli chat` takes it.
    infer = tmp_path / "llama3_lora_sft.yaml"
    infer.write_text(
        "model_name_or_path: base\nadapter_name_or_path: saves/llama3-8b/lora/sft\ntemplate: llama3\n"
    )
    with pytest.raises(ModelNotFoundError, match="is a config file, not a model") as err:
        resolve(str(infer))
    assert "saves/llama3-8b/lora/sft" in str(err.value.hint)
    infer.write_text("model_name_or_path: smollm2-135m-instruct\n")
    with pytest.raises(ModelNotFoundError) as err:
        resolve(str(infer))
    assert "Pass the model it names: smollm2-135m-instruct" in str(err.value.hint)


def test_hf_dir_and_run_dir_resolve(tiny_llama_dir: Path, tmp_path: Path) -> None:
    ref = resolve(str(tiny_llama_dir))
    assert ref.kind == "hf_dir" and ref.path == tiny_llama_dir
    run = tmp_path / "run"
    run.mkdir()
    write_manifest(run, "sft", str(tiny_llama_dir), "adapter")
    ref = resolve(str(run))
    assert ref.kind == "run" and ref.path == tiny_llama_dir and ref.adapters == {"run": run}
    # A run dir whose adapter files are missing is refused with the files named, not loaded half-way.
    with pytest.raises(TemperError, match="adapter_model.safetensors"):
        load_causal_lm(ref)


def test_pickle_adapters_are_not_loaded(tiny_llama_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    write_manifest(run, "sft", str(tiny_llama_dir), "adapter")
    (run / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    (run / "adapter_model.bin").write_bytes(b"not loaded")
    with pytest.raises(TemperError, match="pickle"):
        load_causal_lm(str(run))


@pytest.mark.slow
def test_gguf_file_converts_once_and_matches(
    tmp_path: Path, smollm2_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The copy's conversion (517 MB) goes to a cache dir inside tmp_path, removed with it, not the user's cache.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    gguf = BUNDLED["smollm2-135m-instruct"].locate()
    assert gguf is not None
    copy = tmp_path / "copy.gguf"
    shutil.copy(gguf, copy)
    ref = resolve(str(copy))
    assert ref.kind == "gguf" and (ref.path / "model.safetensors").exists()
    assert ref.path.is_relative_to(tmp_path / "cache")
    assert resolve(str(copy)).path == ref.path  # cached: the second resolve does not convert again
    cfg = json.loads((ref.path / "config.json").read_text())
    assert "quantization_config" not in cfg  # plain float model: saving and full fine-tuning work
    a, tok = load_causal_lm(ref, dtype="fp32")
    b, _ = load_causal_lm(str(smollm2_dir), dtype="fp32")  # the alias, converted once for the session
    ids = tok("Hello there", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(a(ids).logits, b(ids).logits)
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    assert tok.model_max_length == 8192


def test_auto_dtype_picks_the_faster_matmul_on_this_cpu() -> None:
    """`--bf16 auto` / `--dtype auto`: bf16 only where it is measurably faster (a VM can expose AVX512-BF16 and
    still run bf16 matmuls at half the fp32 speed). Checked against a separate, larger measurement."""
    import time

    from temper.models.dtype import bf16_supported, cpu_bf16_speedup, pick_dtype

    if torch.cuda.is_available():
        pytest.skip("the CPU rule")

    def best(dtype: torch.dtype) -> float:
        a, b = torch.randn(1024, 1024).to(dtype), torch.randn(1024, 1024).to(dtype)
        a @ b
        times = []
        for _ in range(3):
            start = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - start)
        return min(times)

    ratio = best(torch.float32) / best(torch.bfloat16)
    if 0.8 < ratio < 1.4:
        pytest.skip(f"bf16/fp32 = {ratio:.2f}: too close to call on this machine")
    assert cpu_bf16_speedup() > 0
    assert bf16_supported() == (ratio > 1), (ratio, cpu_bf16_speedup())
    assert pick_dtype("auto") == (torch.bfloat16 if ratio > 1 else torch.float32)


def test_the_gguf_cache_is_keyed_by_content_and_sheds_entries_whose_files_are_gone(
    tiny_llama_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same GGUF in two places (two venvs, two clones) converts once; entries nothing leads to any more are
    removed at the next conversion. The cache used to key on the path and keep everything (13 GB seen)."""
    from temper.cli import main
    from temper.models.gguf import evict_stale

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert main(["export", str(tiny_llama_dir), "--gguf", "f16", "--output-dir", str(tmp_path / "g")]) == 0
    (made,) = (tmp_path / "g").glob("*.gguf")
    copies = [tmp_path / venv / "model.gguf" for venv in ("venv1", "venv2")]
    for copy in copies:
        copy.parent.mkdir()
        shutil.copy(made, copy)
    converted = resolve(str(copies[0])).path
    assert resolve(str(copies[1])).path == converted  # one conversion for both
    assert converted.is_relative_to(tmp_path / "cache")
    old = converted.parent / "model-0123456789abcdef"  # the path-keyed layout: nothing reads it any more
    old.mkdir()
    (old / "temper_source.json").write_text(json.dumps({"gguf": str(copies[0])}))
    assert evict_stale(converted.parent, keep=tmp_path) == [old.name]  # kept while a copy exists
    shutil.rmtree(copies[0].parent)
    assert evict_stale(converted.parent, keep=tmp_path) == []  # venv2's copy still leads to it
    shutil.rmtree(copies[1].parent)
    assert evict_stale(converted.parent, keep=tmp_path) == [converted.name]
    assert sorted(p.name for p in converted.parent.iterdir()) == ["by-path"]
    assert list((converted.parent / "by-path").iterdir()) == []  # its path markers went with it

"""`temper export FILE.yaml`: LLaMA-Factory's export YAML (`llamafactory-cli export FILE.yaml`) merges its
adapter into its model and writes export_dir, as LLaMA-Factory does; what temper cannot do is refused with the
way to do it, before anything is written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from temper.cli import main
from temper.export.merge import probe_ids
from temper.models.load import load_causal_lm, resolve


@pytest.fixture(scope="module")
def peer_adapter(tmp_path_factory: pytest.TempPathFactory, tiny_bpe_llama_dir: Path) -> Path:
    """A peft LoRA adapter as a peer saves it (no temper files), whose config names a base not on this machine."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    out = tmp_path_factory.mktemp("saves") / "sft"
    model = AutoModelForCausalLM.from_pretrained(tiny_bpe_llama_dir, dtype=torch.float32)
    torch.manual_seed(2)
    get_peft_model(
        model, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False)
    ).save_pretrained(out)
    config = json.loads((out / "adapter_config.json").read_text())
    (out / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": "/data/llama"}))
    return out


def _peft_merged_logits(base: Path, adapter: Path, ids: torch.Tensor) -> torch.Tensor:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload().eval()
    with torch.no_grad():
        return merged(input_ids=ids).logits


def _write(path: Path, values: dict[str, object]) -> Path:
    path.write_text(yaml.safe_dump(values), encoding="utf-8")
    return path


def test_llamafactory_export_yaml_merges_into_export_dir(
    tiny_bpe_llama_dir: Path, peer_adapter: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "output" / "merged"
    config = _write(
        tmp_path / "merge.yaml",
        {  # LLaMA-Factory's examples/merge_lora/llama3_lora_sft.yaml, with this test's paths
            "model_name_or_path": str(tiny_bpe_llama_dir),
            "adapter_name_or_path": str(peer_adapter),
            "template": "qwen",
            "trust_remote_code": True,
            "export_dir": str(out),
            "export_size": 5,
            "export_device": "cpu",
            "export_legacy_format": False,
        },
    )
    assert main(["export", str(config)]) == 0
    captured = capsys.readouterr()
    assert "ignored: export_device" in captured.err and "max_abs_logit_diff" in captured.out
    assert (out / "Modelfile").read_text().startswith("FROM .\n")
    ref = resolve(out)
    assert ref.kind == "hf_dir" and not ref.adapters
    merged, tok = load_causal_lm(ref, dtype="fp32")
    ids = probe_ids(tok)
    with torch.no_grad():
        got = merged(input_ids=ids).logits
    want = _peft_merged_logits(tiny_bpe_llama_dir, peer_adapter, ids)
    base, _ = load_causal_lm(str(tiny_bpe_llama_dir), dtype="fp32")
    with torch.no_grad():
        assert (got - base(input_ids=ids).logits).abs().max() > 1e-2  # the adapter was merged
    assert (got - want).abs().max() < 1e-4
    manifest = json.loads((out / "temper_export.json").read_text())
    assert manifest["method"] == "merge" and manifest["adapters"] == {"sft": str(peer_adapter)}

    # The same model and adapter named by flags give the same weights, here split into shards of 100KB.
    flags = tmp_path / "flags"
    argv = ["export", str(tiny_bpe_llama_dir), "--adapter", str(peer_adapter), "--merge"]
    assert main([*argv, "--max-shard-size", "100KB", "--output-dir", str(flags)]) == 0
    assert (flags / "model.safetensors.index.json").exists() and len(
        list(flags.glob("model-*.safetensors"))
    ) > 1
    sharded, _ = load_causal_lm(str(flags), dtype="fp32")
    with torch.no_grad():
        assert torch.equal(sharded(input_ids=ids).logits, got)

    # ms-swift's line, `swift export --adapters DIR --merge_lora true` (the base from the adapter's config, or
    # --model), writes DIR-merged when no output dir is given.
    ckpt = tmp_path / "checkpoint-4"
    shutil.copytree(peer_adapter, ckpt)
    config_file = ckpt / "adapter_config.json"
    config_file.write_text(
        json.dumps(
            {**json.loads(config_file.read_text()), "base_model_name_or_path": str(tiny_bpe_llama_dir)}
        )
    )
    for argv in (
        ["--adapters", str(ckpt)],
        ["--model", str(tiny_bpe_llama_dir), "--adapters", str(peer_adapter)],
    ):
        capsys.readouterr()
        assert main(["export", *argv, "--merge_lora", "true"]) == 0
        swift_out = Path(f"{argv[-1]}-merged")
        assert f"output dir: {swift_out} (no --output-dir" in capsys.readouterr().err
        swift_model, _ = load_causal_lm(str(swift_out), dtype="fp32")
        with torch.no_grad():
            assert torch.equal(swift_model(input_ids=ids).logits, got)


def test_export_yaml_without_adapter_converts_with_a_method_flag(
    tiny_bpe_llama_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "gguf"
    config = _write(
        tmp_path / "base.yaml", {"model_name_or_path": str(tiny_bpe_llama_dir), "export_dir": str(out)}
    )
    assert main(["export", str(config)]) == 2
    assert "names no adapter (adapter_name_or_path), so there is nothing to merge" in capsys.readouterr().err
    assert not out.exists()
    assert main(["export", str(config), "--gguf", "f16"]) == 0
    assert (out / "model-f16.gguf").stat().st_size > 0


def test_what_temper_cannot_export_is_refused_before_writing(
    tiny_bpe_llama_dir: Path, peer_adapter: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    model = {"model_name_or_path": str(tiny_bpe_llama_dir), "adapter_name_or_path": str(peer_adapter)}
    cases = [
        ({"export_quantization_bit": 4, "export_quantization_dataset": "data/c4_demo.jsonl"}, [], "GPTQ"),
        ({"export_hub_model_id": "me/model"}, [], "never uploads"),
        ({"export_legacy_format": True}, [], "pickle"),
        ({"export_size": "big"}, [], "not a size in GB"),
        ({"export_size": 0.5}, [], "not a size in GB"),
        ({"infer_dtype": "int4"}, [], "is not a dtype"),
        ({"temperature": 0.7}, [], "unknown key 'temperature'"),
        ({}, [], "no output dir"),
        ({"export_dir": str(out)}, ["--adapter", str(peer_adapter)], "the file names the model and adapter"),
    ]
    for extra, flags, message in cases:
        config = _write(tmp_path / "bad.yaml", {**model, **extra})
        assert main(["export", str(config), *flags]) == 2, extra
        assert message in capsys.readouterr().err, extra
    assert (
        main(
            ["export", str(tiny_bpe_llama_dir), "--gguf", "f16", "--dtype", "bf16", "--output-dir", str(out)]
        )
        == 2
    )
    assert "pass --merge" in capsys.readouterr().err
    argv = [
        "export",
        str(tiny_bpe_llama_dir),
        "--merge",
        "--max-shard-size",
        "lots",
        "--output-dir",
        str(out),
    ]
    with pytest.raises(SystemExit) as exit_:  # argparse's own usage error
        main(argv)
    assert exit_.value.code == 2
    assert "not a size such as 5GB" in capsys.readouterr().err
    assert not out.exists()


def test_template_flag_sets_the_saved_chat_template(
    tiny_bpe_llama_dir: Path, peer_adapter: Path, tmp_path: Path
) -> None:
    jinja = tmp_path / "plain.jinja"
    jinja.write_text(
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}", encoding="utf-8"
    )
    out = tmp_path / "merged"
    argv = [
        "export",
        str(tiny_bpe_llama_dir),
        "--adapter",
        str(peer_adapter),
        "--merge",
        "--template",
        str(jinja),
    ]
    assert main([*argv, "--output-dir", str(out)]) == 0
    _, tok = load_causal_lm(str(out), dtype="fp32")
    assert tok.chat_template == jinja.read_text()
    assert 'TEMPLATE """' not in (out / "Modelfile").read_text()  # not ChatML: Ollama reads the model's own

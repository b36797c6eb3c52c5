"""--torch-compile: regional compilation trains the same curve and saves the same files; no compiler, a clear
error."""

from __future__ import annotations

from pathlib import Path

import pytest
from safetensors import safe_open
from test_sft_recipe import make_cfg, write_rows

from temper.errors import ConfigError
from temper.recipes.sft import train_sft
from temper.runs import read_metrics


@pytest.mark.slow
def test_compiled_blocks_train_the_same_curve(tiny_llama_dir: Path, tmp_path: Path) -> None:
    data = write_rows(tmp_path / "rows.jsonl")
    common = ("--max-steps", "4", "--lora-rank", "8", "--num-threads", "1")  # default attention: auto
    train_sft(make_cfg(tiny_llama_dir, data, tmp_path / "plain", *common))
    train_sft(make_cfg(tiny_llama_dir, data, tmp_path / "compiled", *common, "--torch-compile", "true"))
    want = [r["loss"] for r in read_metrics(tmp_path / "plain") if "loss" in r]
    got = [r["loss"] for r in read_metrics(tmp_path / "compiled") if "loss" in r]
    assert len(got) == len(want) == 4
    assert got == pytest.approx(want, rel=1e-3), (got, want)
    assert want[-1] < want[0]
    keys = {}
    for run in ("plain", "compiled"):
        with safe_open(str(tmp_path / run / "adapter_model.safetensors"), "pt") as f:
            keys[run] = set(f.keys())
    assert keys["compiled"] == keys["plain"]  # in-place compile: no `_orig_mod.` in the saved names


def test_torch_compile_without_a_compiler_is_a_config_error(
    tiny_llama_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = write_rows(tmp_path / "rows.jsonl", n=4)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))  # a real PATH with no c++/g++ on it
    cfg = make_cfg(tiny_llama_dir, data, tmp_path / "out", "--max-steps", "1", "--torch-compile", "true")
    with pytest.raises(ConfigError, match="C\\+\\+ compiler") as err:
        train_sft(cfg)
    assert err.value.key == "torch_compile"


def test_compile_blocks_compiles_each_decoder_layer_in_place(tiny_llama_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    from temper.models.compile import compile_blocks

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, local_files_only=True)
    names = set(model.state_dict())
    assert compile_blocks(model) == model.config.num_hidden_layers
    assert all(layer._compiled_call_impl is not None for layer in model.model.layers)
    assert set(model.state_dict()) == names


def test_compiled_temper_attention_takes_new_lengths_without_recompiling(
    tiny_llama_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches grouped by length change the sequence length every step; a recompile per length made compiled
    training slower than uncompiled. The kernel's query-block count must not become a guard on the length (compiled,
    it is `COMPILED_BLOCKS` at every length from two rows per block: one graph, compiled once)."""
    import torch
    from transformers import AutoModelForCausalLM

    import temper.models.attention as attention
    from temper.models.compile import compile_blocks

    monkeypatch.setattr(attention, "QUERY_BLOCK", 8)  # uncompiled, 24 / 40 / 57 tokens are 3 / 5 / 7 blocks

    def step(model: torch.nn.Module, n: int) -> torch.Tensor:
        ids = torch.randint(10, 1000, (2, n), generator=torch.Generator().manual_seed(n))
        logits = model(input_ids=ids, use_cache=False).logits
        logits.float().square().mean().backward()
        return logits.detach().float()

    def load() -> torch.nn.Module:
        return AutoModelForCausalLM.from_pretrained(
            tiny_llama_dir, dtype=torch.bfloat16, attn_implementation=attention.NAME, local_files_only=True
        )

    torch.compiler.reset()
    plain, compiled = load(), load()
    compile_blocks(compiled)
    try:
        step(compiled, 24)
        with torch.compiler.set_stance("fail_on_recompile"):  # raises if a new length compiles again
            got = {n: step(compiled, n) for n in (40, 57, 7, 6)}
    finally:
        torch.compiler.reset()
    for n, logits in got.items():
        want = step(plain, n)
        assert float((logits - want).abs().max()) < 0.05 * float(want.abs().max()), n

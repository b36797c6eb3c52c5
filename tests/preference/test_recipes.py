"""End-to-end preference runs on a tiny random llama: the synthetic preference (chosen = "banana") is learned.

Proof it learns: held-out reward accuracy goes from chance (0.5: policy == reference, every reward ties) to ~1,
and the policy's greedy reply to held-out prompts changes to the preferred word.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from pref_synth import FIXED_WORD, synthetic_pairs

from temper.cli import main
from temper.config.preference import PreferenceConfig
from temper.data.pref_formats import PREFERENCE_FORMATS, convert_rows
from temper.data.pref_tokenize import PairCollator, encode_pairs
from temper.data.templates import prepare_tokenizer, render_prompt
from temper.errors import ConfigError, TemperError
from temper.models.load import load_causal_lm, load_tokenizer
from temper.objectives.logps import Reference, forward_logps, sequence_logps
from temper.recipes.preference import pairwise_loss_fn, precompute_pairs, train_rlhf
from temper.recipes.rm import RewardModel
from temper.runs import read_manifest, read_metrics

HELD_OUT = ["Tell me about rivers.", "Describe cats.", "Write about honey.", "Say something on glass."]


def cfg_for(verb: str, model: Path, data: Path, out: Path, *extra: str) -> PreferenceConfig:
    argv = ["--model", str(model), "--dataset", str(data), "--output-dir", str(out), "--val-size", "16"]
    argv += ["--batch-size", "8", "--bf16", "false", "--logging-steps", "5", "--save-steps", "1000"]
    argv += ["--lr-scheduler-type", "constant", *extra]
    return PreferenceConfig.for_verb(verb, None, argv)


def greedy_replies(model_path: str) -> list[str]:
    model, tok = load_causal_lm(model_path, dtype="fp32")
    out = []
    for prompt in HELD_OUT:
        ids = tok(
            render_prompt(tok, [{"role": "user", "content": prompt}]),
            add_special_tokens=False,
            return_tensors="pt",
        )
        gen = model.generate(**ids, max_new_tokens=3, do_sample=False)
        out.append(tok.decode(gen[0, ids["input_ids"].shape[1] :], skip_special_tokens=True))
    return out


def test_dpo_full_learns_the_preference(tiny_llama_dir: Path, pairs_file: Path, tmp_path: Path) -> None:
    before = greedy_replies(str(tiny_llama_dir))
    cfg = cfg_for(
        "dpo",
        tiny_llama_dir,
        pairs_file,
        tmp_path / "dpo",
        "--tuning",
        "full",
        "--lr",
        "1e-3",
        "--max-steps",
        "20",
    )
    result = train_rlhf(cfg)
    manifest = read_manifest(tmp_path / "dpo")
    assert manifest["kind"] == "dpo" and manifest["weights"] == "full"
    assert manifest["eval_before"]["rewards/accuracies"] == 0.5  # policy == reference: all rewards tie
    assert result.metrics["eval_rewards/accuracies"] >= 0.9
    assert result.metrics["eval_rewards/margins"] > 0.3 > manifest["eval_before"]["rewards/margins"]
    after = greedy_replies(str(tmp_path / "dpo"))
    assert sum(r.startswith(FIXED_WORD) for r in before) == 0
    assert sum(r.startswith(FIXED_WORD) for r in after) >= 3, after
    rows = read_metrics(tmp_path / "dpo")
    keys = set().union(*rows)
    for k in (
        "rewards/chosen",
        "rewards/rejected",
        "rewards/accuracies",
        "rewards/margins",
        "logps/chosen",
        "logps/rejected",
    ):
        assert k in keys and f"eval_{k}" in keys
    assert (tmp_path / "dpo" / "loss.png").exists()


def test_dpo_lora_reference_is_the_policy_with_adapters_off(
    tiny_llama_dir: Path, pairs_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "lora"
    cfg = cfg_for(
        "dpo", tiny_llama_dir, pairs_file, out, "--lr", "5e-3", "--max-steps", "12", "--rpo-alpha", "0.1"
    )
    result = train_rlhf(cfg)
    before = read_manifest(out)["eval_before"]
    assert before["rewards/chosen"] == 0.0 and before["rewards/rejected"] == 0.0  # LoRA B starts at 0
    assert result.metrics["eval_rewards/accuracies"] > 0.8
    # The run dir has the SFT layout: adapter at the root, tokenizer, manifest; chat loads it like an SFT run.
    for name in (
        "adapter_model.safetensors",
        "adapter_config.json",
        "tokenizer_config.json",
        "temper_run.json",
    ):
        assert (out / name).exists(), name
    assert read_manifest(out)["weights"] == "adapter"
    model, _ = load_causal_lm(str(out))
    assert type(model).__name__ == "PeftModelForCausalLM"


def test_a_preference_run_on_a_lora_run_says_it_merges_and_saves_full_weights(
    tiny_llama_dir: Path, pairs_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    start = tmp_path / "start"
    train_rlhf(cfg_for("dpo", tiny_llama_dir, pairs_file, start, "--max-steps", "1", "--val-size", "0"))
    capsys.readouterr()
    out = tmp_path / "on-top"
    train_rlhf(cfg_for("dpo", start, pairs_file, out, "--max-steps", "1", "--val-size", "0"))
    said = " ".join(capsys.readouterr().err.split())
    assert f"{start}'s LoRA adapter merged into its base" in said  # it used to save full weights unannounced
    assert "a new LoRA trains on top, and the run saves full weights" in said
    assert read_manifest(out)["weights"] == "full" and (out / "model.safetensors").exists()


def test_precomputed_reference_equals_the_live_one(tiny_llama_dir: Path) -> None:
    tok = prepare_tokenizer(load_tokenizer(str(tiny_llama_dir)))
    model, _ = load_causal_lm(str(tiny_llama_dir), dtype="fp32")
    records = convert_rows(
        [(f"r{i}", r) for i, r in enumerate(synthetic_pairs(6, seed=5))], PREFERENCE_FORMATS
    )
    rows, _ = encode_pairs(records, tok, max_length=64)
    collator = PairCollator(tok.pad_token_id)
    precompute_pairs(model, rows, collator, batch_size=4)
    policy = copy.deepcopy(model)
    with torch.no_grad():
        policy.model.norm.weight.mul_(1.5)  # any change: the policy differs from the reference
    cfg = PreferenceConfig.for_verb("dpo", None, [])
    live = pairwise_loss_fn(cfg.pref, Reference(model))(policy, collator(rows))
    stored = pairwise_loss_fn(cfg.pref, None)(policy, collator(rows) | {})
    assert "ref_chosen_logps" in collator(rows)
    assert stored[0].item() == pytest.approx(live[0].item(), abs=1e-5)
    assert stored[1]["rewards/margins"] == pytest.approx(live[1]["rewards/margins"], abs=1e-5)


def test_forward_logps_equals_full_logits(tiny_llama_dir: Path) -> None:
    tok = prepare_tokenizer(load_tokenizer(str(tiny_llama_dir)))
    model, _ = load_causal_lm(str(tiny_llama_dir), dtype="fp32")
    records = convert_rows([(f"r{i}", r) for i, r in enumerate(synthetic_pairs(3))], PREFERENCE_FORMATS)
    batch = PairCollator(tok.pad_token_id)(encode_pairs(records, tok, max_length=64)[0])
    with torch.no_grad():
        fast, counts = forward_logps(model, batch)
        slow, counts2 = sequence_logps(
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
            batch["labels"],
        )
    assert torch.allclose(fast, slow, atol=1e-4) and counts.tolist() == counts2.tolist()


def test_kto_learns_from_unpaired_labels(tiny_llama_dir: Path, kto_file: Path, tmp_path: Path) -> None:
    cfg = cfg_for(
        "kto",
        tiny_llama_dir,
        kto_file,
        tmp_path / "kto",
        "--tuning",
        "full",
        "--lr",
        "2e-3",
        "--max-steps",
        "15",
    )
    result = train_rlhf(cfg)
    assert result.metrics["eval_rewards/margins"] > 0.1
    assert result.metrics["eval_rewards/chosen"] > 0 > result.metrics["eval_rewards/rejected"]
    assert any("kl" in row for row in read_metrics(tmp_path / "kto"))
    assert read_manifest(tmp_path / "kto")["kind"] == "kto"


@pytest.mark.parametrize("verb", ["orpo", "simpo", "cpo"])
def test_reference_free_objectives_raise_held_out_accuracy(
    verb: str, tiny_llama_dir: Path, pairs_file: Path, tmp_path: Path
) -> None:
    argv = ["rlhf", "--rlhf-type", verb, "--model", str(tiny_llama_dir), "--dataset", str(pairs_file)]
    argv += ["--output-dir", str(tmp_path / verb), "--val-size", "16", "--batch-size", "8", "--bf16", "false"]
    argv += [
        "--tuning",
        "full",
        "--lr",
        "1e-3",
        "--max-steps",
        "10",
        "--save-steps",
        "1000",
        "--eval-steps",
        "10",
    ]
    assert main(argv) == 0
    manifest = read_manifest(tmp_path / verb)
    after = manifest["result"]["metrics"]
    assert after["eval_rewards/accuracies"] > manifest["eval_before"]["rewards/accuracies"]
    assert after["eval_loss"] < manifest["eval_before"]["loss"]


def test_reward_model_trains_and_scores(
    tiny_llama_dir: Path, pairs_file: Path, tmp_path: Path, capsys: Any
) -> None:
    out = tmp_path / "rm"
    result = train_rlhf(
        cfg_for(
            "rm", tiny_llama_dir, pairs_file, out, "--lr", "2e-3", "--max-steps", "15", "--eval-steps", "15"
        )
    )
    assert f"next: temper rm-score {out} --prompt" in capsys.readouterr().err
    assert result.metrics["eval_rewards/accuracies"] >= 0.9
    assert read_manifest(out)["weights"] == "adapter"  # LoRA + the score head (modules_to_save)
    rm = RewardModel.load(out)
    chat = [{"role": "user", "content": "Describe cats."}]
    good, bad = rm.score_batch([[*chat, {"role": "assistant", "content": w}] for w in (FIXED_WORD, "plum")])
    assert good > bad
    capsys.readouterr()
    messages = json.dumps([*chat, {"role": "assistant", "content": FIXED_WORD}])
    assert main(["rm-score", str(out), "--messages", messages, "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == pytest.approx([good], abs=1e-4)
    # It scores; it does not generate: chat says so and how to score, instead of loading it as an embedder.
    assert main(["chat", str(out), "--query", "hi"]) != 0
    assert f"{out} is a reward model (written by temper rm)" in capsys.readouterr().err
    with pytest.raises(TemperError, match="is a reward model"):  # eval, export, sft on it: the same
        load_causal_lm(str(out))
    assert main(["export", str(out), "--gguf", "f16", "--output-dir", str(tmp_path / "gguf")]) != 0
    assert "is a reward model" in capsys.readouterr().err and not (tmp_path / "gguf").exists()
    # --merge writes one Hugging Face reward model: LoRA folded in, score head beside it, the same scores.
    merged = tmp_path / "rm-merged"
    assert main(["export", str(out), "--merge", "--output-dir", str(merged)]) == 0
    from transformers import AutoModelForSequenceClassification

    plain = AutoModelForSequenceClassification.from_pretrained(merged, local_files_only=True)
    assert plain.config.num_labels == 1 and not list(merged.glob("adapter_*"))
    again = RewardModel.load(merged)
    assert again.score_batch(
        [[*chat, {"role": "assistant", "content": w}] for w in (FIXED_WORD, "plum")]
    ) == (pytest.approx([good, bad], abs=1e-4))
    with pytest.raises(TemperError, match="neither a `temper rm` run nor a reward model"):
        RewardModel.load(tiny_llama_dir)


def test_pair_order_follows_train_sampling_strategy(
    tiny_llama_dir: Path, pairs_file: Path, tmp_path: Path
) -> None:
    """`sequential` trains the pairs in file order whatever the seed; `random` (the default) shuffles them by the
    seed. The first step's logps/chosen is the mean log-prob of that batch's chosen replies: it tells batches
    apart (the loss cannot: at step 1 the policy is the reference, so every batch's loss is log 2)."""

    def first_batch(seed: int, *how: str) -> float:
        out = tmp_path / f"{'-'.join(how) or 'default'}-{seed}"
        extra = ["--tuning", "full", "--max-steps", "1", "--val-size", "0", "--logging-steps", "1"]
        train_rlhf(cfg_for("dpo", tiny_llama_dir, pairs_file, out, *extra, "--seed", str(seed), *how))
        return float(next(r["logps/chosen"] for r in read_metrics(out) if "logps/chosen" in r))

    sequential = ("--train-sampling-strategy", "sequential")
    assert first_batch(1, *sequential) == pytest.approx(first_batch(2, *sequential), rel=1e-7)
    assert first_batch(1) != pytest.approx(first_batch(2), rel=1e-5)  # the synthetic pairs are alike
    assert PreferenceConfig.for_verb("dpo", None, []).train.train_sampling_strategy == "random"
    with pytest.raises(
        ConfigError, match=r"train_sampling_strategy: got 'group_by_length', expected one of \["
    ):
        PreferenceConfig.for_verb("dpo", None, ["--train-sampling-strategy", "group_by_length"])

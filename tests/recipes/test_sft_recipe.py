"""End-to-end SFT on a tiny random llama: loss falls, weights change, the run dir is complete, resume
continues the same curve after a crash."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from safetensors.torch import load_file
from transformers import TrainerCallback

from temper.cli import main
from temper.config import SFTConfig
from temper.recipes.sft import train_sft
from temper.runs import read_manifest, read_metrics


def write_rows(path: Path, n: int = 24) -> Path:
    rows = []
    for i in range(n):
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": f"What is the code word number {i % 4}?"},
                    {"role": "assistant", "content": f"The code word is banana{i % 4}."},
                ]
            }
        )
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def make_cfg(model: Path, data: Path, out: Path, *extra: str) -> SFTConfig:
    args = [
        "--model", str(model), "--dataset", str(data), "--output-dir", str(out),
        "--max-length", "64", "--batch-size", "4", "--lr", "3e-3", "--bf16", "false",
        "--lr-scheduler-type", "constant", "--logging-steps", "1", "--seed", "7", *extra,
    ]  # fmt: skip
    return SFTConfig.from_sources(None, args)


def test_sft_lora_learns_and_writes_run_dir(tiny_llama_dir: Path, tmp_path: Path) -> None:
    data = write_rows(tmp_path / "rows.jsonl")
    out = tmp_path / "run"
    result = train_sft(make_cfg(tiny_llama_dir, data, out, "--max-steps", "12", "--lora-rank", "8"))
    losses = [r["loss"] for r in read_metrics(out) if "loss" in r]
    assert len(losses) == 12 and all(x == x for x in losses)
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.3, losses
    for name in ("config.yaml", "temper_run.json", "metrics.jsonl", "loss.png", "adapter_model.safetensors",
                 "adapter_config.json", "tokenizer_config.json"):  # fmt: skip
        assert (out / name).exists(), name
    # Weights and manifest are as readable as the rest (safetensors and temp files write 0600).
    modes = {
        name: (out / name).stat().st_mode & 0o777 for name in ("adapter_model.safetensors", "temper_run.json")
    }
    assert set(modes.values()) == {(out / "tokenizer_config.json").stat().st_mode & 0o777}, modes
    ckpt = out / "checkpoint-12"
    assert (ckpt / "adapter_model.safetensors").stat().st_mode & 0o777 == modes["temper_run.json"] != 0o600
    weights = load_file(out / "adapter_model.safetensors")
    lora_b = [v for k, v in weights.items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b)  # B starts at zero: non-zero means it trained
    manifest = read_manifest(out)
    assert manifest["weights"] == "adapter" and manifest["base_model"] == str(tiny_llama_dir.resolve())
    assert manifest["result"]["global_step"] == 12 == result.global_step
    assert result.tokens_per_second > 0
    # The Python API reads the run dir it returned, a Path (README's snippet; only str used to resolve).
    import temper

    model, _ = temper.load_model(result.run_dir)
    assert sum("lora_B" in name for name, _ in model.named_parameters()) > 0


class CrashAt(TrainerCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if state.global_step == self.step:
            raise RuntimeError("simulated crash")


def test_resume_continues_the_same_curve(
    tiny_llama_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = write_rows(tmp_path / "rows.jsonl")
    common = ("--max-steps", "6", "--save-steps", "3", "--tuning", "full")
    straight = tmp_path / "straight"
    train_sft(make_cfg(tiny_llama_dir, data, straight, *common))
    crashed = tmp_path / "crashed"
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_sft(make_cfg(tiny_llama_dir, data, crashed, *common), callbacks=[CrashAt(4)])
    assert (crashed / "checkpoint-3" / "temper_complete").exists()
    result = train_sft(make_cfg(tiny_llama_dir, data, crashed, *common, "--resume", "auto"))
    assert result.resumed_from is not None and result.resumed_from.endswith("checkpoint-3")
    # the tied head is loaded with the embedding: the Trainer's "missing lm_head.weight" warning is not shown
    assert "missing keys" not in caplog.text
    want = {r["step"]: r["loss"] for r in read_metrics(straight) if "loss" in r}
    got = {r["step"]: r["loss"] for r in read_metrics(crashed) if "loss" in r}
    for step in (4, 5, 6):
        assert got[step] == pytest.approx(want[step], abs=1e-4), (step, got, want)
    assert (crashed / "model.safetensors").exists() and read_manifest(crashed)["weights"] == "full"


PLAIN_LINE = re.compile(
    r"^step (\d+)/(\d+) \(epoch [\d.]+\) loss ([\d.]+) grad_norm \S+ lr \S+ \d+ tok/s "
    r"elapsed \d+:\d\d:\d\d ETA \d+:\d\d:\d\d$",
    re.M,
)


def test_progress_is_printed_line_by_line_when_not_on_a_terminal(
    tiny_llama_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run logged to a file (nohup, SLURM) shows each logged step while it runs, not one bar at the end;
    a resumed run counts its ETA from its own steps."""
    data = write_rows(tmp_path / "rows.jsonl", 16)
    out = tmp_path / "run"
    common = ("--max-steps", "4", "--save-steps", "2", "--lora-rank", "4")
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_sft(make_cfg(tiny_llama_dir, data, out, *common), callbacks=[CrashAt(3)])
    first = capsys.readouterr().err
    train_sft(make_cfg(tiny_llama_dir, data, out, *common, "--resume", "auto"))
    resumed = capsys.readouterr().err
    logged = {r["step"]: r["loss"] for r in read_metrics(out) if "loss" in r}
    for text, steps in ((first, [1, 2, 3]), (resumed, [3, 4])):
        lines = PLAIN_LINE.findall(text)
        assert [int(step) for step, _, _ in lines] == steps, text
        assert all(total == "4" for _, total, _ in lines)
        for step, _, loss in lines:
            assert float(loss) == pytest.approx(logged[int(step)], abs=1e-4)
    last = [line for line in resumed.splitlines() if line.startswith("step 4/4")]
    assert len(last) == 1 and last[0].endswith("ETA 0:00:00"), resumed


def test_existing_run_dir_is_not_clobbered(tiny_llama_dir: Path, tmp_path: Path) -> None:
    from temper.errors import TemperError

    data = write_rows(tmp_path / "rows.jsonl", 8)
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    for resume in ((), ("--resume", "auto")):  # nothing to resume in someone's own folder either
        with pytest.raises(TemperError, match=r"is not empty and holds no temper run \(keep.txt\)"):
            train_sft(make_cfg(tiny_llama_dir, data, out, "--max-steps", "1", *resume))
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "precious"
    (out / "keep.txt").unlink()
    (out / "config.yaml").write_text("# my own config\n")  # a user's file, not a run that never started
    with pytest.raises(TemperError, match="holds no temper run"):
        train_sft(make_cfg(tiny_llama_dir, data, out, "--max-steps", "1"))
    assert (out / "config.yaml").read_text() == "# my own config\n"


def test_early_stopping_stops_when_the_val_loss_stops_improving(tiny_llama_dir: Path, tmp_path: Path) -> None:
    # A learning rate of 0 keeps the val loss where it is: the first evaluation sets the best, the next two do
    # not improve on it, and patience 2 ends the run at step 3 of 10.
    data = write_rows(tmp_path / "rows.jsonl", 16)
    out = tmp_path / "run"
    args = (
        "--max-steps",
        "10",
        "--lr",
        "0",
        "--val-size",
        "4",
        "--eval-steps",
        "1",
        "--early-stopping-patience",
        "2",
    )
    result = train_sft(make_cfg(tiny_llama_dir, data, out, *args))
    assert result.global_step == 3
    assert [r["step"] for r in read_metrics(out) if "eval_loss" in r][:3] == [1, 2, 3]


def test_early_stopping_without_validation_data_is_an_error(tiny_llama_dir: Path, tmp_path: Path) -> None:
    from temper.errors import ConfigError

    data = write_rows(tmp_path / "rows.jsonl", 8)
    cfg = make_cfg(
        tiny_llama_dir, data, tmp_path / "run", "--max-steps", "2", "--early-stopping-patience", "2"
    )
    with pytest.raises(ConfigError, match="no validation data") as err:
        train_sft(cfg)  # it used to train without ever stopping early
    assert "--val-size" in str(err.value.hint)


def test_generation_metrics_on_the_val_split(tiny_llama_dir: Path, tmp_path: Path) -> None:
    data = write_rows(tmp_path / "rows.jsonl", 16)
    out = tmp_path / "run"
    cfg = make_cfg(
        tiny_llama_dir, data, out, "--max-steps", "2", "--val-size", "4", "--eval-steps", "2",
        "--eval-dataset", "general_qa",
    )  # fmt: skip
    result = train_sft(cfg)
    rows = read_metrics(out)
    gen = [r for r in rows if "eval_bleu-4" in r]
    assert gen and gen[0]["step"] == 2
    assert all(0.0 <= gen[0][k] <= 1.0 for k in ("eval_bleu-1", "eval_Rouge-L-F"))
    assert any("eval_loss" in r for r in rows) and "eval_loss" in result.metrics


def test_generation_eval_without_val_split_is_explained(tiny_llama_dir: Path, tmp_path: Path) -> None:
    from temper.errors import ConfigError

    data = write_rows(tmp_path / "rows.jsonl", 8)
    cfg = make_cfg(tiny_llama_dir, data, tmp_path / "run", "--max-steps", "1", "--eval-dataset", "general_qa")
    with pytest.raises(ConfigError, match="val-size"):
        train_sft(cfg)


class PaddingOfBatches(TrainerCallback):
    """At the end of training, the padding share of the batches the Trainer's own dataloader yields."""

    def __init__(self) -> None:
        self.ratio = -1.0
        self.lengths: list[list[int]] = []

    def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        masks = [batch["attention_mask"] for batch in kw["train_dataloader"]]
        self.lengths = [m.sum(1).tolist() for m in masks]
        self.ratio = 1 - sum(float(m.sum()) for m in masks) / sum(m.numel() for m in masks)


def test_train_sampling_strategy_decides_the_batch_order(tiny_llama_dir: Path, tmp_path: Path) -> None:
    """Default: the Trainer's length-grouped sampler (batches of similar length, little padding); `random`: its
    random order, whose batches mix short and long samples; `sequential`: file order, here short/long in turn."""
    rows = [
        {"messages": [{"role": "user", "content": f"{i} " + "word " * (1 if i % 2 else 20)}, {"role": "assistant", "content": "ok"}]}
        for i in range(64)
    ]  # fmt: skip
    data = tmp_path / "rows.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    ratios = {}
    for how in ("group_by_length", "random", "sequential"):
        probe = PaddingOfBatches()
        # Padded batches (the probe reads their masks): `auto` would make the mixed orders padding-free.
        cfg = make_cfg(
            tiny_llama_dir, data, tmp_path / how, "--max-steps", "1", "--train-sampling-strategy", how,
            "--padding-free", "false",
        )  # fmt: skip
        train_sft(cfg, [probe])
        ratios[how], lengths = probe.ratio, probe.lengths
    assert 0 <= ratios["group_by_length"] < ratios["random"] / 2, ratios
    # File order: long, short, long, short ... (row i is long when i is even), in every batch.
    assert all(b[0] > b[1] and b[2] > b[3] for b in lengths), lengths


class BatchesSeen(TrainerCallback):
    """At the end of training, the batches the Trainer's own dataloader yields."""

    def __init__(self) -> None:
        self.batches: list[dict[str, Any]] = []

    def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.batches = list(kw["train_dataloader"])


def test_padding_free_batches_hold_their_samples_end_to_end(
    tiny_llama_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--padding-free true`: each batch is one row of its samples, with the boundaries, and the run learns;
    `auto` turns it on where padded batches would waste more than 5%, with temper's attention kernel or
    flash-attention (sdpa, as here, keeps padded batches)."""
    from temper.recipes.sft import _padding_free

    data = write_rows(tmp_path / "rows.jsonl")
    probe = BatchesSeen()
    cfg = make_cfg(tiny_llama_dir, data, tmp_path / "free", "--max-steps", "12", "--padding-free", "true")
    train_sft(cfg, [probe])
    losses = [r["loss"] for r in read_metrics(tmp_path / "free") if "loss" in r]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.3, losses
    assert probe.batches and all(
        b["input_ids"].shape[0] == 1 and "attention_mask" not in b for b in probe.batches
    )
    for b in probe.batches:
        bounds = b["cu_seq_lens_q"].tolist()
        assert len(bounds) == 5 and bounds[-1] == b["input_ids"].shape[1]  # 4 samples per batch, no padding
        starts = (b["position_ids"][0] == 0).nonzero().flatten().tolist()
        assert starts == bounds[:-1]
    auto = make_cfg(tiny_llama_dir, data, tmp_path / "auto")
    assert auto.data.padding_free == "auto"
    assert _padding_free(auto, "temper", 0.2) and _padding_free(auto, "flash_attention_2", 0.2)
    assert not _padding_free(auto, "sdpa", 0.2)  # a block-diagonal mask over the whole row
    assert not _padding_free(
        auto, "temper", 0.01
    )  # little padding (length-grouped): padded batches are faster
    compiled = make_cfg(tiny_llama_dir, data, tmp_path / "c", "--torch-compile", "true")
    assert not _padding_free(compiled, "temper", 0.2)  # compiled layers cannot read the boundaries
    probe = BatchesSeen()
    train_sft(make_cfg(tiny_llama_dir, data, tmp_path / "padded", "--max-steps", "1"), [probe])
    assert all(b["attention_mask"].shape[0] == 4 for b in probe.batches)
    # The manifest records the layout each run trained on, and `temper data stats` reports it.
    free, padded = (read_manifest(tmp_path / d)["batches"] for d in ("free", "padded"))
    assert free["layout"] == "padding-free" and free["padding"] == 0
    assert padded["layout"] == "padded" and padded["padding"] == padded["padding_if_padded"]
    assert free["padding_if_padded"] == padded["padding"]  # same rows, same order
    assert free["order"] == padded["order"] == "group_by_length" and free["per_device_batch_size"] == 4
    assert main(["data", "stats", str(tmp_path / "free")]) == 0
    out = " ".join(capsys.readouterr().out.split())  # rich wraps long lines at the terminal width
    assert (
        "this run trained on padding-free batches of 4 per device, order group_by_length: padding 0.0%" in out
    )


def test_mask_history_and_train_on_prompt_change_what_training_labels(
    tiny_llama_dir: Path, tmp_path: Path, shared_data: Path
) -> None:
    # Multi-turn rows: the label count each run reports (manifest) follows the options; the default is replies.
    data = f"{shared_data / 'llamafactory' / 'glaive_toolcall_en_demo.json'}#12"
    stats = {}
    for opts in ((), ("--mask-history", "true"), ("--train-on-prompt", "true")):
        out = tmp_path / f"run{len(stats)}"
        cfg = make_cfg(tiny_llama_dir, Path(data), out, "--max-steps", "1", "--max-length", "2048", *opts)
        train_sft(cfg)
        stats[opts] = read_manifest(out)["data_stats"]
    default, history, prompt = stats.values()
    assert default["n_tokens"] == history["n_tokens"] == prompt["n_tokens"]
    assert 0 < history["n_label_tokens"] < default["n_label_tokens"] < prompt["n_label_tokens"]
    assert prompt["n_label_tokens"] == prompt["n_tokens"]


def test_warmup_steps_and_neftune_reach_the_trainer(tiny_llama_dir: Path, tmp_path: Path) -> None:
    data = write_rows(tmp_path / "rows.jsonl")
    base = ("--max-steps", "4", "--lr-scheduler-type", "constant_with_warmup")
    plain = tmp_path / "plain"
    train_sft(make_cfg(tiny_llama_dir, data, plain, *base, "--warmup-steps", "3"))
    lrs = [r["learning_rate"] for r in read_metrics(plain) if "loss" in r]
    # Linear warm-up over 3 steps to the peak 3e-3, then constant (the logged lr is the one the step used).
    assert lrs == pytest.approx([0.0, 1e-3, 2e-3, 3e-3])
    noisy = tmp_path / "noisy"
    trainer_model: list[Any] = []

    class Keep(TrainerCallback):
        def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
            trainer_model.append(model)

    train_sft(
        make_cfg(tiny_llama_dir, data, noisy, *base, "--warmup-steps", "3", "--neftune-noise-alpha", "50"),
        callbacks=[Keep()],
    )
    # Same seed and rows: only NEFTune's noise on the embeddings tells the first losses apart.
    first = [r["loss"] for r in read_metrics(plain) if "loss" in r][0]
    assert [r["loss"] for r in read_metrics(noisy) if "loss" in r][0] != pytest.approx(first, abs=1e-6)
    embed = trainer_model[0].get_input_embeddings()
    assert not embed._forward_hooks  # the Trainer removes its noise hook when training ends


def test_a_run_that_stopped_before_its_first_step_can_be_started_again(
    tiny_llama_dir: Path, tmp_path: Path
) -> None:
    from temper.errors import TemperError

    data = write_rows(tmp_path / "rows.jsonl", 8)
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_sft(make_cfg(tiny_llama_dir, data, out, "--max-steps", "2"), callbacks=[CrashAt(0)])
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "temper_run.json"]
    # Nothing trained, nothing to lose: the same command runs (no --overwrite-output-dir needed).
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_sft(make_cfg(tiny_llama_dir, data, out, "--max-steps", "2"), callbacks=[CrashAt(1)])
    assert [r["step"] for r in read_metrics(out) if "loss" in r] == [1]
    # One step logged: that run is kept unless resumed or overwritten.
    with pytest.raises(TemperError, match="already holds a run"):
        train_sft(make_cfg(tiny_llama_dir, data, out, "--max-steps", "2"))


def test_resuming_with_other_options_or_data_says_so(
    tiny_llama_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_rows(tmp_path / "rows.jsonl", 8)
    out = tmp_path / "run"
    train_sft(make_cfg(tiny_llama_dir, data, out, "--max-steps", "2", "--save-steps", "2"))
    capsys.readouterr()
    # Same options and data: nothing to say, and nothing to train: the finished run keeps its result and log.
    manifest, metrics = read_manifest(out), (out / "metrics.jsonl").read_text()
    again = train_sft(
        make_cfg(tiny_llama_dir, data, out, "--max-steps", "2", "--save-steps", "2", "--resume", "auto")
    )
    captured = capsys.readouterr()
    assert "resuming with options" not in captured.err and "data files changed" not in captured.err
    assert "already complete: this run finished at step 2 of 2" in captured.err
    assert again.already_complete and again.train_loss == manifest["result"]["train_loss"] > 0
    assert read_manifest(out)["result"] == manifest["result"]  # it used to become a loss of 0 over 0 tokens
    assert (out / "metrics.jsonl").read_text() == metrics
    # Extend the run with another learning rate on edited data; where it logs and saves does not count.
    write_rows(data, 9)
    extra = ("--max-steps", "4", "--lr", "1e-3", "--save-steps", "1", "--resume", "auto")
    train_sft(make_cfg(tiny_llama_dir, data, out, *extra))
    err = capsys.readouterr().err
    assert "learning_rate 0.003 -> 0.001" in err and "max_steps 2 -> 4" in err and "save_steps" not in err
    assert "the data files changed since this run started" in err
    # Another number of processes is explained too (the run above had one); not without --resume.
    from temper.training.checkpoint import resume_changes

    settings = make_cfg(tiny_llama_dir, data, out, *extra).to_dict()
    fingerprint = read_manifest(out)["data_fingerprint"]
    assert resume_changes(out, "auto", settings, fingerprint, world_size=1) == []
    (line,) = resume_changes(out, "auto", settings, fingerprint, world_size=2)
    assert line.startswith("warning: this run was started on 1 process(es) and resumes on 2.")
    assert resume_changes(out, None, settings, fingerprint, world_size=2) == []


def test_an_extended_run_trains_its_next_step_on_the_new_schedule(
    tiny_llama_dir: Path, tmp_path: Path
) -> None:
    """A finished 2-step run resumed to 4 steps: the optimizer state saved at step 2 carries the old linear
    schedule's final learning rate (0); step 3 must use the new schedule's, as a 4-step run from the start does."""
    data = write_rows(tmp_path / "rows.jsonl", 16)
    common = ("--lr-scheduler-type", "linear", "--save-steps", "1")
    train_sft(make_cfg(tiny_llama_dir, data, tmp_path / "straight", "--max-steps", "4", *common))
    out = tmp_path / "extended"
    train_sft(make_cfg(tiny_llama_dir, data, out, "--max-steps", "2", *common))
    result = train_sft(make_cfg(tiny_llama_dir, data, out, "--max-steps", "4", *common, "--resume", "auto"))
    want = {r["step"]: r["learning_rate"] for r in read_metrics(tmp_path / "straight") if "loss" in r}
    got = {r["step"]: r["learning_rate"] for r in read_metrics(out) if "loss" in r}
    assert got[3] == pytest.approx(want[3]) and got[3] > 0, (got, want)  # it was 0
    assert got[4] == pytest.approx(want[4]) and result.global_step == 4


def test_a_run_that_fails_before_training_leaves_no_folder(tiny_llama_dir: Path, tmp_path: Path) -> None:
    from temper.errors import TemperError

    out = tmp_path / "runs" / "never"
    with pytest.raises(TemperError, match="missing.jsonl"):
        train_sft(make_cfg(tiny_llama_dir, tmp_path / "missing.jsonl", out, "--max-steps", "1"))
    assert not out.exists()  # it used to be created empty before the data was read


def test_checkpoint_rotation_keeps_the_newest_complete_ones_by_step(
    tiny_llama_dir: Path, tmp_path: Path
) -> None:
    """--save-total-limit keeps the newest complete checkpoints by step. The Trainer's rotation ordered by mtime
    (a copied run dir deleted the wrong ones) and counted an export beside them (ms-swift's checkpoint-N-merged)."""
    import os
    import shutil

    data = write_rows(tmp_path / "rows.jsonl", 16)
    common = ("--save-steps", "1", "--save-total-limit", "2")
    first = tmp_path / "first"
    train_sft(make_cfg(tiny_llama_dir, data, first, "--max-steps", "2", *common))
    out = tmp_path / "copied"
    shutil.copytree(first, out)  # new mtimes, checkpoint-1 now the newest
    os.utime(out / "checkpoint-2", (1, 1))
    os.utime(out / "checkpoint-1", None)
    merged = out / "checkpoint-2-merged"  # `temper export --adapters RUN/checkpoint-2 --merge_lora true`
    merged.mkdir()
    (merged / "model.safetensors").write_bytes(b"an export")
    train_sft(make_cfg(tiny_llama_dir, data, out, "--max-steps", "5", *common, "--resume", "auto"))
    names = sorted(p.name for p in out.iterdir() if p.name.startswith("checkpoint-"))
    assert names == ["checkpoint-2-merged", "checkpoint-4", "checkpoint-5"], names
    assert (merged / "model.safetensors").read_bytes() == b"an export"

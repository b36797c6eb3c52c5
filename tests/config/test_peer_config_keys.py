"""A LLaMA-Factory / ms-swift config reads as theirs would: their spellings translate, keys that change nothing
in temper are named once, and values temper cannot honour are refused with what to write instead."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from temper.config import SFTConfig
from temper.config.encoder import ClassifyConfig
from temper.config.preference import PreferenceConfig
from temper.data.load import load_records
from temper.errors import ConfigError

# LLaMA-Factory's examples/train_lora/llama3_lora_sft.yaml, key for key (model, data and output made local).
LLAMAFACTORY_SFT = """\
### model
model_name_or_path: smollm2-135m-instruct
trust_remote_code: true

### method
stage: sft
do_train: true
finetuning_type: lora
lora_rank: 8
lora_target: all

### dataset
dataset: identity,alpaca_en_demo
dataset_dir: {data}
template: chatml
cutoff_len: 2048
max_samples: 1000
overwrite_cache: true
preprocessing_num_workers: 16
dataloader_num_workers: 4

### output
output_dir: saves/smollm2/lora/sft
logging_steps: 10
save_steps: 500
plot_loss: true
overwrite_output_dir: true
save_only_model: false
report_to: none

### train
per_device_train_batch_size: 1
gradient_accumulation_steps: 8
learning_rate: 1.0e-4
num_train_epochs: 3.0
lr_scheduler_type: cosine
warmup_ratio: 0.1
bf16: true
ddp_timeout: 180000000
resume_from_checkpoint: null
"""


def test_a_llamafactory_example_config_reads_as_it_means(tmp_path: Path) -> None:
    path = tmp_path / "llama3_lora_sft.yaml"
    path.write_text(LLAMAFACTORY_SFT.format(data="../shared/data/llamafactory"))
    cfg = SFTConfig.from_sources(path)
    assert cfg.model.model == "smollm2-135m-instruct" and cfg.model.template == "chatml"
    assert cfg.tune.tuning == "lora" and cfg.tune.lora_target == ["all-linear"]  # LLaMA-Factory's `all`
    assert cfg.data.dataset == ["identity", "alpaca_en_demo"] and cfg.data.max_length == 2048
    assert cfg.data.max_samples == 1000
    assert (cfg.train.gradient_accumulation_steps, cfg.train.warmup_ratio, cfg.train.bf16) == (8, 0.1, "true")
    assert cfg.train.resume is None
    ignored = [n.split(" ")[1] for n in cfg.notes]
    assert ignored == [
        "trust_remote_code", "do_train", "overwrite_cache", "preprocessing_num_workers",
        "dataloader_num_workers", "plot_loss", "save_only_model", "ddp_timeout",
    ]  # fmt: skip
    assert all(n.startswith("ignored: ") and "(" in n for n in cfg.notes)  # each says why
    assert "stage" not in cfg.to_dict() and "plot_loss" not in cfg.to_dict()  # config.yaml stays temper's


def test_temper_own_config_has_no_notes() -> None:
    assert SFTConfig.from_sources(None, ["--lr", "1e-4"]).notes == []


def test_other_tools_spellings_translate() -> None:
    cfg = SFTConfig.from_dict(
        {
            "torch_dtype": "bfloat16",
            "flash_attn": "fa2",
            "target_modules": "q_proj,v_proj",
            "neat_packing": True,
        }
    )
    assert cfg.model.dtype == "bf16" and cfg.model.attn_implementation == "flash_attention_2"
    assert cfg.tune.lora_target == ["q_proj", "v_proj"] and cfg.data.packing is True
    assert SFTConfig.from_dict({"torch_dtype": "float32", "flash_attn": "disabled"}).model.dtype == "fp32"
    with pytest.raises(ConfigError, match="flash_attn: got 'fa3'") as err:
        SFTConfig.from_dict({"flash_attn": "fa3"})
    assert "attn_implementation" in str(err.value.hint)
    # ms-swift's command line: `swift sft --attn_impl flash_attn --split_dataset_ratio 0.01 --dataset_num_proc 4`
    swift = SFTConfig.from_sources(
        None, ["--attn_impl", "flash_attn", "--split_dataset_ratio", "0.01", "--dataset_num_proc", "4"]
    )
    assert swift.model.attn_implementation == "flash_attention_2" and swift.data.val_size == 0.01
    assert [n.split(" ")[1] for n in swift.notes] == ["dataset_num_proc"]
    # ms-swift's model_name is a [Chinese, English] pair (zh rows take the first); a list given for any
    # one-value key is refused rather than kept as its repr.
    assert SFTConfig.from_dict({"model_name": ["小黄", "Xiao Huang"]}).data.model_name == [
        "小黄",
        "Xiao Huang",
    ]
    with pytest.raises(ConfigError, match=r"system: got \['a', 'b'\], expected a value of type str"):
        SFTConfig.from_dict({"system": ["a", "b"]})


def test_stage_must_be_what_the_verb_trains() -> None:
    assert SFTConfig.from_dict({"stage": "pt"}).notes == []  # plain-text rows train under sft
    with pytest.raises(ConfigError, match="stage 'dpo' is not what `temper sft` trains") as err:
        SFTConfig.from_dict({"stage": "dpo"}, source="x.yaml")
    assert "temper dpo" in str(err.value.hint)
    with pytest.raises(ConfigError, match="stage 'ppo' has no temper verb"):
        SFTConfig.from_dict({"stage": "ppo"})
    # LLaMA-Factory trains DPO and its variants (pref_loss orpo, simpo) as stage dpo; KTO is its own stage.
    assert PreferenceConfig.for_verb("orpo", None, ["stage=dpo"]).pref.rlhf_type == "orpo"
    assert PreferenceConfig.for_verb("kto", None, ["--stage", "kto"]).pref.rlhf_type == "kto"
    with pytest.raises(ConfigError, match="not what `temper kto` trains"):
        PreferenceConfig.for_verb("kto", None, ["--stage", "dpo"])


def test_do_train_false_is_refused_and_unknown_keys_still_fail() -> None:
    with pytest.raises(ConfigError, match="do_train: false asks for no training"):
        SFTConfig.from_dict({"do_train": False})
    with pytest.raises(ConfigError, match="unknown key 'max_sample'") as err:
        SFTConfig.from_dict({"max_sample": 10})
    assert "max_samples" in str(err.value.hint)
    # Starting from a trained adapter: LLaMA-Factory's and ms-swift's keys are temper's `adapter`.
    for key in ("adapter_name_or_path", "adapters"):
        assert SFTConfig.from_dict({key: "saves/lora/sft"}).model.adapter == "saves/lora/sft"
    # LLaMA-Factory's default_system fills rows without a system prompt, as temper's (and ms-swift's) system.
    assert SFTConfig.from_dict({"default_system": "You are Ember."}).data.system == "You are Ember."
    # ms-swift's YAML form is a list (`adapters: [output/checkpoint-4]`); one item is that value.
    assert SFTConfig.from_dict({"adapters": ["output/checkpoint-4"]}).model.adapter == "output/checkpoint-4"
    with pytest.raises(ConfigError, match=r"adapter: got \['a', 'b'\], expected a value of type str"):
        SFTConfig.from_dict({"adapters": ["a", "b"]})
    with pytest.raises(ConfigError, match="classify and embed do not start from a separate adapter"):
        ClassifyConfig.from_dict({"adapter": "saves/lora/sft"})


def test_max_samples_keeps_the_first_rows_of_each_dataset(shared_data: Path) -> None:
    files = [str(shared_data / "llamafactory" / f) for f in ("identity.json", "alpaca_en_demo.json")]
    whole = [load_records([f]) for f in files]
    cut = load_records(files, max_samples=5)
    assert len(cut) == 10
    assert [r.source for r in cut] == [r.source for r in whole[0][:5] + whole[1][:5]]
    # After `#N` sampling, as LLaMA-Factory cuts after its num_samples.
    sampled = load_records([files[1] + "#50"], seed=3)
    assert [r.source for r in load_records([files[1] + "#50"], seed=3, max_samples=7)] == [
        r.source for r in sampled[:7]
    ]
    with pytest.raises(ConfigError, match="max_samples"):
        SFTConfig.from_dict({"max_samples": 0})
    with pytest.raises(ConfigError, match="max_samples"):  # the preference verbs' data section too
        PreferenceConfig.for_verb("dpo", None, ["--max-samples", "0"])


def test_optimizer_names_are_the_trainers() -> None:
    from temper.training.preflight import check_trainer_names

    cfg = SFTConfig.from_sources(None, ["--optim", "sgd", "--adam-beta2", "0.95"])
    assert (cfg.train.optim, cfg.train.adam_beta2) == ("sgd", 0.95)
    check_trainer_names(cfg.train)  # no error
    with pytest.raises(ConfigError, match="optim: got 'adamw'") as err:
        check_trainer_names(SFTConfig.from_sources(None, ["--optim", "adamw"]).train)
    assert "adamw_torch" in str(err.value.hint)  # the prefix, not the closest spelling (grokadamw)
    with pytest.raises(ConfigError, match="adam_beta1"):
        SFTConfig.from_sources(None, ["--adam-beta1", "1.5"])


def test_an_optimizer_whose_package_is_missing_is_named_before_anything_loads() -> None:
    import importlib.util

    from temper.training.preflight import check_trainer_names

    if importlib.util.find_spec("lomo_optim") is not None:
        pytest.skip("lomo_optim is installed here")
    with pytest.raises(ConfigError, match="optim: 'lomo' cannot be used here: .*lomo") as err:
        check_trainer_names(SFTConfig.from_sources(None, ["--optim", "lomo"]).train)
    assert "adamw_torch_fused" in str(err.value.hint)


def test_bf16_forced_on_a_cpu_without_fast_bf16_is_warned_about() -> None:
    import torch

    from temper.models.dtype import bf16_supported
    from temper.training.preflight import start_notes

    slow = not torch.cuda.is_available() and not bf16_supported()
    for args in (["--bf16", "true"], ["--dtype", "bf16"]):
        notes = start_notes(SFTConfig.from_sources(None, args))
        assert any("asks for bf16" in n and "fp32" in n for n in notes) == slow, (args, notes)
    assert start_notes(SFTConfig.from_sources(None, [])) == []  # auto never warns


def test_validation_rows_from_their_own_files(shared_data: Path) -> None:
    from temper.data.load import load_train_val

    lf = shared_data / "llamafactory"
    cfg = SFTConfig.from_dict(
        {"dataset_dir": str(lf), "dataset": "identity", "val_dataset": "alpaca_en_demo", "max_samples": 6}
    )
    train, val = load_train_val(cfg.data, seed=1)
    assert [r.source for r in train] == [r.source for r in load_records([str(lf / "identity.json")])[:6]]
    assert [r.source for r in val] == [r.source for r in load_records([str(lf / "alpaca_en_demo.json")])[:6]]
    with pytest.raises(ConfigError, match="val_size 0.1 and val_dataset") as err:
        SFTConfig.from_dict({"val_size": 0.1, "val_dataset": "x.json"})
    assert "Keep one" in str(err.value.hint)
    # LLaMA-Factory's eval_dataset is temper's val_dataset; temper's eval_dataset names generation metrics.
    with pytest.raises(ConfigError, match="eval_dataset: got 'alpaca_en_demo'") as err:
        SFTConfig.from_dict({"eval_dataset": "alpaca_en_demo"})
    assert "val_dataset: alpaca_en_demo" in str(err.value.hint)
    with pytest.raises(ConfigError, match="both give validation rows"):
        PreferenceConfig.for_verb("dpo", None, ["--val-size", "2", "--val-dataset", "p.json"])


def test_peer_methods_temper_lacks_are_refused_unless_off() -> None:
    for key, value in (("sequence_parallel_size", 2), ("init_weights", "olora")):
        with pytest.raises(ConfigError, match=f"{key}: .*not in temper|{key}: .*temper") as err:
            SFTConfig.from_dict({key: value}, source="lf.yaml")
        assert err.value.hint and key in err.value.hint, key
    cfg = SFTConfig.from_dict({"use_galore": False, "sequence_parallel_size": 1, "use_unsloth": True})
    assert [n.split(" ")[1] for n in cfg.notes] == ["use_galore", "sequence_parallel_size", "use_unsloth"]
    assert cfg.to_dict() == SFTConfig.from_dict({}).to_dict()


def test_swift_init_weights_pissa_is_temper_pissa() -> None:
    # ms-swift's (and peft's) init_weights: pissa = the full SVD, pissa_niter_N = a fast SVD of N iterations
    full = SFTConfig.from_sources(None, ["--train_type", "lora", "--init_weights", "pissa"])
    assert (full.tune.pissa_init, full.tune.pissa_iter) == (True, -1)
    fast = SFTConfig.from_dict({"init_weights": "pissa_niter_4"})
    assert (fast.tune.pissa_init, fast.tune.pissa_iter) == (True, 4)
    assert not SFTConfig.from_dict({"init_weights": True}).tune.pissa_init  # peft's default init


def test_peer_spellings_of_qlora_and_labelling_translate() -> None:
    from temper.tuning import qlora_config

    # LLaMA-Factory's examples/train_qlora/llama3_lora_sft_bnb_npu.yaml, its quantization keys
    lf = SFTConfig.from_dict(
        {"quantization_bit": 4, "quantization_method": "bnb", "double_quantization": False}
    )
    assert (lf.tune.quantization, lf.tune.double_quantization, lf.tune.quantization_type) == (
        "4bit",
        False,
        "nf4",
    )
    swift = SFTConfig.from_sources(None, ["--quant_bits", "4", "--quant_method", "bnb", "--bnb_4bit_quant_type",
                                          "fp4", "--bnb_4bit_use_double_quant", "true"])  # fmt: skip
    assert (swift.tune.quantization, swift.tune.quantization_type, swift.tune.double_quantization) == (
        "4bit", "fp4", True)  # fmt: skip
    if importlib.util.find_spec("bitsandbytes"):
        bnb = qlora_config(lf.tune, "fp32")
        assert bnb.load_in_4bit and not bnb.bnb_4bit_use_double_quant and bnb.bnb_4bit_quant_type == "nf4"
    assert qlora_config(SFTConfig.from_dict({}).tune, "fp32") is None
    with pytest.raises(ConfigError, match="quantization_bit: got 3"):
        SFTConfig.from_dict({"quantization_bit": 3})
    with pytest.raises(ConfigError, match="quant_method: got 'hqq'"):
        SFTConfig.from_dict({"quant_method": "hqq"})
    # LLaMA-Factory checkpoints activations unless told not to; ms-swift's loss_scale names what is labelled
    assert SFTConfig.from_dict({"disable_gradient_checkpointing": False}).train.gradient_checkpointing
    assert not SFTConfig.from_dict({"disable_gradient_checkpointing": True}).train.gradient_checkpointing
    assert SFTConfig.from_dict({"loss_scale": "last_round"}).data.mask_history
    assert SFTConfig.from_dict({"loss_scale": "all"}).data.train_on_prompt
    assert SFTConfig.from_dict({"loss_scale": "default"}).to_dict() == SFTConfig.from_dict({}).to_dict()
    with pytest.raises(ConfigError, match="loss_scale: got 'ignore_empty_think'"):
        SFTConfig.from_dict({"loss_scale": "ignore_empty_think"})


def test_fp16_is_for_cuda_gpus_and_excludes_bf16() -> None:
    from temper.training.preflight import check_trainer_names

    # LLaMA-Factory's examples/extras/llama_pro/llama3_freeze_sft.yaml trains with `fp16: true`
    cfg = SFTConfig.from_dict({"fp16": True})
    assert cfg.train.fp16
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="fp16 mixed precision .* runs on CUDA GPUs"):
            check_trainer_names(cfg.train)
    with pytest.raises(ConfigError, match="fp16 and bf16 are both true"):
        SFTConfig.from_dict({"fp16": True, "bf16": True})
    assert not SFTConfig.from_dict({"fp16": False}).train.fp16


def test_llamafactory_method_sections_of_its_extras_examples_read() -> None:
    # examples/extras/{pissa,loraplus,dft,llama_pro}/*.yaml, their `### method` keys
    pissa = SFTConfig.from_dict({"finetuning_type": "lora", "pissa_init": True, "pissa_iter": 16,
                                 "pissa_convert": True})  # fmt: skip
    assert pissa.tune.pissa_init and pissa.tune.pissa_iter == 16
    assert [n.split(" ")[1] for n in pissa.notes] == ["pissa_convert"]
    assert SFTConfig.from_dict({"loraplus_lr_ratio": 16.0}).tune.loraplus_lr_ratio == 16.0
    assert SFTConfig.from_dict({"finetuning_type": "full", "use_dft_loss": True}).train.use_dft_loss
    eaft = SFTConfig.from_dict({"finetuning_type": "full", "use_eaft_loss": True, "eaft_alpha": 0.5})
    assert eaft.train.use_eaft_loss and eaft.train.eaft_alpha == 0.5
    asft = SFTConfig.from_dict({"use_asft_loss": True, "asft_alpha": 0.2})
    assert asft.train.use_asft_loss and asft.train.asft_alpha == 0.2
    with pytest.raises(ConfigError, match="use_dft_loss and use_eaft_loss: each reshapes the per-token loss"):
        SFTConfig.from_dict({"use_dft_loss": True, "use_eaft_loss": True})
    pro = SFTConfig.from_dict({"finetuning_type": "freeze", "freeze_trainable_layers": 8,
                               "freeze_trainable_modules": "all", "use_llama_pro": True})  # fmt: skip
    assert pro.tune.use_llama_pro and pro.tune.freeze_trainable_layers == 8


def test_trainer_options_temper_sets_itself_are_named_or_refused() -> None:
    cfg = SFTConfig.from_dict({"disable_tqdm": True, "hub_model_id": "me/x", "activation_checkpointing": True,
                               "save_strategy": "epoch"})  # fmt: skip
    assert cfg.train.gradient_checkpointing and cfg.train.trainer_args == {"save_strategy": "epoch"}
    assert [n.split(" ")[1] for n in cfg.notes[:2]] == ["disable_tqdm", "hub_model_id"]
    assert cfg.notes[2:] == ["passed to the Trainer as given: save_strategy"]
    assert (
        SFTConfig.from_dict({"label_smoothing_factor": 0.1}).train.label_smoothing_factor == 0.1
    )  # sft's own
    with pytest.raises(ConfigError, match="compute the loss themselves"):
        PreferenceConfig.from_dict({"label_smoothing_factor": 0.1})  # DPO's is label_smoothing
    for key, value, says in (("remove_unused_columns", True, "no column is ever removed"),
                             ("fsdp", "full_shard auto_wrap", "launches FSDP itself"),
                             ("push_to_hub", True, "never uploads")):  # fmt: skip
        with pytest.raises(ConfigError, match=says):
            SFTConfig.from_dict({key: value})
    # a mapping on the command line is YAML; anything else for trainer_args is refused
    assert SFTConfig.from_sources(None, ["--trainer-args", "{data_seed: 3}"]).train.trainer_args == {
        "data_seed": 3
    }
    with pytest.raises(ConfigError, match="trainer_args: got 'steps', expected a mapping"):
        SFTConfig.from_dict({"trainer_args": "steps"})


def test_data_loading_knobs_of_the_peers_read() -> None:
    cfg = SFTConfig.from_dict({"streaming": True, "tokenized_path": "cache/", "lazy_tokenize": True})
    assert [n.split(" ")[1] for n in cfg.notes] == ["streaming", "tokenized_path", "lazy_tokenize"]
    # ms-swift drops an over-long row by default (delete); temper's names: drop, truncate
    assert SFTConfig.from_dict({"truncation_strategy": "delete"}).data.truncation == "drop"
    assert SFTConfig.from_dict({"truncation_strategy": "right"}).data.truncation == "truncate"
    with pytest.raises(ConfigError, match="truncation_strategy: got 'split'"):
        SFTConfig.from_dict({"truncation_strategy": "split"})


def test_llamafactory_newer_example_keys_read() -> None:
    # keys of LLaMA-Factory's newer train_full examples (hparam_sweep, qwen3_full_sft_*)
    cfg = SFTConfig.from_dict({"attn": "fa2", "pure_bf16": True, "include_mfu": True, "evaluation_strategy": "no",
                               "use_galore": False, "galore_rank": 16, "ray_num_workers": 4,
                               "warmup_steps": 0.1})  # fmt: skip
    assert cfg.model.attn_implementation == "flash_attention_2" and cfg.model.dtype == "bf16"
    assert cfg.train.warmup_steps == 0.1  # transformers 5 reads a warmup_steps below 1 as a ratio
    noted = [n.split(" ")[1] for n in cfg.notes]
    assert noted == ["include_mfu", "use_galore", "galore_rank", "ray_num_workers"]
    assert cfg.train.eval_strategy == "no"  # transformers 4's name of eval_strategy
    assert SFTConfig.from_dict({"warmup_steps": 20.0}).train.warmup_steps == 20
    with pytest.raises(ConfigError, match="warmup_steps: got 2.5"):
        SFTConfig.from_dict({"warmup_steps": 2.5})
    with pytest.raises(ConfigError, match="attn: got 'kernels-community/vllm-flash-attn3'"):
        SFTConfig.from_dict({"attn": "kernels-community/vllm-flash-attn3"})

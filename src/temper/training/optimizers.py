"""Optimizers beyond the Trainer's plain ones: Adam-mini, Muon and BAdam, which temper builds itself because the
Trainer has no name for them (package adam-mini, as LLaMA-Factory's `use_adam_mini` builds it; torch's Muon, as
LLaMA-Factory's `use_muon` and ms-swift's `--optimizer muon` train; BAdam in training/badam.py), and what GaLore /
APOLLO (the Trainer's own, config/optim_keys.py translates the peers' keys to them) need before anything loads and
on resume.

Adam-mini keeps one second-moment value per parameter block (a head of q/k, an output neuron of v, o and the
MLP, one token's embedding row) instead of one per weight, so its state is about half of AdamW's. It needs the
model's hidden size and head counts to cut those blocks; LLaMA-Factory reads them from the model config, so do we.
The Trainer is given `adamw_torch` for its own bookkeeping (its checks, the scheduler); `TemperTrainer.
create_optimizer` builds this one in its place.

Muon steps each 2-D weight of the transformer blocks by its momentum orthogonalised (five Newton-Schulz
iterations: the update's singular values all near one), and everything else (embeddings, LM head, norms) by AdamW,
as both peers do (Moonlight's recipe). Its learning rate is scaled per matrix by 0.2 * sqrt(max(rows, cols)) so
that the update's RMS matches AdamW's and the same learning rate serves both: torch's `adjust_lr_fn=
"match_rms_adamw"`, which is Moonlight's scaling. torch's momentum is an average where Moonlight's is a sum;
orthogonalising divides out that constant factor, so the steps are the same.

Example:
    >>> trainer_optim("adam_mini"), trainer_optim("adamw_torch_fused")
    ('adamw_torch', 'adamw_torch_fused')
"""

from __future__ import annotations

import importlib.util
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch

from temper.errors import ConfigError

TEMPER_OPTIMS = ("adam_mini", "muon", "badam")
# temper's optimizers' own settings, given through the Trainer's optim_args: name -> (type, default). Muon's are
# ms-swift's names; BAdam's LLaMA-Factory's without its badam_ prefix (training/badam.py; start_block -1: the
# switch mode's first).
OPTIM_ARGS: dict[str, dict[str, tuple[type, Any]]] = {
    "muon": {"momentum": (float, 0.95), "nesterov": (bool, True), "ns_steps": (int, 5)},
    "badam": {"switch_interval": (int, 50), "switch_mode": (str, "ascending"), "start_block": (int, -1),
              "verbose": (int, 0)},
}  # fmt: skip
OPTIM_ARGS_EXAMPLE = {
    "muon": "momentum=0.9,ns_steps=6",
    "badam": "switch_interval=100,switch_mode=descending",
}


def trainer_optim(name: str) -> str:
    """The optimizer name the Trainer's arguments get: its own, or adamw_torch for one temper builds."""
    return "adamw_torch" if name in TEMPER_OPTIMS else name


def check_temper_optim(name: str, tuning: str, optim_args: str | None = None) -> None:
    """Before anything loads: the optimizer exists here, its settings parse, and what it trains fits it."""
    if name == "muon":
        if not hasattr(torch.optim, "Muon"):
            raise ConfigError(
                f"optim: muon needs torch.optim.Muon (PyTorch 2.9 or later); this environment has torch "
                f"{torch.__version__}.",
                hint="pip install -U torch (temper's setup pins torch==2.13.0), or another optimizer.",
                key="optim",
            )
        optim_settings(name, optim_args)
        return
    if name == "badam":
        from temper.training.badam import check_badam

        check_badam(tuning, optim_settings(name, optim_args))
        return
    if tuning == "lora":
        raise ConfigError(
            f"optim: {name} with tuning lora: Adam-mini cuts the q/k weights into attention heads, and LoRA's "
            "adapters of them are not head-shaped (it fails at the first step).",
            hint="Use --tuning full or freeze with it, or an AdamW (the default) with LoRA.",
            key="optim",
        )
    require_package(name, "adam_mini", "adam-mini")


def require_package(optim: str, module: str, package: str) -> None:
    """The package an optimizer of temper's `optimizers` extra comes from is installed, or a ConfigError."""
    if importlib.util.find_spec(module) is None:
        raise ConfigError(
            f"optim: {optim} needs the {package} package, which is not installed in this environment.",
            hint=f"pip install {package} (temper's extra: pip install 'temper[optimizers]').",
            key="optim",
        )


def optim_settings(optim: str, optim_args: str | None) -> dict[str, Any]:
    """The settings of temper's `optim` (Muon's momentum / nesterov / ns_steps, BAdam's switch_interval / ...)
    from the Trainer's `optim_args` ("momentum=0.9,ns_steps=6"), each else its default."""
    from temper.config.foreign import is_true

    spec = OPTIM_ARGS[optim]
    out = {k: default for k, (_, default) in spec.items()}
    example = OPTIM_ARGS_EXAMPLE[optim]
    for item in filter(None, (optim_args or "").replace(" ", "").split(",")):
        key, _, value = item.partition("=")
        if key not in spec or not value:
            raise ConfigError(
                f"optim_args {optim_args!r}: optim {optim} takes {', '.join(f'{k}=...' for k in spec)}; "
                f"got {item!r}.",
                hint=f"E.g. --optim_args {example} (or leave optim_args out for the defaults).",
                key="optim_args",
            )
        kind = spec[key][0]
        try:
            if kind is bool and value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(value)
            out[key] = is_true(value) if kind is bool else kind(value)
        except ValueError:
            raise ConfigError(
                f"optim_args: {optim}'s {key} must be {kind.__name__}, got {value!r}.", key="optim_args"
            ) from None
    return out


class MuonAdamW(torch.optim.Optimizer):
    """torch's Muon over the 2-D weights of the transformer blocks and torch's AdamW over the rest, as one
    optimizer for the Trainer: its scheduler sets the learning rate of these groups, which are the two optimizers'
    own; a checkpoint holds both states."""

    def __init__(self, model: Any, args: Any) -> None:
        settings = optim_settings("muon", args.optim_args)
        muon, rest = muon_split(model)
        self.parts: dict[str, torch.optim.Optimizer] = {}
        if muon:
            self.parts["muon"] = torch.optim.Muon(
                muon, lr=args.learning_rate, weight_decay=args.weight_decay, adjust_lr_fn="match_rms_adamw",
                **settings,
            )  # fmt: skip
        if rest:
            self.parts["adamw"] = torch.optim.AdamW(
                rest, lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon,
                weight_decay=args.weight_decay,
            )  # fmt: skip
        super().__init__(self._groups(), {"lr": args.learning_rate})

    def _groups(self) -> list[dict[str, Any]]:
        return [g for part in self.parts.values() for g in part.param_groups]

    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for part in self.parts.values():
            part.step()
        return loss

    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        return {name: part.state_dict() for name, part in self.parts.items()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # type: ignore[override]
        if sorted(state_dict) != sorted(self.parts):
            raise ValueError(
                f"Muon checkpoint state holds {sorted(state_dict)}, expected {sorted(self.parts)}"
            )
        for name, part in self.parts.items():
            part.load_state_dict(state_dict[name])
        self.param_groups = self._groups()  # loading gives the parts new group dicts


def muon_split(model: Any) -> tuple[list[torch.nn.Parameter], list[torch.nn.Parameter]]:
    """(the trainable weights Muon steps, those AdamW steps): the peers' split, the matrices that are not the
    embedding or the head to Muon."""
    muon: list[torch.nn.Parameter] = []
    rest: list[torch.nn.Parameter] = []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (muon if p.ndim == 2 and "embed" not in name and "lm_head" not in name else rest).append(p)
    return muon, rest


def build(name: str, model: Any, args: Any, sharding: str | None, decay: set[str]) -> torch.optim.Optimizer:
    """The optimizer of one of TEMPER_OPTIMS over the model's trainable parameters; `sharding`: "fsdp" or
    "deepspeed" when one of them holds the weights (Adam-mini then reduces its blocks across processes under FSDP
    and ZeRO-3; Muon orthogonalises whole matrices, which neither hands the optimizer); `decay`: the names of the
    weights the Trainer decays (BAdam's groups)."""
    if name == "adam_mini":
        from transformers.integrations import is_deepspeed_zero3_enabled

        return adam_mini(model, args, sharding == "fsdp" or is_deepspeed_zero3_enabled())
    check_processes(name, args.world_size, sharding)
    if name == "badam":
        from temper.training.badam import BAdam

        return BAdam(model, args, decay, optim_settings(name, args.optim_args))
    return MuonAdamW(model, args)


def check_processes(optim: str, processes: int, sharding: str | None) -> None:
    """What temper's optimizers cannot do across processes: BAdam any of it (it switches which weights take
    gradients, and DDP, FSDP and DeepSpeed fix them when they wrap the model), Muon sharded (it orthogonalises
    whole matrices, and FSDP and DeepSpeed hand the optimizer flattened shards). Checked before a launch
    (`--nproc`, `--distributed`, `--deepspeed`) and again when the optimizer is built (a launcher of the user's)."""
    if optim == "badam" and (processes > 1 or sharding is not None):
        raise ConfigError(
            f"optim: badam with {processes} processes{f' under {sharding}' if sharding else ''}: BAdam switches "
            "which weights take gradients every few steps, and DDP, FSDP and DeepSpeed fix them when they wrap "
            "the model.",
            hint="Train BAdam in one process (it is made for one GPU), or use AdamW across processes.",
            key="optim",
        )
    if optim == "muon" and sharding is not None:
        raise ConfigError(
            f"optim: muon under {sharding}: Muon orthogonalises each weight matrix whole, and {sharding} hands "
            "the optimizer flattened shards of them.",
            hint="Train Muon with plain DDP (--nproc N without --distributed fsdp or --deepspeed), or use AdamW.",
            key="optim",
        )


def adam_mini(model: Any, args: Any, sharded: bool) -> Any:
    """Adam-mini over the model's trainable parameters, with the Trainer's learning rate, betas, epsilon and
    weight decay (LLaMA-Factory's `_create_adam_mini_optimizer`); `sharded`: FSDP or ZeRO-3 holds the weights in
    shards, which Adam-mini then reduces across processes."""
    from adam_mini import Adam_mini

    from temper.objectives.sft import unwrap_model

    config = unwrap_model(model).config
    return Adam_mini(
        named_parameters=[(n, p) for n, p in model.named_parameters() if p.requires_grad],
        lr=args.learning_rate,
        betas=(args.adam_beta1, args.adam_beta2),
        eps=args.adam_epsilon,
        weight_decay=args.weight_decay,
        model_sharding=sharded,
        dim=config.hidden_size,
        n_heads=config.num_attention_heads,
        n_kv_heads=getattr(config, "num_key_value_heads", None),
        verbose=False,
    )


def optimizer_state_classes(optim: str) -> AbstractContextManager[Any]:
    """Where a resumed run's optimizer.pt may hold more than tensors: GaLore's and APOLLO's state keeps a
    projector object per weight (plain numbers and one tensor), which the Trainer's weights-only load refuses.
    Those classes are allowed, for that load."""
    import torch

    if optim.startswith("galore_"):
        from galore_torch.galore_projector import GaLoreProjector

        return torch.serialization.safe_globals([GaLoreProjector])
    if optim.startswith("apollo_"):
        from apollo_torch.random_projector import GradientProjector
        from apollo_torch.svd_projector import GaLoreProjector as SVDProjector

        return torch.serialization.safe_globals([GradientProjector, SVDProjector])
    return nullcontext()


def check_lowrank_optim(optim: str, trainer_args: dict[str, Any], grad_accum: int, tuning: str) -> None:
    """A GaLore / APOLLO optimizer (the Trainer's names) checked before anything loads: its package, its target
    modules, no LoRA, no gradient accumulation for the layer-wise kind. The Trainer would find each only when
    it builds the optimizer, after the model and data loaded."""
    from transformers.utils import is_apollo_torch_available, is_galore_torch_available

    kind, package, available = (
        ("GaLore", "galore-torch", is_galore_torch_available())
        if optim.startswith("galore")
        else ("APOLLO", "apollo-torch", is_apollo_torch_available())
    )
    if not available:
        raise ConfigError(
            f"optim: {optim} needs the {package} package, which is not installed in this environment.",
            hint=f"pip install {package} (temper's extra: pip install 'temper[optimizers]').",
            key="optim",
        )
    if not trainer_args.get("optim_target_modules"):
        raise ConfigError(
            f"optim: {optim} needs optim_target_modules, the linear layers whose gradients {kind} projects.",
            hint="E.g. --optim_target_modules all-linear, or a list of names (q_proj,v_proj) or one regex.",
            key="optim_target_modules",
        )
    if tuning == "lora":
        raise ConfigError(
            f"optim: {optim} with tuning lora: {kind} projects the gradients of the weights that train, and "
            "LoRA's are its small adapters.",
            hint="Use --tuning full (or freeze) with it, or an ordinary optimizer with LoRA.",
            key="optim",
        )
    if optim.endswith("_layerwise") and grad_accum != 1:
        raise ConfigError(
            f"optim: {optim} steps each layer as its gradient arrives, so gradient_accumulation_steps must be 1 "
            f"(got {grad_accum}).",
            hint="Pass --gradient-accumulation-steps 1 (a larger batch instead), or the optimizer without "
            "_layerwise.",
            key="gradient_accumulation_steps",
        )

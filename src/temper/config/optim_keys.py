"""The peers' optimizer switches: LLaMA-Factory's `use_galore` / `use_apollo` (and ms-swift's `use_galore`) as the
Trainer's own optimizers of those names (packages galore-torch, apollo-torch); LLaMA-Factory's `use_adam_mini` and
`use_muon` (and ms-swift's `optimizer: muon`) as temper's `optim: adam_mini` / `optim: muon`; its `use_badam` (layer
mode) as temper's `optim: badam`. What each optimizer needs at run time is training/optimizers.py's.

LLaMA-Factory builds its GaLore optimizer itself (train/trainer_utils.py `_create_galore_optimizer`); the
Trainer has the same optimizers by name (`optim: galore_adamw`, `optim_target_modules`, `optim_args`), so a
LLaMA-Factory YAML becomes those three keys with LLaMA-Factory's defaults (rank 16, update interval 200, scale
2.0, projection std) and its base optimizer (adamw_torch -> galore_adamw, the 8-bit AdamWs -> galore_adamw_8bit,
adafactor -> galore_adafactor; `galore_layerwise` -> the `_layerwise` kind). `galore_target: all` is every linear
layer but the LM head, as LLaMA-Factory's find_all_linear_modules picks them. APOLLO the same way (rank 16,
interval 200, scale 32, random projection, channel-wise scaling; it wraps adamw_torch only). An ms-swift config
(it spells the tuning `train_type`) reads with ms-swift's GaLore settings and defaults (galore_target_modules,
rank 128, update_proj_gap 50, scale 1.0; galore_optim_per_parameter is the layer-wise kind).

Example:
    >>> values, notes = optimizer_keys({"use_galore": True, "finetuning_type": "full", "galore_rank": 8})
    >>> values["optim"], values["optim_args"]
    ('galore_adamw', 'rank=8,update_proj_gap=200,scale=2.0,proj_type=std')
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from temper.config.foreign import is_true as _true
from temper.errors import ConfigError


@dataclass(frozen=True)
class Method:
    """A peer's low-rank optimizer: its settings (the key suffixes after `PREFIX_`) with the peer's defaults,
    which become the Trainer's optim_args, which names the target modules and the layer-wise kind, which must
    stay off, and the peer's base optimizer -> the Trainer's."""

    name: str
    tool: str
    defaults: dict[str, Any]
    optim_args: dict[str, str]  # setting -> the Trainer's optim_args name
    optims: dict[str, str]
    target: str = "target"
    layerwise: str = "layerwise"
    off: dict[str, str] = field(default_factory=dict)  # settings the Trainer's has no counterpart for -> why


_GALORE_OPTIMS = {
    "adamw_torch": "galore_adamw",
    "adamw_torch_fused": "galore_adamw",
    "adamw_8bit": "galore_adamw_8bit",
    "adamw_bnb_8bit": "galore_adamw_8bit",
    "paged_adamw_8bit": "galore_adamw_8bit",
    "adafactor": "galore_adafactor",
}
# (tool, method) -> its settings: LLaMA-Factory's hparams/finetuning_args.py, ms-swift's trainers/arguments.py.
METHODS = {
    ("LLaMA-Factory", "galore"): Method(
        "GaLore", "LLaMA-Factory",
        {"target": "all", "rank": 16, "update_interval": 200, "scale": 2.0, "proj_type": "std", "layerwise": False},
        {"rank": "rank", "update_interval": "update_proj_gap", "scale": "scale", "proj_type": "proj_type"},
        _GALORE_OPTIMS,
    ),
    ("LLaMA-Factory", "apollo"): Method(
        "APOLLO", "LLaMA-Factory",
        {"target": "all", "rank": 16, "update_interval": 200, "scale": 32.0, "proj": "random", "proj_type": "std",
         "scale_type": "channel", "layerwise": False, "scale_front": False},
        {"rank": "rank", "update_interval": "update_proj_gap", "scale": "scale", "proj": "proj",
         "proj_type": "proj_type", "scale_type": "scale_type"},
        {"adamw_torch": "apollo_adamw", "adamw_torch_fused": "apollo_adamw"},
        off={"scale_front": "the Trainer's APOLLO applies its scale after the norm-growth limiter, never before"},
    ),
    # ms-swift's own GaLore; its Q-GaLore settings (proj_bits, ...) only matter with quantization, which is refused.
    ("ms-swift", "galore"): Method(
        "GaLore", "ms-swift",
        {"target_modules": None, "rank": 128, "update_proj_gap": 50, "scale": 1.0, "proj_type": "std",
         "optim_per_parameter": False, "with_embedding": False, "quantization": False, "proj_quant": False,
         "proj_bits": 4, "proj_group_size": 256, "cos_threshold": 0.4, "gamma_proj": 2, "queue_size": 5},
        {"rank": "rank", "update_proj_gap": "update_proj_gap", "scale": "scale", "proj_type": "proj_type"},
        {**_GALORE_OPTIMS, "adamw_hf": "galore_adamw"},
        target="target_modules", layerwise="optim_per_parameter",
        off={"with_embedding": "the Trainer's GaLore projects linear layers only",
             "quantization": "Q-GaLore's quantized weights and projections are not in the Trainer's GaLore",
             "proj_quant": "Q-GaLore's quantized weights and projections are not in the Trainer's GaLore"},
    ),
}  # fmt: skip
# LLaMA-Factory's switches for the optimizers temper builds (training/optimizers.py): use_NAME -> optim
SWITCHES = {"adam_mini": "adam_mini", "muon": "muon"}
SWIFT_REFUSED = {
    "muonclip": "MuonClip (Muon with Kimi K2's attention-logit clipping) is not in temper; --optim muon is plain Muon",
    "multimodal": "its vit_lr / aligner_lr set learning rates of a multimodal model's parts; temper trains text models",
}
# `galore_target: all`: every module but the LM head (the Trainer keeps the linear ones of a regex's matches).
ALL_BUT_HEAD = r"(?!.*lm_head).*"


def optimizer_keys(values: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(values with a true `use_galore` / `use_apollo` and its settings turned into optim / optim_target_modules /
    optim_args, notes). Values without one come back unchanged."""
    norm = {k.replace("-", "_"): k for k in values}
    if "optimizer" in norm:
        values, norm = _swift_plugin(values, norm)
    on = [
        m
        for m in ("galore", "apollo", "badam", *SWITCHES)
        if f"use_{m}" in norm and _true(values[norm[f"use_{m}"]])
    ]
    if not on:
        return values, []
    prefix = on[0]
    use = f"use_{prefix}"
    if len(on) > 1:
        raise ConfigError(
            f"{' and '.join(f'use_{m}' for m in on)}: one optimizer at a time.",
            # LLaMA-Factory refuses two of GaLore, APOLLO and BAdam, and otherwise builds the first in its order
            hint=f"Keep one of them true (LLaMA-Factory would refuse the pair or build only {use}).",
            key=use,
        )
    if prefix == "badam":
        return _badam(values, norm)
    if prefix in SWITCHES:  # LLaMA-Factory builds these whatever optim says
        out = {k: v for k, v in values.items() if k not in (norm[use], norm.get("optim"))}
        return {**out, "optim": SWITCHES[prefix]}, [f"{use} -> optim {SWITCHES[prefix]}"]
    tool = _tool(norm, prefix)
    method = METHODS[(tool, prefix)]
    _refuse_what_cannot_be_honoured(values, norm, prefix, method)
    out = dict(values)
    settings = {
        k: out.pop(norm[f"{prefix}_{k}"]) if f"{prefix}_{k}" in norm else v
        for k, v in method.defaults.items()
    }
    numbers = {"rank": int, "update_interval": int, "update_proj_gap": int, "scale": float}
    for key, kind in ((k, t) for k, t in numbers.items() if k in settings):
        try:
            settings[key] = kind(settings[key])
        except (TypeError, ValueError):
            raise ConfigError(
                f"{prefix}_{key}: got {settings[key]!r}; expected a{'n integer' if kind is int else ' number'}.",
                key=f"{prefix}_{key}",
            ) from None
    del out[norm[use]]
    base = str(out.pop(norm["optim"])) if "optim" in norm else "adamw_torch"  # LLaMA-Factory's default
    if base not in method.optims:
        raise ConfigError(
            f"optim: {base!r} with {use}; {method.tool}'s {method.name} wraps one of {', '.join(method.optims)}.",
            hint=f"Write optim: adamw_torch ({method.tool}'s default)"
            + (", adamw_8bit or adafactor." if prefix == "galore" else "."),
            key="optim",
        )
    optim = method.optims[base] + ("_layerwise" if _true(settings[method.layerwise]) else "")
    # the targets: a comma-separated string, a list (ms-swift), or all / None: every linear layer
    given = settings[method.target]
    target = (
        ",".join(given) if isinstance(given, list) else "all" if given in (None, "None", "") else str(given)
    )
    # Names as LLaMA-Factory matches them (a module whose name contains one), as one regex: the Trainer keeps the
    # linear layers of a regex's matches quietly, where a list warns about every other module it matches.
    names = "|".join(re.escape(t.strip()) for t in target.split(",") if t.strip())
    args = ",".join(f"{arg}={settings[k]}" for k, arg in method.optim_args.items())
    out.update(
        optim=optim,
        optim_target_modules=ALL_BUT_HEAD if target == "all" else f".*(?:{names}).*",
        optim_args=args,
    )
    shown = "all linear layers but lm_head" if target == "all" else target
    note = (
        f"{use} -> optim {optim} on {shown} ({args}): the Trainer's {method.name}, {method.tool}'s settings"
    )
    layerwise = " (layer-wise: each layer steps as its gradient arrives: no gradient clipping, no grad_norm)"
    return out, [note + (layerwise if optim.endswith("_layerwise") else "")]


def _badam(values: dict[str, Any], norm: dict[str, str]) -> tuple[dict[str, Any], list[str]]:
    """LLaMA-Factory's `use_badam` and its badam_* settings as temper's optim badam (training/badam.py) and its
    optim_args; its ratio-wise mode is refused."""
    out = {k: v for k, v in values.items() if not k.replace("-", "_").startswith(("badam_", "use_badam"))}
    given = {k[len("badam_") :]: values[v] for k, v in norm.items() if k.startswith("badam_")}
    mode = str(given.pop("mode", "layer"))
    if mode != "layer":
        raise ConfigError(
            f"badam_mode: {mode!r}: temper has layer-wise BAdam (badam_mode: layer, LLaMA-Factory's default); "
            "the ratio-wise kind masks part of every weight and needs the Trainer's gradient clipping replaced.",
            hint="Write badam_mode: layer (one decoder layer trains at a time), or drop it.",
            key="badam_mode",
        )
    notes = [
        f"ignored: badam_{k} (ratio-wise BAdam's)"
        for k in ("update_ratio", "mask_mode")
        if given.pop(k, None)
    ]
    unknown = [k for k in given if k not in ("start_block", "switch_mode", "switch_interval", "verbose")]
    if unknown:
        raise ConfigError(
            f"badam_{unknown[0]}: not a LLaMA-Factory BAdam setting; expected badam_mode, badam_start_block, "
            "badam_switch_mode, badam_switch_interval, badam_update_ratio, badam_mask_mode or badam_verbose.",
            key=f"badam_{unknown[0]}",
        )
    base = str(out.pop(norm["optim"])) if "optim" in norm else "adamw_torch"
    if base not in ("adamw_torch", "adamw_torch_fused"):
        raise ConfigError(
            f"optim: {base!r} with use_badam: temper's BAdam steps each block with torch's AdamW.",
            hint="Write optim: adamw_torch (LLaMA-Factory's default), or drop use_badam.",
            key="optim",
        )
    if "optim_args" in norm:
        raise ConfigError(
            "use_badam with optim_args: both set the BAdam optimizer.",
            hint="Keep the badam_* keys.",
            key="use_badam",
        )
    args = ",".join(f"{k}={v}" for k, v in given.items() if v is not None)
    out.update(optim="badam", **({"optim_args": args} if args else {}))
    return out, [f"use_badam -> optim badam{f' ({args})' if args else ''}", *notes]


def _swift_plugin(values: dict[str, Any], norm: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """ms-swift's `optimizer` (its optimizer plugin, optimizers/mapping.py): muon is temper's optim muon (its
    optim_args, momentum / nesterov / ns_steps, are the same); galore and lorap are what ms-swift picks itself for
    use_galore and lorap_lr_ratio, which temper reads on their own; default is the Trainer's optim."""
    key = norm["optimizer"]
    plugin = str(values[key]).strip().lower()
    out = {k: v for k, v in values.items() if k != key}
    if plugin == "muon":
        out[norm.get("optim", "optim")] = "muon"
    elif plugin == "galore" and not ("use_galore" in norm and _true(values[norm["use_galore"]])):
        raise ConfigError(
            "optimizer: galore is ms-swift's plugin for use_galore, which is not on.",
            hint="Pass --use_galore true (with its galore_* settings), or drop --optimizer.",
            key="optimizer",
        )
    elif plugin == "lorap" and "lorap_lr_ratio" not in norm:
        raise ConfigError(
            "optimizer: lorap is ms-swift's plugin for LoRA+, and lorap_lr_ratio is not given.",
            hint="Pass --lorap_lr_ratio 16 (LoRA+'s ratio of the B matrices' learning rate), or drop --optimizer.",
            key="optimizer",
        )
    elif plugin not in ("galore", "lorap", "default", "none", ""):
        why = SWIFT_REFUSED.get(plugin, "not an ms-swift optimizer plugin temper has")
        raise ConfigError(
            f"optimizer: {values[key]!r}: {why}; expected muon, galore, lorap or default.",
            hint="temper's optimizers are --optim's (adamw_torch_fused, adafactor, muon, adam_mini, galore_adamw, ...).",
            key="optimizer",
        )
    return out, {k.replace("-", "_"): k for k in out}


def _tool(norm: dict[str, str], prefix: str) -> str:
    """Whose GaLore settings a config holds: a setting only one peer has decides; without one, a YAML or
    args.json that spells the tuning ms-swift's way (train_type) is ms-swift's, anything else LLaMA-Factory's."""
    if prefix != "galore":
        return "LLaMA-Factory"  # ms-swift has no APOLLO
    given = {k[len("galore_") :] for k in norm if k.startswith("galore_")}
    lf, swift = METHODS[("LLaMA-Factory", "galore")].defaults, METHODS[("ms-swift", "galore")].defaults
    only_lf, only_swift = given & (lf.keys() - swift.keys()), given & (swift.keys() - lf.keys())
    if only_lf and only_swift:
        raise ConfigError(
            f"GaLore settings of two tools: LLaMA-Factory's {sorted(only_lf)} and ms-swift's {sorted(only_swift)}.",
            hint="Keep one tool's spelling (LLaMA-Factory: galore_target, galore_update_interval, galore_layerwise; "
            "ms-swift: galore_target_modules, galore_update_proj_gap, galore_optim_per_parameter).",
            key="use_galore",
        )
    return "ms-swift" if only_swift or (not only_lf and "train_type" in norm) else "LLaMA-Factory"


def _refuse_what_cannot_be_honoured(
    values: dict[str, Any], norm: dict[str, str], prefix: str, method: Method
) -> None:
    use = f"use_{prefix}"
    tuning = next(
        (str(values[norm[k]]) for k in ("finetuning_type", "train_type", "tuning") if k in norm), "lora"
    )
    if tuning not in ("full", "freeze"):
        raise ConfigError(
            f"{use} with tuning {tuning}: {method.name} projects the gradients of the weights that train, and "
            "LoRA's are its small adapters (LLaMA-Factory refuses the pair too).",
            hint=f"Train full (or freeze) with {use}: finetuning_type / train_type / --tuning full; or remove {use}.",
            key=use,
        )
    if "optim_args" in norm or "optim_target_modules" in norm:
        raise ConfigError(
            f"{use} with optim_args / optim_target_modules: both set the {method.name} optimizer.",
            hint=f"Keep {method.tool}'s {prefix}_* keys, or the Trainer's optim keys, not both.",
            key=use,
        )
    keys = [f"{prefix}_{k}" for k in method.defaults]
    unknown = [k for k in norm if k.startswith(f"{prefix}_") and k not in keys]
    if unknown:
        raise ConfigError(
            f"{unknown[0]}: not a {method.tool} {method.name} setting; expected one of {', '.join(keys)}.",
            key=unknown[0],
        )
    for setting, why in method.off.items():
        key = f"{prefix}_{setting}"
        if key in norm and _true(values[norm[key]]):
            raise ConfigError(
                f"{key}: true, but {why}.", hint=f"Remove {key} (false is {method.tool}'s default).", key=key
            )

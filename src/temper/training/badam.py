"""BAdam, layer-wise (package badam, as LLaMA-Factory's `use_badam` builds it): full fine-tuning one transformer
block at a time. Only the active block's weights take gradients and Adam state (an fp32 copy of that block, its
moments); every `switch_interval` steps the next block becomes active and the state starts afresh. The
embedding, the head and the final norm stay frozen (BAdam's blocks are the decoder layers).

badam's `BlockOptimizer` keeps the block it steps and the step count in itself, not in its state dict, so a
checkpoint of it alone resumes on the wrong block with another block's moments. `BAdam` here wraps it and saves
both beside the moments; loading makes that block active again before the moments go back.

LLaMA-Factory's ratio-wise BAdam (`badam_mode: ratio`, a sparse mask per weight) needs the Trainer's gradient
clipping replaced by a sparse-aware one; it is refused (config/optim_keys.py).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from temper.errors import ConfigError
from temper.training.optimizers import require_package

SWITCH_MODES = ("ascending", "descending", "random", "fixed")


def check_badam(tuning: str, settings: dict[str, Any]) -> None:
    """Before anything loads: the package, full tuning, and settings BlockOptimizer takes."""
    if tuning != "full":
        raise ConfigError(
            f"optim: badam with tuning {tuning}: BAdam picks which block of the model trains itself, one "
            "decoder layer at a time, over full weights.",
            hint="Use --tuning full with it (LLaMA-Factory refuses LoRA with BAdam too), or another optimizer.",
            key="optim",
        )
    require_package("badam", "badam", "badam")
    if settings["switch_mode"] not in SWITCH_MODES:
        raise ConfigError(
            f"optim_args: badam's switch_mode {settings['switch_mode']!r}; expected one of {', '.join(SWITCH_MODES)}.",
            key="optim_args",
        )
    if settings["switch_interval"] == 0 or settings["switch_interval"] < -1:
        raise ConfigError(
            f"optim_args: badam's switch_interval {settings['switch_interval']}; expected a number of steps "
            "(1 or more), or -1 to keep the first block.",
            key="optim_args",
        )


class BAdam(torch.optim.Optimizer):
    """badam's BlockOptimizer over the Trainer's optimizer (decay and no-decay groups, as the Trainer's own),
    with a state dict that resumes on the block it was saved on."""

    def __init__(self, model: Any, args: Any, decay_names: set[str], settings: dict[str, Any]) -> None:
        from badam import BlockOptimizer
        from transformers import Trainer

        optim_cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(args, model)
        named = list(model.named_parameters())
        groups = [  # BlockOptimizer reads the weight decay of the first group
            {"params": [p for n, p in named if n in decay_names], "weight_decay": args.weight_decay},
            {"params": [p for n, p in named if n not in decay_names], "weight_decay": 0.0},
        ]
        interval = settings["switch_interval"]
        from temper.tuning import decoder_layers

        blocks = len(decoder_layers(model))
        if settings["start_block"] >= blocks:
            raise ConfigError(
                f"optim_args: badam's start_block {settings['start_block']}; the model has {blocks} decoder layers "
                f"(0 to {blocks - 1}).",
                key="optim_args",
            )
        with warnings.catch_warnings():
            # fp32 weights (bf16 off): BlockOptimizer warns with every weight's name that it expects half
            # precision; the run's own line says what fp32 costs here.
            warnings.filterwarnings("ignore", "BAdam expect model to be loaded in fp16/bf16")
            self.block = BlockOptimizer(
                base_optimizer=optim_cls([g for g in groups if g["params"]], **kwargs),
                named_parameters_list=named,
                switch_block_every=interval if interval > 0 else 2**62,  # -1: never switch
                start_block=settings["start_block"] if settings["start_block"] >= 0 else None,
                switch_mode=settings["switch_mode"],
                verbose=settings["verbose"],
            )
        super().__init__(self.block.param_groups, self.block.defaults)

    @property
    def active_block(self) -> int:
        return int(self.block.block_prefix_list.index(self.block.active_param_prefixs))

    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.block.step()
        return loss

    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        return {
            "base": self.block.base_optimizer.state_dict(),
            "active_block": self.active_block,
            "next_block": int(self.block.current_block_idx),
            "block_order": [int(i) for i in getattr(self.block, "block_order", [])],
            "global_step": int(self.block.global_step),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # type: ignore[override]
        if "active_block" not in state_dict:
            raise ValueError(
                "this optimizer state is not BAdam's (no active_block): was the run trained with it?"
            )
        block = self.block
        block.current_block_idx = state_dict["active_block"]
        if block.switch_mode == "random":  # switching pops the next block from the end of the order
            block.block_order = [*state_dict["block_order"], state_dict["next_block"]]
        block.switch_trainable_params(verbose=block.verbose)  # the saved block, with fresh fp32 copies
        block.base_optimizer.load_state_dict(state_dict["base"])
        block.global_step = state_dict["global_step"]


def describe(settings: dict[str, Any], layers: int, dtype: str, compiled: bool = False) -> str:
    """The run's line for BAdam: which blocks train, how often they change, what fp32 weights and compiling
    cost."""
    interval = settings["switch_interval"]
    every = "never switching" if interval < 0 else f"switching every {interval} steps"
    line = (
        f"optim badam: one of {layers} decoder layers trains at a time ({settings['switch_mode']}, {every}); "
        "the embedding, head and final norm stay frozen"
    )
    if dtype == "fp32":
        line += " (fp32 weights: BAdam saves the most over bf16 ones, with only the active layer in fp32)"
    if compiled:  # torch.compile guards on requires_grad: the layers that change state compile again
        line += "; warning: with --torch-compile every switch recompiles the two layers it changes"
    return line

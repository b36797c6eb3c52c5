"""Which parameters train and how (LoRA and its variants, freeze, full; QLoRA; LLaMA Pro): the `tune` section
every training verb shares. tuning/ applies it to a model."""

from __future__ import annotations

from dataclasses import dataclass

from temper.config.base import check_choice, check_range, field
from temper.errors import ConfigError


@dataclass
class TuneCfg:
    tuning: str = field("lora", help="lora, freeze (train the last N layers) or full")
    lora_rank: int = field(8, help="LoRA rank r")
    lora_alpha: int | None = field(None, help="LoRA alpha (default: 2 x rank)")
    lora_dropout: float = field(0.0, help="LoRA dropout")
    lora_target: list[str] = field(
        ["all-linear"], help="modules to adapt: all-linear or names (q_proj,v_proj)"
    )
    use_rslora: bool = field(False, help="rank-stabilised LoRA scaling (alpha / sqrt(r))")
    use_dora: bool = field(False, help="weight-decomposed LoRA (DoRA)")
    freeze_trainable_layers: int = field(
        2, help="with tuning=freeze: how many last layers train (negative: the first ones)"
    )
    freeze_trainable_modules: list[str] = field(
        ["all"],
        help="with tuning=freeze: the parts of those layers that train: all, or names (self_attn,mlp)",
    )
    freeze_extra_modules: list[str] = field(
        [], help="with tuning=freeze: modules outside the layers that train too (embed_tokens, norm, lm_head)"
    )
    use_llama_pro: bool = field(
        False,
        help="LLaMA Pro: only the layers `temper export --expand-blocks N` inserted train (freeze: in full; lora: "
        "their adapters); freeze_trainable_layers is N",
    )
    expand_blocks: int = field(
        0,
        help="LLaMA Pro in one run (ms-swift's train_type llamapro): insert N pass-through layers as the model "
        "loads and train only them (with tuning freeze; the run saves the expanded model)",
    )
    additional_target: list[str] = field(
        [],
        help="with tuning=lora: modules trained in full and saved in the adapter (e.g. embed_tokens,lm_head); "
        "peft's and ms-swift's modules_to_save",
    )
    quantization: str | None = field(None, help="QLoRA base weights: 4bit or 8bit (needs bitsandbytes)")
    quantization_type: str = field("nf4", help="QLoRA 4bit data type: nf4 or fp4")
    double_quantization: bool = field(True, help="QLoRA 4bit: quantize the quantization constants too")
    loraplus_lr_ratio: float | None = field(
        None,
        help="LoRA+: the B matrices learn at learning_rate x this (the paper suggests 16; then halve the "
        "learning rate); ms-swift's lorap_lr_ratio",
    )
    loraplus_lr_embedding: float = field(1e-6, help="LoRA+: learning rate of LoRA layers on embeddings")
    pissa_init: bool = field(False, help="PiSSA: LoRA starts from each weight's principal singular vectors (the "
                             "base keeps the residual); saved as a plain LoRA of rank 2 x lora_rank")  # fmt: skip
    pissa_iter: int = field(16, help="PiSSA: fast-SVD iterations (-1: the full SVD)")

    def __post_init__(self) -> None:
        if self.lora_target == ["all"]:  # LLaMA-Factory's spelling of all-linear
            self.lora_target = ["all-linear"]
        check_choice("tuning", self.tuning, ["lora", "freeze", "full"])
        check_range("lora_rank", self.lora_rank, 1, None)
        check_range("lora_dropout", self.lora_dropout, 0, 1)
        check_choice("quantization", self.quantization, [None, "4bit", "8bit"])
        check_choice("quantization_type", self.quantization_type, ["nf4", "fp4"])
        if self.loraplus_lr_ratio is not None and self.loraplus_lr_ratio <= 0:
            raise ConfigError(
                f"loraplus_lr_ratio: got {self.loraplus_lr_ratio!r}, expected a positive ratio (1 is plain LoRA).",
                key="loraplus_lr_ratio",
            )
        if self.pissa_init and (self.tuning != "lora" or self.quantization or self.use_dora):
            raise ConfigError(
                f"pissa_init: PiSSA initialises plain LoRA on float weights; here tuning={self.tuning}, "
                f"quantization={self.quantization}, use_dora={self.use_dora}.",
                hint="Use --tuning lora without --quantization and --use-dora, or remove --pissa-init.",
                key="pissa_init",
            )
        check_range("pissa_iter", self.pissa_iter, -1, None)
        check_range("expand_blocks", self.expand_blocks, 0, None)
        if self.expand_blocks and self.tuning != "freeze":
            raise ConfigError(
                f"expand_blocks: {self.expand_blocks} inserted layers train in full, with tuning freeze; tuning is "
                f"{self.tuning}.",
                hint="Pass --tuning freeze (the other layers stay frozen), or expand first with `temper export "
                "--expand-blocks N` and train that model with --use-llama-pro true.",
                key="expand_blocks",
            )
        if self.use_llama_pro and self.tuning == "full":
            raise ConfigError(
                "use_llama_pro: LLaMA Pro trains the inserted layers only, and tuning full trains every layer.",
                hint="Use --tuning freeze (or lora) with --freeze-trainable-layers N, or drop --use-llama-pro.",
                key="use_llama_pro",
            )
        if self.loraplus_lr_ratio is not None and self.tuning != "lora":
            raise ConfigError(
                f"loraplus_lr_ratio: LoRA+ sets the learning rate of LoRA's B matrices, and tuning is {self.tuning}.",
                hint="Use --tuning lora, or remove --loraplus-lr-ratio.",
                key="loraplus_lr_ratio",
            )

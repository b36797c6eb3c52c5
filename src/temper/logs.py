"""Log lines of other libraries that tell a temper user nothing, dropped by their exact message.

Installed when `temper` is imported (`drop_library_notices`), before any of those libraries is: a logger keeps its
filters when the library later creates it by name. Every other record of those loggers passes.
"""

from __future__ import annotations

import logging

# logger name -> start of the one message dropped from it
NOTICES = {
    # bitsandbytes, imported by peft in every run once it is installed (temper's qlora extra), tries on a CPU
    # with AVX512-BF16 to fetch a faster 4-bit matmul from the Hugging Face hub at import. Offline (temper's
    # default) or without trust in that repository it cannot, warns, and uses its own kernel: every temper run on
    # such a CPU, QLoRA or not, began with a warning about a download nobody asked for.
    "bitsandbytes.backends.cpu.ops": "Failed to load CPU gemm_4bit_forward from kernels-community",
    # DeepSpeed, once installed, is imported by accelerate during training (to ask whether the model is a
    # DeepSpeed engine), and its import detects the device and logs this line on stdout, DeepSpeed used or not;
    # temper's own summary already names the device and dtype. Its logger ("DeepSpeed") is set up by its import
    # with logging.getLogger, which keeps the filter.
    "DeepSpeed": "Setting accelerator to CPU.",
    # The Trainer, resuming a full fine-tune of a model whose head is tied to its embedding (SmolLM2): the
    # checkpoint rightly has no separate lm_head.weight, the Trainer reads that as missing (it only knows the
    # models that list their tied keys in _keys_to_ignore_on_save), and the head, being the embedding's tensor,
    # is loaded with it (the resume tests continue the same curve). Only that exact key list is dropped.
    "transformers.trainer": "There were missing keys in the checkpoint model loaded: ['lm_head.weight'].",
}


class _DropNotice(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefix)


def drop_library_notices() -> None:
    for name, prefix in NOTICES.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropNotice) for f in logger.filters):
            logger.addFilter(_DropNotice(prefix))

"""Regional torch.compile of a model's repeated blocks, in place.

Example:
    >>> compile_blocks(model)  # doctest: +SKIP
    30
"""

from __future__ import annotations

from typing import Any

import torch

from temper.errors import ConfigError


def compile_blocks(model: Any) -> int:
    """torch.compile every block of the model's repeated-block list in place; returns how many.

    Regional compilation (as in accelerate's `compile_regions`, but in place so state-dict keys and the peft
    wrapper stay as they are): the blocks share one class, so the compiled code of the first serves them all,
    and a 30-block model compiles in tens of seconds rather than minutes. dynamic=True: batches grouped by
    length change the sequence length every step, which must not trigger a recompile each time.
    """
    import shutil

    if not torch.cuda.is_available() and not (shutil.which("c++") or shutil.which("g++")):
        raise ConfigError(
            "torch_compile: true needs a C++ compiler on CPU (inductor builds its kernels with it); none found.",
            hint="Install one (Debian/Ubuntu: apt-get install g++) or run without --torch-compile.",
            key="torch_compile",
        )
    for module in model.modules():
        blocks = list(module.children()) if isinstance(module, torch.nn.ModuleList) else []
        if len(blocks) > 1 and len({type(b) for b in blocks}) == 1:
            for block in blocks:
                block.compile(dynamic=True)
            return len(blocks)
    raise ConfigError(
        f"torch_compile: no list of repeated blocks found in {type(model).__name__}.",
        hint="Run without --torch-compile for this model.",
        key="torch_compile",
    )

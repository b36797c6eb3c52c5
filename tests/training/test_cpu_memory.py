"""keep_freed_memory: a training-like allocation pattern stops page-faulting its memory in every step.

Each case runs in a fresh interpreter (mallopt is process-wide and must not leak into other tests) and counts
the process's minor page faults over repeated "steps" that allocate and free ~200 MB of tensors.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

STEP = """
import json, resource, sys
import torch
from temper.training.cpu_memory import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "tuned" else None
def step():
    # activations of a small model: tensors of 1-16 MB held until the "backward", then all freed
    held = [torch.ones(256 * 1024 * (1 + i % 16)) for i in range(24)]
    big = torch.ones(60 * 1024 * 1024 // 4)  # a full-vocabulary logits block, above glibc's mmap threshold
    return sum(float(t[0]) for t in held) + float(big[0])
step(); step()  # warm-up: the heap grows to the step's size
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"applied": applied, "faults": faults}))
"""


def _faults(mode: str) -> tuple[bool | None, int]:
    out = subprocess.run([sys.executable, "-c", STEP, mode], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result["applied"], int(result["faults"])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the settings are glibc's")
def test_freed_memory_is_reused_instead_of_faulted_in_again() -> None:
    _, default = _faults("default")
    applied, tuned = _faults("tuned")
    assert applied is True
    # ten steps touch ~2.3 GB: with glibc's defaults most of it is faulted in afresh (4 KiB pages);
    # measured here: 192k faults with the defaults, 15k (one growth of the heap) with the settings
    assert default > 100_000
    assert tuned < default / 5, (tuned, default)

"""Library log lines that say nothing to a temper user are dropped; the same loggers' other lines are not."""

from __future__ import annotations

import logging

import pytest

import temper  # noqa: F401  (installs the filters)
from temper.logs import NOTICES


def test_the_bitsandbytes_hub_kernel_notice_is_dropped_and_nothing_else(
    caplog: pytest.LogCaptureFixture,
) -> None:
    name = "bitsandbytes.backends.cpu.ops"
    logger = logging.getLogger(name)
    with caplog.at_level(logging.WARNING, logger=name):
        logger.warning("%s: Kernel repository could not verify publisher trust status.", NOTICES[name])
        logger.warning("a real bitsandbytes problem")
    assert [r.getMessage() for r in caplog.records] == ["a real bitsandbytes problem"]


def test_a_bitsandbytes_import_prints_no_hub_notice() -> None:
    # On a CPU with AVX512-BF16 the import itself tries the hub (elsewhere it does not, and this passes too).
    import subprocess
    import sys

    pytest.importorskip("bitsandbytes")  # the qlora extra, which make test installs
    code = "import temper, peft, bitsandbytes"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "kernels-community" not in proc.stderr + proc.stdout

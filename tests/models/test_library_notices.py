"""Library log lines that say nothing to a temper user are dropped; the same loggers' other lines are not."""

from __future__ import annotations

import logging

import pytest

import temper  # noqa: F401  (installs the filters)
from temper.logs import NOTICES


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.mark.parametrize("name", sorted(NOTICES))
def test_each_notice_is_dropped_and_nothing_else(name: str) -> None:
    # A handler of its own on the logger: DeepSpeed's does not propagate to the root once DeepSpeed is imported.
    logger, seen = logging.getLogger(name), _Collect()
    logger.addHandler(seen)
    try:
        logger.warning("%s and the rest of that line.", NOTICES[name])
        logger.warning("a real problem")
    finally:
        logger.removeHandler(seen)
    assert seen.messages == ["a real problem"]


def test_a_bitsandbytes_import_prints_no_hub_notice() -> None:
    # On a CPU with AVX512-BF16 the import itself tries the hub (elsewhere it does not, and this passes too).
    import subprocess
    import sys

    pytest.importorskip("bitsandbytes")  # the qlora extra, which make test installs
    code = "import temper, peft, bitsandbytes"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "kernels-community" not in proc.stderr + proc.stdout

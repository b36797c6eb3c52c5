"""`make demo`: ask the bundled model who it is, teach it a new identity with LoRA, ask again.

Runs offline on a laptop CPU in a few minutes: configs/demo.yaml trains on LLaMA-Factory's identity set
(91 rows with {{name}}/{{author}} filled as "Ember" / "the temper team").
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

from rich.console import Console

from temper.cli import main as cli

CONFIG = Path("configs/demo.yaml")
RUN_DIR = Path("runs/demo")
QUESTION = "Who are you?"


def main() -> int:
    console = Console()
    data = Path("../shared/data/llamafactory/identity.json")
    if not data.exists():
        console.print(
            f"[red]error:[/] {data} not found: the demo reads the identity set from ../shared/data."
        )
        return 2
    start = time.perf_counter()
    console.rule("[bold]1. the bundled model, before training")
    console.print(f"[bold]Q:[/] {QUESTION}")
    if cli(["chat", "smollm2-135m-instruct", "--query", QUESTION]) != 0:
        return 1
    console.rule("[bold]2. LoRA fine-tune on the identity set (temper sft configs/demo.yaml)")
    if RUN_DIR.exists():
        shutil.rmtree(RUN_DIR)  # the demo always shows a fresh run
    if cli(["sft", str(CONFIG)]) != 0:
        return 1
    console.rule(f"[bold]3. the fine-tuned model (temper chat {RUN_DIR} --query ...)")
    console.print(f"[bold]Q:[/] {QUESTION}")
    code = cli(["chat", str(RUN_DIR), "--query", QUESTION])
    console.print(f"\n[dim]demo finished in {time.perf_counter() - start:.0f} s; run dir: {RUN_DIR}[/]")
    return code


if __name__ == "__main__":
    sys.exit(main())

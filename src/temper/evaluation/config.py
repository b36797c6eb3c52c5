"""`temper eval` configuration: the shared ModelCfg plus one EvalCfg section (YAML keys = `--flags`).

Example:
    >>> from temper.evaluation.config import EvalConfig
    >>> cfg = EvalConfig.from_sources(None, ["--eval-dataset", "ceval", "--limit", "5"])
    >>> cfg.eval.eval_dataset, cfg.eval.limit
    ('ceval', 5)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from temper.config.base import ComposedConfig, check_choice, check_range, field
from temper.config.sections import ModelCfg
from temper.errors import ConfigError

EVAL_DATASETS = ("general_mcq", "general_qa", "ceval", "cmmlu", "mmlu", "ppl")
MCQ_MODES = ("logits", "generate")


@dataclass
class EvalCfg:
    eval_dataset: str = field("general_mcq", help=f"what to evaluate: {', '.join(EVAL_DATASETS)}")
    dataset_args: dict[str, Any] = field(
        {},
        help='JSON as in EvalScope: {"general_mcq": {"local_path": DIR, "subset_list": [..], "few_shot_num": K}}',
    )
    data_dir: str | None = field(
        None, help="benchmark folder (ceval/cmmlu/mmlu) or general_mcq/general_qa folder"
    )
    subset: list[str] = field(
        [], help="subjects/subsets to evaluate (default: all found); comma-separated or repeated"
    )
    limit: int | None = field(None, help="evaluate at most N items per subset (the first N, in file order)")
    few_shot: int | None = field(None, help="few-shot examples from the dev split (default 0)")
    mcq_mode: str = field(
        "logits", help="logits: compare the option letters' log-probs; generate: parse a generated letter"
    )
    per_device_eval_batch_size: int = field(8, help="prompts per forward pass / generate call")
    max_new_tokens: int | None = field(
        None, help="generation budget (default: 256 for general_qa, 16 for MCQ generate)"
    )
    max_length: int = field(
        2048, help="longest prompt in tokens (longer prompts are an error); ppl window size"
    )
    chat_template: str = field(
        "auto", help="wrap prompts in the chat template: auto (when the tokenizer has one), on, off"
    )
    system: str | None = field(None, help="system prompt for chat-template prompts")
    prefix_cache: bool = field(
        True, help="run the prompt prefix shared by a subset once and reuse its KV cache"
    )
    compare: str | None = field(
        None, help="a second model evaluated on the same items; both columns and the difference"
    )
    data: list[str] = field(
        [], help="ppl: text (.txt) or jsonl/json files (text, messages, query/response rows)"
    )
    output_dir: str | None = field(
        None, help="where eval-<dataset>-<time>/ goes (default: the run dir, else evals/)"
    )
    num_threads: int | None = field(None, help="torch CPU threads (default: torch's choice)")
    progress: bool = field(True, help="show a progress bar")
    seed: int = field(42, help="random seed (generation is greedy; this only fixes any sampling fallbacks)")

    def __post_init__(self) -> None:
        check_choice("eval_dataset", self.eval_dataset, EVAL_DATASETS)
        check_choice("mcq_mode", self.mcq_mode, MCQ_MODES)
        check_choice("chat_template", self.chat_template, ["auto", "on", "off"])
        check_range("per_device_eval_batch_size", self.per_device_eval_batch_size, 1, None)
        check_range("limit", self.limit, 1, None)
        check_range("few_shot", self.few_shot, 0, None)
        check_range("max_length", self.max_length, 8, None)
        if isinstance(self.dataset_args, str):
            try:
                self.dataset_args = json.loads(self.dataset_args)
            except json.JSONDecodeError as e:
                raise ConfigError(
                    f"dataset_args: got {self.dataset_args!r}, which is not valid JSON ({e.msg}).",
                    hint='Quote it for the shell: --dataset-args \'{"general_mcq": {"local_path": "dir"}}\'',
                ) from None
        if not isinstance(self.dataset_args, dict):
            raise ConfigError(f"dataset_args: got {self.dataset_args!r}, expected a JSON object.")


class EvalConfig(ComposedConfig):
    """Configuration of `temper eval` (see `temper eval --help`)."""

    VERB = "eval"
    SECTIONS = {"model": ModelCfg, "eval": EvalCfg}
    model: ModelCfg
    eval: EvalCfg

"""`temper infer MODEL --input prompts.jsonl --output answers.jsonl`: batch generation, in order, resumable.

Also holds the model and sampling options that `chat` and `serve` share.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

HELP = "generate answers for every row of a data file (continuous batching, resumable, in input order)"


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model",
        nargs="?",
        default=None,
        help="bundled alias, HF dir or cached hub id, .gguf file, run dir, LoRA adapter dir, or a LLaMA-Factory "
        "inference YAML (model_name_or_path, adapter_name_or_path, template)",
    )
    parser.add_argument(
        "--model", dest="model_flag", default=None, help="the same as MODEL (ms-swift's spelling)"
    )
    parser.add_argument(
        "--adapters",
        dest="adapter_dir",
        default=None,
        help="ms-swift's --adapters: a LoRA adapter dir (output/.../checkpoint-N); alone it is the model (its "
        "base from its adapter_config.json), with MODEL it goes over MODEL as its base",
    )
    parser.add_argument(
        "--adapter",
        default=None,
        help="which adapter answers: 'base' or an adapter name (default: the run dir's own adapter, if any)",
    )
    # ms-swift's `swift infer` switches that describe what temper does anyway: taken, so its lines run as they are.
    parser.add_argument(
        "--stream", default=None, help="ms-swift's --stream: accepted; the REPL always streams"
    )
    parser.add_argument(
        "--infer-backend",
        "--infer_backend",
        default=None,
        help="LLaMA-Factory's and ms-swift's backend choice: accepted; temper decodes with its own engine",
    )
    add_load_arguments(parser)


def one_model(
    positional: str | None, flag: str | None, adapter: str | None, what: str = "model", hint: str = ""
) -> tuple[str, str | None]:
    """(model, adapter dir over it) from the positional MODEL, --model and ms-swift's --adapters: the two
    spellings of the model must agree, and an adapter dir alone is the model (its base from its
    adapter_config.json). Shared by chat, infer, serve and export."""
    from temper.errors import ConfigError

    if positional and flag and positional != flag:
        raise ConfigError(f"two {what}s: {positional!r} and --model {flag!r}.", hint=f"Give the {what} once.")
    model = positional or flag
    if model is None:
        if adapter is None:
            raise ConfigError(f"no {what} given.", hint=hint)
        return adapter, None
    return model, adapter


def model_arg(args: argparse.Namespace) -> Any:
    """What MODEL, --model and --adapters name: a model name, or a ModelRef of an adapter over its base."""
    from temper.models.load import resolve_model

    backend = getattr(args, "infer_backend", None)
    if backend not in (None, "pt", "huggingface", "hf"):
        import sys

        print(f"ignored: infer_backend {backend} (temper decodes with its own engine)", file=sys.stderr)
    # serve has no --model flag of this parser's; its --adapters sets adapter_dir itself
    model, adapter = one_model(
        args.model,
        getattr(args, "model_flag", None),
        getattr(args, "adapter_dir", None),
        hint="Pass MODEL (an alias, a model dir, a run dir) or --adapters ADAPTER_DIR.",
    )
    return resolve_model(model, adapter) if adapter else model


def add_load_arguments(parser: argparse.ArgumentParser) -> None:
    """--dtype, --template and --threads: how any inference verb (chat, infer, serve) loads its model."""
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "bf16", "fp16", "fp32"],
        help="weights dtype (default: auto)",
    )
    parser.add_argument(
        "--template", default=None, help="chat template override: a built-in name (chatml) or a Jinja file"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )


def add_sampling_arguments(parser: argparse.ArgumentParser, default_temperature: float | None = 0.0) -> None:
    t_help = "sampling temperature; 0 = greedy" + (
        f" (default: {default_temperature})"
        if default_temperature is not None
        else " (default: 0 with --query, 0.7 in the REPL)"
    )
    # The peers' spellings are aliases: LLaMA-Factory's and ms-swift's max_new_tokens, ms-swift's top_p.
    parser.add_argument(
        "--max-tokens",
        "--max-new-tokens",
        "--max_new_tokens",
        type=int,
        default=None,
        help="most new tokens per answer (default: 256)",
    )
    parser.add_argument("--temperature", type=float, default=None, help=t_help)
    parser.add_argument(
        "--top-p", "--top_p", type=float, default=None, help="nucleus sampling mass (default: 1.0 = off)"
    )
    parser.add_argument(
        "--top-k",
        "--top_k",
        type=int,
        default=None,
        help="sample among the k likeliest tokens (default: 0 = off)",
    )
    parser.add_argument(
        "--repetition-penalty",
        "--repetition_penalty",
        type=float,
        default=None,
        help="HF-style repetition penalty (default: 1.0)",
    )
    parser.add_argument("--seed", type=int, default=None, help="sampling seed (default: random)")
    parser.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")


# The defaults of the sampling flags, whose parser default is None so that "given" is visible: a YAML's
# generation keys fill what no flag gives, and only then these.
SAMPLING_DEFAULTS: dict[str, Any] = {"max_tokens": 256, "top_p": 1.0, "top_k": 0, "repetition_penalty": 1.0}


def given_options(args: argparse.Namespace) -> set[str]:
    """The sampling (and batch) options given on the command line, by dest."""
    keys = ("temperature", "seed", "max_batch_size", *SAMPLING_DEFAULTS)
    return {k for k in keys if getattr(args, k, None) is not None}


def sampling(
    args: argparse.Namespace, default_temperature: float = 0.0, options: dict[str, Any] | None = None
) -> Any:
    """SamplingParams from the flags; `options` (a chat or predict YAML's generation keys) fill what no flag
    gives, then SAMPLING_DEFAULTS."""
    from temper.inference.sampling import SamplingParams

    options = options or {}

    def pick(key: str) -> Any:
        given = getattr(args, key)
        return given if given is not None else options.get(key, SAMPLING_DEFAULTS.get(key))

    if args.temperature is not None:
        t = args.temperature
    elif "temperature" in options or "do_sample" in options:
        sample = str(options.get("do_sample", True)).lower() in ("true", "1", "yes")
        t = float(options.get("temperature", 0.95)) if sample else 0.0  # 0.95: LLaMA-Factory's default
    else:
        t = default_temperature
    return SamplingParams(
        temperature=t,
        top_p=float(pick("top_p")),
        top_k=int(pick("top_k")),
        max_tokens=int(pick("max_tokens")),
        stop=list(args.stop),
        seed=pick("seed"),
        repetition_penalty=float(pick("repetition_penalty")),
    )


def model_and_template(
    args: argparse.Namespace, model: Any = None
) -> tuple[Any, str | None, str | None, dict[str, Any]]:
    """The MODEL argument (`model`: model_arg's answer, when the caller has it) and --template, or what a
    LLaMA-Factory inference YAML given as MODEL names (its template unless --template says otherwise, its
    default_system, and its generation keys)."""
    import sys

    from temper.models.config_file import is_config_file, read_inference_config

    model = model_arg(args) if model is None else model
    if not isinstance(model, str) or not is_config_file(model):
        return model, args.template, None, {}
    config = read_inference_config(model)
    for note in config.notes:
        print(note, file=sys.stderr)
    return config.ref, args.template or config.template, config.system, config.options


def load_engine(
    args: argparse.Namespace,
    resolved: tuple[Any, str | None, str | None, dict[str, Any]],
    max_batch_size: int = 16,
    adapters: dict[str, str] | None = None,
    max_queue: int = 256,
    merge_adapter: bool = False,
) -> Any:
    """The Engine of `resolved` (model_and_template's answer)."""
    import torch

    from temper.inference.engine import Engine

    if args.threads:
        torch.set_num_threads(args.threads)
    model, template, system, _ = resolved
    return Engine.load(
        model,
        adapters,
        dtype=args.dtype,
        max_batch_size=max_batch_size,
        max_queue=max_queue,
        template=template,
        merge_adapter=merge_adapter,
        system=system,
    )


def pick_adapter(engine: Any, name: str | None) -> str | None:
    """--adapter NAME, 'base', or (unset) the run dir's own adapter."""
    return engine.default_adapter if name is None else engine.adapter_for(name)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument(
        "--input",
        "--val-dataset",
        "--val_dataset",
        default=None,
        help="jsonl/json/csv/parquet: messages rows, prompt rows or any training format (required, unless MODEL "
        "is a LLaMA-Factory predict YAML: its eval_dataset)",
    )
    parser.add_argument(
        "--output",
        "--result-path",
        "--result_path",
        default=None,
        help="jsonl written one line per input row, in order (resumes if present); required, unless MODEL is a "
        "LLaMA-Factory predict YAML: OUTPUT_DIR/generated_predictions.jsonl",
    )
    parser.add_argument(
        "--format", default="auto", help="input row format when not messages/prompt rows (default: auto)"
    )
    parser.add_argument("--system", default=None, help="system prompt for rows without one")
    parser.add_argument(
        "--max-batch-size",
        "--max_batch_size",
        type=int,
        default=None,
        help="rows decoded together (default: 16, or a predict YAML's per_device_eval_batch_size)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_sampling_arguments(parser, default_temperature=0.0)


def run(args: argparse.Namespace, raw: Sequence[str]) -> int:
    import sys

    from temper.errors import ConfigError
    from temper.inference.batch import infer_file
    from temper.models.config_file import is_predict_config

    model = model_arg(args)
    if isinstance(model, str) and is_predict_config(model):
        return _predict(args, model)
    if not args.input or not args.output:
        raise ConfigError(
            "temper infer needs --input (the rows to answer) and --output (the jsonl to write).",
            hint="temper infer MODEL --input rows.jsonl --output answers.jsonl, or temper infer PREDICT.yaml "
            "(LLaMA-Factory's do_predict YAML: eval_dataset and output_dir).",
        )

    # One adapter for the whole file: folded into fp32 weights it decodes faster (Engine.load).
    resolved = model_and_template(args, model)
    params = sampling(args, 0.0, resolved[3])
    batch = 16 if args.max_batch_size is None else args.max_batch_size
    with load_engine(args, resolved, max_batch_size=batch, merge_adapter=args.adapter is None) as engine:
        summary = infer_file(
            engine,
            args.input,
            args.output,
            params,
            pick_adapter(engine, args.adapter),
            args.system,
            args.format,
            progress=not args.no_progress,
        )
    rate = summary.generated_tokens / max(summary.seconds, 1e-9)
    print(
        f"{summary.rows} rows ({summary.skipped} already done) -> {args.output}: "
        f"{summary.generated_tokens} tokens in {summary.seconds:.1f} s ({rate:.1f} tok/s)",
        file=sys.stderr,
    )
    return 0


def _predict(args: argparse.Namespace, path: str) -> int:
    """LLaMA-Factory's do_predict YAML: eval_dataset answered into generated_predictions.jsonl, scored."""
    import sys

    from temper.inference.engine import Engine
    from temper.inference.predict import predict
    from temper.models.config_file import read_predict_config

    config = read_predict_config(path)
    for note in config.notes:
        print(note, file=sys.stderr)
    given = given_options(args)
    options = config.options
    unset = [k for k in options.pop("defaulted") if k not in given]
    if not options["do_sample"] and "temperature" not in given:  # greedy: the sampling knobs do nothing
        unset = [k for k in unset if k not in ("temperature", "top_p", "top_k")]
    if unset:
        shown = ", ".join(f"{k} {options[k]}" for k in unset)
        print(f"LLaMA-Factory's defaults for what the YAML leaves unset: {shown}", file=sys.stderr)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    batch = int(options["max_batch_size"] if args.max_batch_size is None else args.max_batch_size)
    with Engine.load(
        config.ref,
        dtype=args.dtype,
        max_batch_size=batch,
        template=args.template or config.template,
        merge_adapter=args.adapter is None,
        system=config.system,
    ) as engine:
        params = sampling(args, 0.0, options)  # an explicit --temperature decides; 0 is greedy
        result = predict(engine, options, params, pick_adapter(engine, args.adapter), args.output,
                         progress=not args.no_progress)  # fmt: skip
    shown = "  ".join(f"{k[8:]} {v:.2f}" for k, v in result.metrics.items() if k[8:] in ("bleu-4", "rouge-1",
                      "rouge-2", "rouge-l"))  # fmt: skip
    s = result.summary
    if result.cut:
        print(
            f"{result.cut} row(s) longer than cutoff_len {options['cutoff_len']} tokens (prompt + reference) were "
            "cut as LLaMA-Factory cuts them: the prompt loses its end, the reference its end",
            file=sys.stderr,
        )
    print(
        f"{s.rows} rows ({s.skipped} already done) -> {result.predictions}\n{shown} -> {result.results}",
        file=sys.stderr,
    )
    return 0

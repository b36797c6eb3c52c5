"""`temper export SOURCE --merge | --gguf TYPE | --quantize METHOD | --onnx | --expand-blocks N --output-dir DIR`.

SOURCE may also be a LLaMA-Factory export YAML (`llamafactory-cli export FILE.yaml`): its model and adapter are
the source, `export_dir` the output dir, and with no method flag it merges, as LLaMA-Factory does.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HELP = (
    "merge adapters, quantize, or convert a run/model to GGUF (+ Ollama Modelfile) or ONNX; expand its layers "
    "(LLaMA Pro)"
)


def _shard_size(text: str) -> str:
    from transformers.utils.hub import convert_file_size_to_int

    try:
        convert_file_size_to_int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size such as 5GB or 500MB") from None
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source",
        nargs="?",
        default=None,
        help="run dir, LoRA adapter dir, HF dir or cached hub id, .gguf file, bundled alias, or a LLaMA-Factory "
        "export YAML (model_name_or_path, adapter_name_or_path, template, export_dir, export_size)",
    )
    parser.add_argument(
        "--model", dest="model_flag", default=None, help="the same as SOURCE (ms-swift's spelling)"
    )
    parser.add_argument(
        "--output-dir",
        "--output_dir",
        help="directory to write (must be new or empty; default: the YAML's export_dir, or for a merge of an "
        "adapter or run dir, that dir + '-merged', as ms-swift names it)",
    )
    parser.add_argument(
        "--adapter",
        "--adapters",
        help="a LoRA adapter dir over SOURCE as its base (LLaMA-Factory's adapter_name_or_path, ms-swift's "
        "adapters); without SOURCE, the adapter dir is the source",
    )
    parser.add_argument("--merge", action="store_true", help="fold the run's LoRA/DoRA adapter into the base")
    parser.add_argument(
        "--merge-lora",
        "--merge_lora",
        nargs="?",
        const="true",
        default=None,
        choices=["true", "false", "True", "False"],
        help="ms-swift's spelling of --merge (true|false)",
    )
    fmt = parser.add_mutually_exclusive_group()
    fmt.add_argument(
        "--gguf", choices=["f16", "bf16", "q8_0", "q4_0"], help="write model-TYPE.gguf + Modelfile"
    )
    fmt.add_argument(
        "--quantize", choices=["int8", "bnb-4bit", "bnb-8bit", "hqq-4bit"], help="weight quantization"
    )
    fmt.add_argument(
        "--onnx", action="store_true", help="write model.onnx (decoder logits or encoder states)"
    )
    fmt.add_argument(
        "--expand-blocks",
        type=int,
        metavar="N",
        help="LLaMA Pro: insert N pass-through decoder layers (one after every layers/N) to train with "
        "--tuning freeze --freeze-trainable-layers N --use-llama-pro true (LLaMA-Factory's llama_pro.py)",
    )
    parser.add_argument(
        "--template",
        help="chat template saved with the model: built-in name, Jinja file, or a LLaMA-Factory name checked "
        "against the model's own (default: the run's or the model's own)",
    )
    parser.add_argument(
        "--system",
        "--default-system",
        help="default system prompt saved with the model: in its chat template (for conversations without one) "
        "and the Ollama Modelfile's SYSTEM (default: the run's or the template's own)",
    )
    parser.add_argument(
        "--dtype",
        default=None,
        choices=["fp32", "bf16", "fp16"],
        help="--merge: saved dtype (default: fp32); --expand-blocks: (default: the source checkpoint's)",
    )
    parser.add_argument(
        "--max-shard-size",
        type=_shard_size,
        help="--merge: largest weights file, e.g. 5GB (LLaMA-Factory's export_size; default: one file up to 50GB)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier export in --output-dir")


def _source(args: argparse.Namespace) -> tuple[Any, str | None, str | None, dict[str, Any] | None]:
    """(the model to export, its template, its default system prompt, the options of a YAML or None) for
    SOURCE and --adapter."""
    from temper.commands.infer import one_model
    from temper.errors import ConfigError
    from temper.models.config_file import is_config_file, read_export_config
    from temper.models.load import resolve_model

    # `swift export --adapters DIR`: the adapter dir alone is the source.
    args.source, args.adapter = one_model(
        args.source,
        args.model_flag,
        args.adapter,
        what="source",
        hint="Pass SOURCE (a run, adapter or model dir) or --adapters DIR.",
    )
    if not is_config_file(args.source):
        source = resolve_model(args.source, args.adapter) if args.adapter else args.source
        return source, args.template, args.system, None
    if args.adapter:
        raise ConfigError(
            f"--adapter with {args.source}: the file names the model and adapter.",
            hint="Set adapter_name_or_path in the file, or pass the model itself as SOURCE.",
        )
    config = read_export_config(args.source)
    for note in config.notes:
        print(note, file=sys.stderr)
    system = args.system if args.system is not None else config.system
    return config.ref, args.template or config.template, system, config.options


def run(args: argparse.Namespace, raw: Sequence[str]) -> int:
    from temper.errors import ConfigError, TemperError
    from temper.export import export_gguf, export_onnx, merge_run, quantize_external, quantize_int8
    from temper.export.merge import check_has_adapter, merge_reward_model
    from temper.models.config_file import is_config_file
    from temper.models.load import is_reward_run

    source, template, system, options = _source(args)
    args.merge = args.merge or str(args.merge_lora).lower() == "true"
    method = args.merge or args.gguf or args.quantize or args.onnx or args.expand_blocks is not None
    if options is not None and not method:
        if not source.adapters:
            raise TemperError(
                f"{args.source} names no adapter (adapter_name_or_path), so there is nothing to merge.",
                hint="Add adapter_name_or_path, or convert the model with --gguf TYPE, --quantize METHOD or --onnx.",
            )
        args.merge = True  # LLaMA-Factory's export of an adapter is a merge
    elif not method:
        raise TemperError(
            "nothing to do: pass --merge, --gguf TYPE, --quantize METHOD, --onnx or --expand-blocks N."
        )
    if args.merge and (args.gguf or args.quantize or args.onnx or args.expand_blocks is not None):
        check_has_adapter(source)  # the adapter is merged on the way; --merge says it must exist
    options = options or {}
    out = args.output_dir or options.get("output_dir")
    merged_from = Path(args.adapter or args.source)
    if not out and args.merge and not (args.gguf or args.quantize or args.onnx) and merged_from.is_dir():
        out = f"{str(merged_from).rstrip('/')}-merged"  # ms-swift's default for `swift export --merge_lora`
        print(
            f"output dir: {out} (no --output-dir: the adapter dir + '-merged', as ms-swift does)",
            file=sys.stderr,
        )
    if not out:
        where = " or set export_dir in the file" if is_config_file(args.source) else ""
        raise ConfigError("no output dir.", hint=f"Pass --output-dir DIR{where}.")
    manifest: dict[str, Any]
    if args.expand_blocks is not None:
        from temper.export.expand import expand_blocks

        manifest = expand_blocks(source, out, args.expand_blocks, dtype=args.dtype, overwrite=args.overwrite)
        _print_summary(Path(out), manifest)
        print(f"  train the inserted layers: temper sft --model {out} --tuning freeze --freeze-trainable-layers "
              f"{args.expand_blocks} --use-llama-pro true ...")  # fmt: skip
        return 0
    if not args.merge and (args.dtype or args.max_shard_size):
        raise ConfigError("--dtype and --max-shard-size shape a merge; pass --merge (or drop them).")
    if args.gguf:
        manifest = export_gguf(
            source, out, args.gguf, system=system, overwrite=args.overwrite, template=template
        )
    elif args.quantize == "int8":
        manifest = quantize_int8(source, out, overwrite=args.overwrite, template=template, system=system)
    elif args.quantize:
        manifest = quantize_external(
            source, out, args.quantize, overwrite=args.overwrite, template=template, system=system
        )
    elif args.onnx:
        manifest = export_onnx(source, out, overwrite=args.overwrite, template=template, system=system)
    elif is_reward_run(source):
        if args.dtype or args.max_shard_size:
            raise ConfigError(
                "--dtype and --max-shard-size are for language models; a reward model merges in fp32."
            )
        manifest = merge_reward_model(source, out, overwrite=args.overwrite)
    else:
        manifest = merge_run(
            source,
            out,
            dtype=args.dtype or options.get("dtype", "fp32"),
            overwrite=args.overwrite,
            max_shard_size=args.max_shard_size or options.get("max_shard_size"),
            template=template,
            system=system,
        )
    _print_summary(Path(out), manifest)
    return 0


def _print_summary(out: Path, manifest: dict[str, Any]) -> None:
    print(f"exported {manifest['source']} ({manifest['method']}) -> {out}")
    for name in manifest["files"]:
        print(f"  {name:32s} {(out / name).stat().st_size / 1e6:10.1f} MB")
    for key in ("max_abs_logit_diff", "max_abs_score_diff", "max_abs_diff", "greedy_identical"):
        if manifest.get(key) is not None:
            print(f"  {key}: {manifest[key]}")
    if manifest["method"] in ("gguf", "merge") and (out / "Modelfile").exists():
        print(f"  ollama: ollama create NAME -f {out / 'Modelfile'}")

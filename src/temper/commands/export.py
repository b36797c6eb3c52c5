"""`temper export SOURCE --merge | --gguf TYPE | --quantize METHOD | --onnx --output-dir DIR`."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HELP = "merge adapters, quantize, or convert a run/model to GGUF (+ Ollama Modelfile) or ONNX"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source", help="run dir, LoRA adapter dir, HF dir or cached hub id, .gguf file or bundled alias"
    )
    parser.add_argument("--output-dir", required=True, help="directory to write (must be new or empty)")
    parser.add_argument("--merge", action="store_true", help="fold the run's LoRA/DoRA adapter into the base")
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
    parser.add_argument(
        "--system", help="SYSTEM prompt for the Ollama Modelfile (default: the template's own)"
    )
    parser.add_argument(
        "--dtype", default="fp32", choices=["fp32", "bf16", "fp16"], help="--merge: saved dtype"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier export in --output-dir")


def run(args: argparse.Namespace, raw: Sequence[str]) -> int:
    from temper.errors import TemperError
    from temper.export import export_gguf, export_onnx, merge_run, quantize_external, quantize_int8
    from temper.export.merge import check_has_adapter

    if not (args.merge or args.gguf or args.quantize or args.onnx):
        raise TemperError("nothing to do: pass --merge, --gguf TYPE, --quantize METHOD or --onnx.")
    if args.merge and (args.gguf or args.quantize or args.onnx):
        check_has_adapter(args.source)  # the adapter is merged on the way; --merge says it must exist
    out = args.output_dir
    manifest: dict[str, Any]
    if args.gguf:
        manifest = export_gguf(args.source, out, args.gguf, system=args.system, overwrite=args.overwrite)
    elif args.quantize == "int8":
        manifest = quantize_int8(args.source, out, overwrite=args.overwrite)
    elif args.quantize:
        manifest = quantize_external(args.source, out, args.quantize, overwrite=args.overwrite)
    elif args.onnx:
        manifest = export_onnx(args.source, out, overwrite=args.overwrite)
    else:
        manifest = merge_run(args.source, out, dtype=args.dtype, overwrite=args.overwrite)
    _print_summary(Path(out), manifest)
    return 0


def _print_summary(out: Path, manifest: dict[str, Any]) -> None:
    print(f"exported {manifest['source']} ({manifest['method']}) -> {out}")
    for name in manifest["files"]:
        print(f"  {name:32s} {(out / name).stat().st_size / 1e6:10.1f} MB")
    for key in ("max_abs_logit_diff", "max_abs_diff", "greedy_identical"):
        if manifest.get(key) is not None:
            print(f"  {key}: {manifest[key]}")
    if manifest["method"] == "gguf":
        print(f"  ollama: ollama create NAME -f {out / 'Modelfile'}")

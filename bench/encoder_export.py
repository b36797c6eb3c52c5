"""Encoder classifier export: torch fp32 vs ONNX fp32 vs ONNX dynamic int8 — parity, speed and accuracy.

Usage:
    python bench/encoder_export.py --run-dir runs/sst2 --task glue-sst2 --limit 400 --threads 1

Exports the classifier in a `temper classify` run dir with torch.onnx (dynamic batch and sequence axes),
checks onnxruntime parity against torch (max absolute logit difference on the evaluation rows), quantizes
the ONNX graph with onnxruntime's dynamic int8 quantization (weights int8, activations quantized at run
time), then prints and writes (bench/results/encoder_export.json) a table of sequences/s and accuracy for the
three. The general ONNX exporter (temper.export.onnx) was not available when this was written, so this
script calls torch.onnx itself.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch


def export_onnx(model: Any, tok: Any, path: Path) -> None:
    """torch.onnx export (TorchScript exporter) with dynamic batch / sequence axes.

    The example batch is padded (two lengths) so that the traced graph keeps the attention-mask path, and
    the inputs go in as keyword arguments in the forward signature's order: a positional wrapper exported
    a graph whose logits drifted by ~1e-2 from torch's, this form matches to ~1e-8.
    """
    enc = tok(["a short example with a few more words", "two"], padding=True, return_tensors="pt")
    names = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
    torch.onnx.export(
        model.eval(),
        ({n: enc[n] for n in names},),
        str(path),
        input_names=names,
        output_names=["logits"],
        dynamic_axes={n: {0: "batch", 1: "sequence"} for n in names} | {"logits": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )


def batches(tok: Any, rows: list[Any], max_length: int, size: int) -> list[dict[str, np.ndarray]]:
    out = []
    for i in range(0, len(rows), size):
        chunk = rows[i : i + size]
        pairs = [r.text_pair for r in chunk] if chunk[0].text_pair is not None else None
        enc = tok(
            [r.text for r in chunk],
            pairs,
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="np",
        )
        out.append({k: v.astype(np.int64) for k, v in enc.items()})
    return out


def time_predict(fn: Any, data: list[dict[str, np.ndarray]]) -> tuple[np.ndarray, float]:
    fn(data[0])  # warm-up
    start = time.perf_counter()
    logits = np.concatenate([fn(b) for b in data])
    return logits, len(logits) / (time.perf_counter() - start)


def main() -> None:
    from onnxruntime import InferenceSession, SessionOptions
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from rich.console import Console
    from rich.table import Table

    from temper.data.cls_formats import label_ids, load_task
    from temper.models.heads import load_sequence_classifier
    from temper.runs import read_manifest

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", required=True, help="a `temper classify` run dir (full weights)")
    ap.add_argument("--task", default="glue-sst2", help="named task whose dev rows are scored")
    ap.add_argument("--limit", type=int, default=400, help="dev rows to score")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--out", default="bench/results/encoder_export.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    manifest = read_manifest(args.run_dir)
    names = manifest["labels"]
    model, tok = load_sequence_classifier(
        args.run_dir, names, manifest.get("problem_type", "single_label_classification")
    )
    _, dev = load_task(args.task)
    rows = (dev or [])[: args.limit]
    gold = np.array(label_ids(rows, "single_label_classification", names))
    data = batches(tok, rows, args.max_length, args.batch_size)

    work = Path(args.run_dir) / "onnx"
    work.mkdir(exist_ok=True)
    fp32, int8 = work / "model.onnx", work / "model.int8.onnx"
    export_onnx(model, tok, fp32)
    quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
    opts = SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = args.threads

    def torch_fn(b: dict[str, np.ndarray]) -> np.ndarray:
        with torch.no_grad():
            return model(**{k: torch.from_numpy(v) for k, v in b.items()}).logits.numpy()

    def ort_fn(path: Path) -> Any:
        sess = InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        wanted = {i.name for i in sess.get_inputs()}
        return lambda b: sess.run(None, {k: v for k, v in b.items() if k in wanted})[0]

    results = []
    ref_logits = None
    for name, fn, path in (
        ("torch fp32", torch_fn, None),
        ("onnx fp32", ort_fn(fp32), fp32),
        ("onnx int8", ort_fn(int8), int8),
    ):
        logits, speed = time_predict(fn, data)
        ref_logits = logits if ref_logits is None else ref_logits
        results.append(
            {
                "runtime": name,
                "seq_per_s": round(speed, 1),
                "accuracy": round(float((logits.argmax(-1) == gold).mean()), 4),
                "max_abs_logit_diff_vs_torch": float(np.abs(logits - ref_logits).max()),
                "file_mb": round(path.stat().st_size / 2**20, 1) if path else None,
            }
        )
    table = Table(title=f"{args.run_dir} on {len(rows)} {args.task} dev rows, {args.threads} thread(s)")
    for key in results[0]:
        table.add_column(key)
    for r in results:
        table.add_row(*(str(v) for v in r.values()))
    Console().print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "run_dir": args.run_dir,
                "task": args.task,
                "rows": len(rows),
                "threads": args.threads,
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

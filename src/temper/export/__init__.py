"""temper.export: hand a trained run to other runtimes.

merge (LoRA/DoRA folded into a standalone HF dir), gguf (llama.cpp / Ollama, f16 bf16 q8_0 q4_0 + Modelfile),
quantize (int8 weight-only for CPU; bitsandbytes / HQQ where their runtime exists), onnx (decoders and
encoders, checked in onnxruntime). Every export writes temper_export.json (source, base model, method,
sha256 of each file, parity numbers).

Example:
    >>> from temper.export import export_gguf
    >>> export_gguf("runs/identity", "exports/identity-gguf", "q8_0")  # doctest: +SKIP
"""

from temper.export.gguf import export_gguf, write_gguf
from temper.export.manifest import EXPORT_MANIFEST, read_export_manifest, verify_export
from temper.export.merge import load_source, merge_run
from temper.export.onnx import export_onnx
from temper.export.quantize import check_quantization_backend, load_int8, quantize_external, quantize_int8

__all__ = [
    "EXPORT_MANIFEST",
    "check_quantization_backend",
    "export_gguf",
    "export_onnx",
    "load_int8",
    "load_source",
    "merge_run",
    "quantize_external",
    "quantize_int8",
    "read_export_manifest",
    "verify_export",
    "write_gguf",
]

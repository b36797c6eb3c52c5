"""Write llama-family models as GGUF (f16, bf16, q8_0, q4_0) with the `gguf` package's writer.

What goes in: llama.* hyper-parameters (context length, rope base and dimension, norm eps, heads), the
tokenizer as llama.cpp expects a byte-level BPE one (tokens, merges, token types, bos/eos/pad/unk ids, the
pre-tokenizer name) and the chat template. Tensors are renamed HF -> GGUF and Q/K rows are permuted: HF
rotates the two halves of each head (rotate_half) while ggml rotates adjacent pairs, so llama.cpp's
converter interleaves the halves. transformers' GGUF loader undoes exactly that, so loading the file back
through transformers and comparing greedy tokens proves the permutation (and everything else) right.

Example:
    >>> from temper.export.gguf import write_gguf
    >>> write_gguf(model, tok, Path("out/model-q8_0.gguf"), "q8_0")  # doctest: +SKIP
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from temper.errors import TemperError

if TYPE_CHECKING:
    from temper.models.load import ModelRef

QTYPES = ("f16", "bf16", "q8_0", "q4_0")
# HF architectures class -> GGUF architecture; only those whose layout and loader we have round-tripped.
SUPPORTED_ARCHITECTURES = {"LlamaForCausalLM": "llama"}

_LAYER_MAP = {  # HF name inside model.layers.N -> GGUF name inside blk.N
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
_TOP_MAP = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
# Known HF pre-tokenizers -> llama.cpp's `tokenizer.ggml.pre` name (llama.cpp picks its split regex from it).
_LLAMA3_REGEX_START = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+"


def hf_to_gguf_name(name: str) -> str:
    """`model.layers.3.self_attn.q_proj.weight` -> `blk.3.attn_q.weight`.

    Example:
        >>> hf_to_gguf_name("model.layers.3.self_attn.q_proj.weight")
        'blk.3.attn_q.weight'
    """
    if name in _TOP_MAP:
        return _TOP_MAP[name]
    parts = name.split(".", 3)
    if len(parts) == 4 and parts[:2] == ["model", "layers"] and parts[3] in _LAYER_MAP:
        return f"blk.{parts[2]}.{_LAYER_MAP[parts[3]]}"
    raise TemperError(f"no GGUF name for tensor {name!r}.", hint="Only plain llama layers export to GGUF.")


def permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder each head's rows from [first half, second half] (HF rotate_half) to interleaved pairs (ggml).

    Example:
        >>> permute_qk(np.arange(4).reshape(4, 1), 1).ravel().tolist()
        [0, 2, 1, 3]
    """
    head_dim = w.shape[0] // n_head
    return w.reshape(n_head, 2, head_dim // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def check_supported(model: Any) -> str:
    """The GGUF architecture for a model, or a TemperError saying what is supported and why not."""
    config = model.config
    arch = type(model).__name__
    if arch not in SUPPORTED_ARCHITECTURES:
        raise TemperError(
            f"GGUF export does not support architecture {arch!r} (model_type {config.model_type!r}).",
            hint=f"Supported: {', '.join(SUPPORTED_ARCHITECTURES)}. Other models can use --merge, --quantize int8 "
            "or --onnx; llama.cpp's convert_hf_to_gguf.py covers more architectures.",
        )
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        raise TemperError("GGUF export supports llama without attention/MLP biases; this config has biases.")
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    if rope.get("rope_type", "default") != "default":
        raise TemperError(
            f"GGUF export supports plain RoPE only; this model uses rope_type {rope.get('rope_type')!r}.",
            hint="transformers' GGUF loader cannot read rope scaling for llama back, so the round trip would differ.",
        )
    return SUPPORTED_ARCHITECTURES[arch]


def _qtype_for(name: str, shape: tuple[int, ...], qtype: str) -> Any:
    """The ggml type for one tensor. Norms stay f32 (tiny, and llama.cpp requires it); rows not a multiple of
    the 32-wide block fall back to f16; q4_0 keeps the embedding at q8_0 because it also serves as the output
    projection (tied) and 4 bits there costs the most quality, as llama.cpp's quantizer does."""
    from gguf import GGMLQuantizationType as T

    if len(shape) == 1:
        return T.F32
    base = {"f16": T.F16, "bf16": T.BF16, "q8_0": T.Q8_0, "q4_0": T.Q4_0}[qtype]
    if base in (T.Q8_0, T.Q4_0) and shape[-1] % 32:
        return T.F16
    if base == T.Q4_0 and name in ("token_embd.weight", "output.weight"):
        return T.Q8_0
    return base


def _encode(data: np.ndarray, ggml_type: Any) -> np.ndarray:
    from gguf import GGMLQuantizationType as T
    from gguf import quants

    if ggml_type == T.F32:
        return data.astype(np.float32)
    if ggml_type == T.F16:
        return data.astype(np.float16)
    return np.asarray(quants.quantize(data.astype(np.float32), ggml_type))


def write_gguf(
    model: Any, tok: Any, out_path: Path, qtype: str = "f16", name: str | None = None
) -> dict[str, Any]:
    """Write `model` (a float llama HF model) and `tok` to `out_path`; returns a summary of what was written."""
    import gguf

    if qtype not in QTYPES:
        raise TemperError(f"--gguf {qtype!r} is not a known type; expected one of {', '.join(QTYPES)}.")
    cfg = model.config
    arch = check_supported(model)
    writer = gguf.GGUFWriter(str(out_path), arch)
    _write_hparams(writer, cfg, qtype, name or out_path.stem)
    tok_info = _write_tokenizer(writer, tok, int(cfg.vocab_size))
    counts: dict[str, int] = {}
    tied = bool(getattr(cfg, "tie_word_embeddings", False))
    for hf_name, tensor in model.state_dict().items():
        if hf_name == "lm_head.weight" and tied:
            continue  # tied: no output.weight, which is also how transformers' loader detects tying
        gg_name = hf_to_gguf_name(hf_name)
        data = tensor.detach().float().cpu().numpy()
        if gg_name.endswith(("attn_q.weight", "attn_k.weight")):
            heads = cfg.num_attention_heads if "attn_q" in gg_name else cfg.num_key_value_heads
            data = permute_qk(data, heads)
        ggml_type = _qtype_for(gg_name, data.shape, qtype)
        writer.add_tensor(gg_name, _encode(data, ggml_type), raw_dtype=ggml_type)
        counts[ggml_type.name] = counts.get(ggml_type.name, 0) + 1
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return {"architecture": arch, "qtype": qtype, "tensor_types": counts, **tok_info}


def _write_hparams(writer: Any, cfg: Any, qtype: str, name: str) -> None:
    import gguf

    ft = gguf.LlamaFileType
    file_type = {"f16": ft.MOSTLY_F16, "bf16": ft.MOSTLY_BF16, "q8_0": ft.MOSTLY_Q8_0, "q4_0": ft.MOSTLY_Q4_0}
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    rope = getattr(cfg, "rope_parameters", None) or {}
    writer.add_name(name)
    writer.add_context_length(int(cfg.max_position_embeddings))
    writer.add_embedding_length(int(cfg.hidden_size))
    writer.add_block_count(int(cfg.num_hidden_layers))
    writer.add_feed_forward_length(int(cfg.intermediate_size))
    writer.add_head_count(int(cfg.num_attention_heads))
    writer.add_head_count_kv(int(cfg.num_key_value_heads))
    writer.add_rope_freq_base(float(rope.get("rope_theta", getattr(cfg, "rope_theta", 10000.0))))
    writer.add_rope_dimension_count(int(head_dim))
    if head_dim != cfg.hidden_size // cfg.num_attention_heads:
        writer.add_key_length(int(head_dim))  # llama.cpp derives it from hidden/heads unless told
        writer.add_value_length(int(head_dim))
    writer.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))
    writer.add_vocab_size(int(cfg.vocab_size))
    writer.add_file_type(int(file_type[qtype]))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _pre_tokenizer_name(pre: dict[str, Any] | None) -> str:
    """llama.cpp's name for the HF pre-tokenizer; "default" (llama.cpp's own regex) when not recognised."""
    if not pre:
        return "default"
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [s.get("type") for s in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"  # llama.cpp spells this pre-tokenizer with a hyphen ("gpt2" is its tokenizer model)
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits"):
        return "smollm"
    if kinds == ["Split", "ByteLevel"] and str(steps[0].get("pattern", {}).get("Regex", "")).startswith(
        _LLAMA3_REGEX_START
    ):
        return "llama-bpe"
    return "default"


def _write_tokenizer(writer: Any, tok: Any, vocab_size: int) -> dict[str, Any]:
    """Byte-level BPE vocabulary as llama.cpp's `gpt2` tokenizer model, plus special ids and chat template."""
    from gguf import TokenType

    backend = getattr(tok, "backend_tokenizer", None)
    if backend is None:
        raise TemperError(
            f"GGUF export needs a fast (tokenizers) tokenizer; got {type(tok).__name__}.",
            hint="Save the model with a tokenizer.json (AutoTokenizer.from_pretrained(..., use_fast=True)).",
        )
    spec = json.loads(backend.to_str())
    model = spec.get("model", {})
    if model.get("type") != "BPE" or model.get("byte_fallback"):
        raise TemperError(
            f"GGUF export supports byte-level BPE tokenizers (GPT-2 style); this one is {model.get('type')} "
            f"(byte_fallback={model.get('byte_fallback')}).",
            hint="SentencePiece-style tokenizers need llama.cpp's convert_hf_to_gguf.py.",
        )
    id_to_token = {i: t for t, i in model["vocab"].items()}
    added = {a["id"]: a for a in spec.get("added_tokens", [])}
    tokens, types = [], []
    for i in range(vocab_size):
        if i in added:
            tokens.append(added[i]["content"])
            types.append(TokenType.CONTROL if added[i]["special"] else TokenType.USER_DEFINED)
        elif i in id_to_token:
            tokens.append(id_to_token[i])
            types.append(TokenType.NORMAL)
        else:  # the embedding matrix is padded past the vocabulary
            tokens.append(f"[PAD{i}]")
            types.append(TokenType.UNUSED)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    pre = _pre_tokenizer_name(spec.get("pre_tokenizer"))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types([int(t) for t in types])
    writer.add_token_merges(merges)
    for attr, add in (
        ("bos_token_id", writer.add_bos_token_id),
        ("eos_token_id", writer.add_eos_token_id),
        ("pad_token_id", writer.add_pad_token_id),
        ("unk_token_id", writer.add_unk_token_id),
    ):
        if getattr(tok, attr, None) is not None:
            add(int(getattr(tok, attr)))
    probe = tok("a").input_ids
    writer.add_add_bos_token(bool(probe) and probe[0] == tok.bos_token_id)
    writer.add_add_eos_token(bool(probe) and probe[-1] == tok.eos_token_id and len(probe) > 1)
    template = getattr(tok, "chat_template", None)
    if isinstance(template, str):
        writer.add_chat_template(template)
    return {"tokenizer_pre": pre, "has_chat_template": isinstance(template, str)}


def export_gguf(
    source: str | Path | ModelRef,
    output_dir: str | Path,
    qtype: str = "q8_0",
    system: str | None = None,
    overwrite: bool = False,
    template: str | None = None,
) -> dict[str, Any]:
    """`temper export SOURCE --gguf QTYPE`: merge adapters, write model-QTYPE.gguf + Modelfile + manifest.

    Example:
        >>> m = export_gguf("runs/identity", "exports/identity-gguf", "q8_0")  # doctest: +SKIP
        >>> sorted(m["files"])  # doctest: +SKIP
        ['Modelfile', 'model-q8_0.gguf']
    """
    from temper.export.manifest import prepare_output_dir, write_export_manifest
    from temper.export.merge import load_source
    from temper.export.ollama import write_modelfile

    if qtype not in QTYPES:
        raise TemperError(f"--gguf {qtype!r} is not a known type; expected one of {', '.join(QTYPES)}.")
    src = load_source(source, template=template, system=system)
    check_supported(src.model)  # before creating the output dir: a bad input leaves nothing behind
    out = prepare_output_dir(output_dir, overwrite)
    name = f"model-{qtype}.gguf"
    info = write_gguf(src.model, src.tokenizer, out / name, qtype, name=Path(src.info["source"]).name)
    write_modelfile(out, name, src.tokenizer, system)
    return write_export_manifest(out, "gguf", src.info, [name, "Modelfile"], gguf=info)

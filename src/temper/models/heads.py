"""Task heads on top of a backbone: sequence classification (encoders and decoders), sentence-embedding
pooling, and a multi-task classifier (one shared encoder, one linear head per task).

Decoders get `AutoModelForSequenceClassification`, which for llama-style models scores the last non-pad token;
that needs `config.pad_token_id`, set here from the tokenizer. Sentence embeddings are mean-pooled over real
tokens and L2-normalised, exactly what sentence-transformers does for all-MiniLM-L6-v2; a trained embedding
run dir is a plain HF encoder folder plus a sentence-transformers pooling config, so any mean-pooling server
(and `SentenceTransformer(dir)`) reads it.

Example:
    >>> from temper.models.heads import embed_texts
    >>> vecs = embed_texts("minilm-l6", ["a cat", "a kitten"])   # doctest: +SKIP
    >>> float(vecs[0] @ vecs[1]) > 0.5                             # doctest: +SKIP
    True
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from temper.models.dtype import pick_dtype
from temper.models.load import ModelRef, load_tokenizer, resolve
from temper.runs import write_json_atomic

POOLING_FILE = "temper_pooling.json"
MULTITASK_FILE = "multitask.json"
MULTITASK_WEIGHTS = "multitask_heads.safetensors"


def is_decoder(config: Any) -> bool:
    """True for causal LMs (llama, gemma, ...): they pool the last token instead of [CLS] / mean."""
    archs = " ".join(getattr(config, "architectures", None) or [])
    return "CausalLM" in archs or "LMHeadModel" in archs or bool(getattr(config, "is_decoder", False))


def load_sequence_classifier(
    name: str | ModelRef,
    label_names: list[str],
    problem_type: str = "single_label_classification",
    dtype: str = "fp32",
) -> tuple[Any, Any]:
    """(model with a new classification head, tokenizer). Regression uses one output.

    Example:
        >>> model, tok = load_sequence_classifier("minilm-l6", ["neg", "pos"])   # doctest: +SKIP
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification

    ref = resolve(name) if isinstance(name, str) else name
    src = ref.run_dir if ref.kind == "run" and ref.run_dir and not ref.adapters else ref.path
    tok = load_tokenizer(ref)
    config = AutoConfig.from_pretrained(src, local_files_only=True)
    regression = problem_type == "regression"
    kw: dict[str, Any] = {"num_labels": 1 if regression else len(label_names), "problem_type": problem_type}
    if not regression:
        kw["id2label"] = dict(enumerate(label_names))
        kw["label2id"] = {n: i for i, n in enumerate(label_names)}
    if is_decoder(config):
        kw["pad_token_id"] = tok.pad_token_id  # needed to find the last real token of each row
    model = AutoModelForSequenceClassification.from_pretrained(
        src, local_files_only=True, dtype=pick_dtype(dtype), ignore_mismatched_sizes=True, **kw
    )
    model.config.pad_token_id = tok.pad_token_id
    if ref.adapters:  # a LoRA classify run: the adapter also carries the trained head (modules_to_save)
        from temper.models.adapters import attach_adapters

        model = attach_adapters(model, ref.adapters)
    return model, tok


def classifier_module_names(model: Any) -> list[str]:
    """Names of the new head modules that LoRA must train in full (peft `modules_to_save`)."""
    names = {n.split(".")[-1] for n, _ in model.named_children()}
    return [n for n in ("classifier", "score", "pre_classifier") if n in names]


# ---- pooling and embeddings ------------------------------------------------------------------------------


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, mode: str = "mean") -> torch.Tensor:
    """Sentence vector per row: mean over real tokens, the first ([CLS]) token, or the last real token."""
    mask = attention_mask.to(hidden.dtype).unsqueeze(-1)
    if mode == "mean":
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    if mode == "cls":
        return hidden[:, 0]
    # last real token; works for left and right padding alike.
    positions = torch.arange(attention_mask.shape[1], device=hidden.device)
    last = (positions * attention_mask).argmax(-1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


def encode(
    model: Any, batch: dict[str, torch.Tensor], pooling: str = "mean", normalize: bool = True
) -> torch.Tensor:
    """Pooled (and optionally L2-normalised) sentence embeddings for a tokenized batch."""
    out = model(**batch)
    hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
    vecs = pool(hidden, batch["attention_mask"], pooling)
    return nn.functional.normalize(vecs, dim=-1) if normalize else vecs


def read_pooling(model_dir: str | Path) -> str:
    """The pooling a saved model was trained with: temper's note, else sentence-transformers' config, else mean."""
    d = Path(model_dir)
    if (d / POOLING_FILE).exists():
        return str(json.loads((d / POOLING_FILE).read_text())["pooling"])
    st = d / "1_Pooling" / "config.json"
    if st.exists():
        cfg = json.loads(st.read_text())
        if cfg.get("pooling_mode_cls_token"):
            return "cls"
        if cfg.get("pooling_mode_lasttoken"):
            return "last"
    return "mean"


def write_pooling(model_dir: Path, pooling: str, dim: int, normalize: bool = True) -> None:
    """temper's pooling note plus the sentence-transformers files, so both loaders pool the same way."""
    write_json_atomic(
        model_dir / POOLING_FILE, {"pooling": pooling, "normalize": normalize, "dimension": dim}
    )
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if normalize:
        modules.append(
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}
        )
        (model_dir / "2_Normalize").mkdir(exist_ok=True)
    write_json_atomic(model_dir / "modules.json", modules)
    st = {
        "word_embedding_dimension": dim,
        "pooling_mode_cls_token": pooling == "cls",
        "pooling_mode_mean_tokens": pooling == "mean",
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
        "pooling_mode_lasttoken": pooling == "last",
    }
    write_json_atomic(model_dir / "1_Pooling" / "config.json", st)


def load_encoder(name: str | Path | ModelRef, dtype: str = "fp32") -> tuple[Any, Any]:
    """(AutoModel backbone, tokenizer) for embeddings; a LoRA run dir is merged for inference."""
    from transformers import AutoModel

    ref = name if isinstance(name, ModelRef) else resolve(str(name))
    tok = load_tokenizer(ref)
    src = ref.run_dir if ref.kind == "run" and ref.run_dir and not ref.adapters else ref.path
    model = AutoModel.from_pretrained(src, local_files_only=True, dtype=pick_dtype(dtype))
    if ref.adapters:
        from temper.models.adapters import attach_adapters

        model = attach_adapters(model, ref.adapters).merge_and_unload()
    return model.eval(), tok


@torch.no_grad()
def embed_texts(
    model: str | Path | Any,
    texts: list[str],
    tokenizer: Any = None,
    pooling: str | None = None,
    normalize: bool = True,
    batch_size: int = 32,
    max_length: int = 256,
) -> torch.Tensor:
    """Embed texts with a model name / dir / run dir (loaded here) or a loaded model plus its tokenizer.

    Returns a float32 tensor [len(texts), dim]; rows are unit length when `normalize`.

    Example:
        >>> v = embed_texts("runs/embed", ["query one", "query two"])   # doctest: +SKIP
        >>> v.shape                                                       # doctest: +SKIP
        torch.Size([2, 384])
    """
    if isinstance(model, str | Path):
        ref = resolve(str(model))
        pooling = pooling or read_pooling(ref.run_dir or ref.path)
        model, tokenizer = load_encoder(ref)
    if tokenizer is None:
        raise ValueError("embed_texts: pass the tokenizer together with a loaded model.")
    pooling = pooling or "mean"
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    chunks = []
    for i in range(0, len(texts), batch_size):
        batch = tokenizer(
            texts[i : i + batch_size],
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        ).to(device)
        chunks.append(encode(model, dict(batch), pooling, normalize).float().cpu())
    model.train(was_training)
    return torch.cat(chunks) if chunks else torch.zeros(0)


# ---- multi-task: one shared encoder, one head per task ----------------------------------------------------


class MultiTaskClassifier(nn.Module):
    """A shared encoder with a linear head per task over mean-pooled tokens.

    `forward` returns the logits of every head concatenated ([batch, sum of head sizes]) so that a batch may
    mix tasks; `labels` is [batch, 2] = (task index, class id or regression target). The per-task slices and
    losses live in temper.objectives.cls (multitask_loss / multitask_metrics).
    """

    def __init__(self, encoder: Any, tasks: list[dict[str, Any]], dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder = encoder
        self.config = encoder.config  # the Trainer reads model.config (e.g. for the model card)
        self.tasks = tasks  # [{"name", "labels": [...], "problem_type"}]
        hidden = int(encoder.config.hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.heads = nn.ModuleDict({t["name"]: nn.Linear(hidden, head_size(t)) for t in tasks})

    def gradient_checkpointing_enable(self, **kw: Any) -> None:
        self.encoder.gradient_checkpointing_enable(**kw)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        from temper.objectives.cls import multitask_loss

        kw = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **kw).last_hidden_state
        pooled = self.dropout(pool(hidden, attention_mask, "mean"))
        logits = torch.cat([self.heads[t["name"]](pooled) for t in self.tasks], dim=-1)
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = multitask_loss(logits, labels, self.tasks)
        return out

    def save(self, run_dir: Path, tokenizer: Any) -> None:
        """The encoder as a plain HF folder (so embeddings/serving work) plus heads and their task list."""
        from safetensors.torch import save_file

        self.encoder.save_pretrained(run_dir, safe_serialization=True)
        tokenizer.save_pretrained(run_dir)
        heads = {k: v.detach().contiguous().cpu() for k, v in self.heads.state_dict().items()}
        save_file(heads, str(run_dir / MULTITASK_WEIGHTS))
        write_json_atomic(run_dir / MULTITASK_FILE, {"tasks": self.tasks, "pooling": "mean"})

    @classmethod
    def load(cls, run_dir: str | Path) -> tuple[MultiTaskClassifier, Any]:
        """(model, tokenizer) from a directory written by `save`."""
        from safetensors.torch import load_file
        from transformers import AutoModel, AutoTokenizer

        d = Path(run_dir)
        spec = json.loads((d / MULTITASK_FILE).read_text())
        model = cls(AutoModel.from_pretrained(d, local_files_only=True), spec["tasks"])
        model.heads.load_state_dict(load_file(str(d / MULTITASK_WEIGHTS)))
        return model.eval(), AutoTokenizer.from_pretrained(d, local_files_only=True)


def head_size(task: dict[str, Any]) -> int:
    return 1 if task["problem_type"] == "regression" else len(task["labels"])

"""sft_loss (head applied to labelled positions only) must equal the plain transformers loss."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from temper.config import TuneCfg
from temper.objectives.sft import reference_loss, sft_loss
from temper.tuning import apply_tuning


def _batch(vocab: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (2, 12), generator=g)
    labels = ids.clone()
    labels[:, :5] = -100  # prompt
    labels[1, 9:] = -100  # padding of the shorter row
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


@pytest.mark.parametrize("tuning", ["full", "lora"])
def test_sft_loss_equals_transformers_loss(tiny_llama_dir: Path, tuning: str) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32)
    model = apply_tuning(model, TuneCfg(tuning=tuning, lora_rank=4))
    batch = _batch(model.config.vocab_size)
    ours, _ = sft_loss(model, batch)
    theirs = reference_loss(model, batch)
    assert torch.allclose(ours, theirs, atol=1e-5), (ours.item(), theirs.item())
    ours.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)


def test_sft_loss_normalises_by_global_token_count(tiny_llama_dir: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32)
    batch = _batch(model.config.vocab_size)
    n = int(batch["labels"][:, 1:].ne(-100).sum())
    mean, _ = sft_loss(model, batch)
    scaled, _ = sft_loss(model, batch, num_items_in_batch=torch.tensor(2 * n))
    assert torch.allclose(scaled, mean / 2, atol=1e-6)


def test_dft_weights_each_token_loss_by_its_detached_probability(tiny_llama_dir: Path) -> None:
    """DFT as LLaMA-Factory's dft_loss_func computes it from the model's full logits: sum(ce * exp(-ce)) / n,
    with exp(-ce) a constant in the gradient."""
    model = apply_tuning(
        AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32), TuneCfg(lora_rank=4)
    )
    batch = _batch(model.config.vocab_size)
    dft, metrics = sft_loss(model, batch, dft=True)
    dft.backward()
    ours = [p.grad.clone() for p in model.parameters() if p.requires_grad]
    model.zero_grad()
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    targets = batch["labels"][:, 1:]
    ce = torch.nn.functional.cross_entropy(
        logits[targets.ne(-100)], targets[targets.ne(-100)], reduction="none"
    )
    expected = (ce * torch.exp(-ce).detach()).mean()
    expected.backward()
    theirs = [p.grad for p in model.parameters() if p.requires_grad]
    assert torch.allclose(dft, expected, atol=1e-6) and dft < ce.mean()
    assert metrics["ce_loss"] == pytest.approx(ce.mean().item(), abs=1e-5)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(ours, theirs, strict=True))
    # not the gradient of the same expression with the weights differentiated
    model.zero_grad()
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    ce = torch.nn.functional.cross_entropy(
        logits[targets.ne(-100)], targets[targets.ne(-100)], reduction="none"
    )
    (ce * torch.exp(-ce)).mean().backward()
    undetached = [p.grad for p in model.parameters() if p.requires_grad]
    assert not all(torch.allclose(a, b, atol=1e-6) for a, b in zip(ours, undetached, strict=True))


@pytest.mark.parametrize("tuning", ["lora", "full"])
def test_under_mixed_precision_only_the_last_hidden_state_is_taken(tiny_llama_dir: Path, tuning: str) -> None:
    """Under accelerate's bf16 mixed precision (the Trainer's), the final hidden states are the decoder's own
    output, not `output_hidden_states`' per-layer fp32 copies, and the loss and gradients are the same bits."""
    from accelerate import Accelerator

    from temper.objectives.head_ce import head_cross_entropy_sum
    from temper.objectives.sft import MODEL_INPUTS, final_hidden_states, head_logits, unwrap_model

    dtype = torch.bfloat16 if tuning == "lora" else torch.float32  # LoRA keeps its frozen base in bf16
    model = apply_tuning(
        AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=dtype), TuneCfg(tuning=tuning, lora_rank=4)
    )
    if tuning == "lora":
        for p in model.parameters():
            if p.requires_grad:
                p.data = p.data.float()  # fp32 adapters, as engine.train keeps them
                torch.nn.init.normal_(p, std=0.02)  # LoRA B starts at zero: give every adapter a gradient
    from accelerate.state import AcceleratorState

    # A Trainer that ran earlier in this process left accelerate's global state at mixed_precision "no"; start
    # from a clean one (as the Trainer's own TrainingArguments do) whichever tests ran before.
    AcceleratorState._reset_state(reset_partial_state=True)
    accelerator = Accelerator(mixed_precision="bf16", cpu=True)
    model = accelerator.prepare(model)
    batch = _batch(model.config.vocab_size)
    layers = model.get_base_model().model.layers if tuning == "lora" else model.model.layers

    def every_layer(m: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """sft_loss as it was: every layer's output (converted to fp32 by accelerate), the last one kept."""
        kwargs = {k: inputs[k] for k in MODEL_INPUTS if k in inputs}
        no_logits = torch.zeros(0, dtype=torch.long)
        out = m(**kwargs, use_cache=False, logits_to_keep=no_logits, output_hidden_states=True)
        assert len(out.hidden_states) == len(layers) + 1 and out.hidden_states[0].dtype == torch.float32
        keep = inputs["labels"][:, 1:].ne(-100)
        rows, targets = out.hidden_states[-1][:, :-1][keep], inputs["labels"][:, 1:][keep]
        lm = unwrap_model(m)
        if tuning == "lora":
            loss_sum = head_cross_entropy_sum(lm, rows, targets)
        else:
            loss_sum = torch.nn.functional.cross_entropy(head_logits(lm, rows), targets, reduction="sum")
        return loss_sum / len(targets)

    results = {}
    for name in ("ours", "every_layer"):  # ours first: output_hidden_states installs hooks for good
        model.zero_grad()
        with accelerator.autocast():
            if name == "ours":
                hidden = final_hidden_states(model, batch)
                assert hidden.dtype == dtype  # the decoder's output itself: no fp32 copy was made
                assert all(not layer._forward_hooks for layer in layers)  # no per-layer capture hooks
                loss, _ = sft_loss(model, batch)
            else:
                loss = every_layer(model, batch)
        loss.backward()
        results[name] = (loss.detach(), [p.grad.clone() for p in model.parameters() if p.requires_grad])
    assert torch.equal(results["ours"][0], results["every_layer"][0])
    grads = list(zip(results["ours"][1], results["every_layer"][1], strict=True))
    assert grads and all(torch.equal(a, b) for a, b in grads)
    assert all(bool(a.abs().sum() > 0) for a, _ in grads)


def test_a_model_without_a_separate_decoder_gives_the_same_hidden_states(
    tiny_llama_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where get_decoder() falls back to the model itself there is nothing to hook: every layer's output is
    asked for and the last kept, the same tensor the hook takes."""
    from temper.objectives.sft import final_hidden_states

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32)
    batch = _batch(model.config.vocab_size)
    hooked = final_hidden_states(model, batch)
    monkeypatch.setattr(model, "get_decoder", lambda: model)
    whole = final_hidden_states(model, batch)
    assert torch.equal(hooked, whole)
    assert hooked.shape == (*batch["input_ids"].shape, model.config.hidden_size)


@pytest.mark.parametrize(
    ("dtype", "smoothing"), [(torch.float32, 0.0), (torch.bfloat16, 0.0), (torch.bfloat16, 0.1)]
)
def test_chunked_head_loss_and_gradients_equal_the_plain_path(
    tiny_llama_dir: Path, dtype: torch.dtype, smoothing: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A frozen head takes head_ce's chunked path; its loss and gradients are the plain path's, across several
    chunks and a remainder chunk, in fp32 and in the bf16-base + fp32-adapter + autocast setting of training."""
    import torch.nn.functional as F

    from temper.objectives import head_ce
    from temper.objectives.sft import final_hidden_states, head_logits, unwrap_model

    model = apply_tuning(
        AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=dtype), TuneCfg(tuning="lora", lora_rank=4)
    )
    lm = unwrap_model(model)
    vocab = lm.get_output_embeddings().weight.shape[0]
    monkeypatch.setattr(head_ce, "CHUNK_ELEMENTS", 4 * vocab)  # 11 rows make 3 chunks (4, 4, 3)
    monkeypatch.setattr(head_ce, "BLOCK_ROWS", 3)  # and blocks of 3 rows with a remainder
    batch = _batch(vocab)
    out = {}
    for path in ("chunked", "plain"):
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            hidden = final_hidden_states(model, batch)
            keep = batch["labels"][:, 1:].ne(-100)
            rows, targets = hidden[:, :-1][keep], batch["labels"][:, 1:][keep]
            assert head_ce.fused_head_ok(lm, rows)
            if path == "chunked":
                loss = head_ce.head_cross_entropy_sum(lm, rows, targets, smoothing)
            else:
                loss = F.cross_entropy(
                    head_logits(lm, rows), targets, reduction="sum", label_smoothing=smoothing
                )
        (loss / len(targets)).backward()
        out[path] = (loss.detach(), [p.grad.clone() for p in model.parameters() if p.requires_grad])
    assert len(targets) == 11
    assert torch.allclose(out["chunked"][0], out["plain"][0], rtol=1e-5), (out["chunked"][0], out["plain"][0])
    # bf16: the (softmax - onehot) matrix is rounded to bf16 before the 1/n scale here and after it there, so
    # the two differ by bf16 rounding (2**-8 relative), not by more.
    # With smoothing every non-target entry carries -s/V too, and the two paths' roundings part a little more
    # (0.6-1.0% here); against an fp64 head both err alike (0.24% on the rows' gradient, smoothed or not).
    tol = 1e-5 if dtype == torch.float32 else 1.5e-2 if smoothing else 1e-2
    for a, b in zip(out["chunked"][1], out["plain"][1], strict=True):
        assert float((a - b).norm()) <= tol * float(b.norm()) + 1e-12
    assert any(bool(g.abs().sum() > 0) for g in out["chunked"][1])


def test_a_trainable_head_keeps_the_plain_path(tiny_llama_dir: Path) -> None:
    from temper.objectives.head_ce import fused_head_ok

    model = apply_tuning(
        AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32), TuneCfg(tuning="full")
    )
    rows = torch.zeros(3, model.config.hidden_size)
    assert not fused_head_ok(model, rows)  # full tuning trains the (tied) head: autograd must see it


def test_chunked_head_loss_is_exact_when_the_target_probability_underflows(tiny_llama_dir: Path) -> None:
    """-log(softmax[target]) would be inf for a target ~100 nats below the best logit; the chunked path must
    still return the plain cross-entropy (logsumexp - logit, no -log of a probability) and a finite gradient."""
    import torch.nn.functional as F

    from temper.objectives.head_ce import head_cross_entropy_sum

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32)
    weight = model.get_output_embeddings().weight.detach()
    model.get_output_embeddings().weight.requires_grad_(False)
    rows = torch.randn(5, weight.shape[1], generator=torch.Generator().manual_seed(0))
    logits = rows @ weight.t()
    rows = (rows * (200.0 / (logits.max(-1).values - logits.min(-1).values))[:, None]).requires_grad_(True)
    logits = rows.detach() @ weight.t()
    targets = logits.argmin(-1)  # the least likely token: ~200 nats below the best, p underflows fp32
    targets[0] = logits[0].argmax()  # one ordinary row next to the extreme ones
    loss = head_cross_entropy_sum(model, rows, targets)
    expected = F.cross_entropy(logits, targets, reduction="sum")
    assert torch.isfinite(loss) and float(loss.detach()) > 500
    assert torch.allclose(loss, expected, rtol=1e-5), (loss, expected)
    loss.backward()
    assert rows.grad is not None and bool(torch.isfinite(rows.grad).all())


def test_chunked_head_with_no_labelled_rows_gives_zero(tiny_llama_dir: Path) -> None:
    """A batch whose labels were all masked (truncated away) hands the head zero rows: loss 0, an empty gradient."""
    from temper.objectives.head_ce import head_cross_entropy_sum

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32)
    model.get_output_embeddings().weight.requires_grad_(False)
    rows = torch.zeros(0, model.config.hidden_size, requires_grad=True)
    loss = head_cross_entropy_sum(model, rows, torch.zeros(0, dtype=torch.long))
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert rows.grad is not None and rows.grad.shape == rows.shape


@pytest.mark.parametrize("tuning", ["full", "lora"])  # full: the plain head path; lora: the chunked one
def test_label_smoothing_equals_the_trainers_label_smoother(tiny_llama_dir: Path, tuning: str) -> None:
    from transformers.trainer_pt_utils import LabelSmoother

    model = apply_tuning(
        AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32),
        TuneCfg(tuning=tuning, lora_rank=4),
    )
    batch = _batch(model.config.vocab_size)
    ours, _ = sft_loss(model, batch, label_smoothing=0.1)
    ours.backward()
    our_grads = [p.grad.clone() for p in model.parameters() if p.requires_grad]
    model.zero_grad()
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    theirs = LabelSmoother(epsilon=0.1)(out, batch["labels"], shift_labels=True)
    theirs.backward()
    assert torch.allclose(ours, theirs, atol=1e-5), (ours.item(), theirs.item())
    for mine, ref in zip(our_grads, (p.grad for p in model.parameters() if p.requires_grad), strict=True):
        assert torch.allclose(mine, ref, atol=1e-6, rtol=1e-4)
    plain, _ = sft_loss(model, batch)
    assert (
        abs(float(ours) - float(plain)) > 1e-3
    )  # smoothing changed the loss, so the match above means something


def test_eaft_weights_each_token_loss_by_its_top20_entropy(tiny_llama_dir: Path) -> None:
    """EAFT as LLaMA-Factory's eaft_loss_func computes it from the full logits: each token's CE times
    (H / 3) ** alpha, H the entropy of the 20 largest probabilities renormalised, detached."""
    model = apply_tuning(
        AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32), TuneCfg(lora_rank=4)
    )
    batch = _batch(model.config.vocab_size)
    eaft, metrics = sft_loss(model, batch, eaft_alpha=0.5)
    eaft.backward()
    ours = [p.grad.clone() for p in model.parameters() if p.requires_grad]
    model.zero_grad()
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    targets = batch["labels"][:, 1:]
    keep = targets.ne(-100)
    ce = torch.nn.functional.cross_entropy(logits[keep], targets[keep], reduction="none")
    with torch.no_grad():
        p_top = torch.softmax(torch.sort(logits[keep], dim=-1, descending=True).values[:, :20], dim=-1)
        weight = (-(p_top * p_top.log()).sum(-1) / 3.0) ** 0.5
    expected = (ce * weight).mean()
    expected.backward()
    theirs = [p.grad for p in model.parameters() if p.requires_grad]
    assert torch.allclose(eaft, expected, atol=1e-6)
    assert not torch.allclose(eaft, ce.mean(), atol=1e-3)  # the weights matter
    assert metrics["ce_loss"] == pytest.approx(ce.mean().item(), abs=1e-5)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(ours, theirs, strict=True))


def test_asft_is_dft_plus_kl_to_the_starting_model(tiny_llama_dir: Path) -> None:
    """ASFT as LLaMA-Factory's asft_loss_func: DFT's loss + alpha x KL(reference || policy) at label positions.
    For LoRA the reference is the model with its adapters off, so at the start (B = 0) the KL is 0."""
    import copy

    model = apply_tuning(
        AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32), TuneCfg(lora_rank=4)
    )
    batch = _batch(model.config.vocab_size)
    start, metrics = sft_loss(model, batch, asft_alpha=0.1)
    assert metrics["kl"] == pytest.approx(0.0, abs=1e-6)
    assert torch.allclose(start, sft_loss(model, batch, dft=True)[0], atol=1e-6)
    torch.manual_seed(0)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.05)  # the policy moves away from its start
    loss, metrics = sft_loss(model, batch, asft_alpha=0.1)
    keep = batch["labels"][:, 1:].ne(-100)
    targets = batch["labels"][:, 1:][keep]
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1][keep]
    with torch.no_grad(), model.disable_adapter():
        ref = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1][keep]
    ce = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    kl = torch.nn.functional.kl_div(
        torch.log_softmax(logits, -1), torch.softmax(ref, -1), reduction="none"
    ).sum(-1)
    expected = (ce * torch.exp(-ce).detach()).mean() + 0.1 * kl.mean()
    assert metrics["kl"] > 1e-4 and torch.allclose(loss, expected, atol=1e-6)
    # full tuning: a frozen copy of the starting weights is the reference
    full = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32)
    frozen = copy.deepcopy(full).eval().requires_grad_(False)
    with torch.no_grad():
        full.model.layers[0].mlp.down_proj.weight.add_(0.05)
    _, metrics = sft_loss(full, batch, asft_alpha=0.1, reference=frozen)
    assert metrics["kl"] > 1e-4
    _, same = sft_loss(full, batch, asft_alpha=0.1, reference=copy.deepcopy(full))
    assert same["kl"] == pytest.approx(0.0, abs=1e-6)

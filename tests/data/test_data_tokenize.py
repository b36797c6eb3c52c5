"""Templates and masking: labels are exactly the assistant replies + <|im_end|>, and prompts match inference."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from temper.data.load import load_records
from temper.data.records import ChatExample, Message, TextExample
from temper.data.templates import (
    PEER_DEFAULT_SYSTEMS,
    prepare_tokenizer,
    prompt_ids,
    render_prompt,
    to_chat_dicts,
)
from temper.data.tokenize import IGNORE, chat_ids, encode_chat, encode_dataset, encode_text
from temper.errors import TemperError


def labelled_runs(ids: list[int], labels: list[int]) -> list[list[int]]:
    """Contiguous runs of labelled tokens."""
    runs: list[list[int]] = []
    prev = False
    for tid, lab in zip(ids, labels, strict=True):
        if lab != IGNORE:
            assert lab == tid
            if not prev:
                runs.append([])
            runs[-1].append(tid)
        prev = lab != IGNORE
    return runs


@pytest.fixture(scope="module")
def multi_turn(lf: Path) -> list[ChatExample]:
    """Real multi-turn rows: glaive tool-call conversations (with function calls and observations)."""
    records = load_records([str(lf / "glaive_toolcall_en_demo.json")])
    chats = [r for r in records if isinstance(r, ChatExample)]
    return [r for r in chats if sum(m.role == "assistant" for m in r.messages) >= 3][:40]


def test_labels_are_exactly_every_assistant_reply_plus_end_of_turn(
    tok: Any, multi_turn: list[ChatExample]
) -> None:
    assert len(multi_turn) == 40
    for rec in multi_turn:
        ids, labels = chat_ids(tok, rec)
        runs = [tok.decode(run) for run in labelled_runs(ids, labels)]
        replies = [m.content + "<|im_end|>" for m in rec.messages if m.role == "assistant"]
        assert runs == replies, rec.source


def test_reasoning_tool_rows_mask_every_reply(tok: Any, lf: Path) -> None:
    for rec in load_records([str(lf / "reason_tool_use_demo_50.jsonl#6")]):
        assert isinstance(rec, ChatExample)
        ids, labels = chat_ids(tok, rec)
        replies = [m.content + "<|im_end|>" for m in rec.messages if m.role == "assistant"]
        assert [tok.decode(r) for r in labelled_runs(ids, labels)] == replies


def test_alpaca_and_identity_rows_mask_the_prompt(tok: Any, lf: Path) -> None:
    records = load_records([str(lf / "identity.json#10"), str(lf / "alpaca_zh_demo.json#10")], model_name="E")
    for rec in records:
        assert isinstance(rec, ChatExample)
        ids, labels = chat_ids(tok, rec)
        assert [tok.decode(r) for r in labelled_runs(ids, labels)] == [
            rec.messages[-1].content + "<|im_end|>"
        ]
        first = next(i for i, x in enumerate(labels) if x != IGNORE)
        assert tok.decode(ids[:first]).endswith("<|im_start|>assistant\n")


def ignored_runs(ids: list[int], labels: list[int]) -> list[list[int]]:
    """Contiguous runs of unlabelled tokens."""
    return labelled_runs(
        ids, [tid if lab == IGNORE else IGNORE for tid, lab in zip(ids, labels, strict=True)]
    )


def test_mask_history_labels_only_the_last_reply(tok: Any, multi_turn: list[ChatExample]) -> None:
    for rec in multi_turn:
        ids, labels = chat_ids(tok, rec, mask_history=True)
        assert ids == chat_ids(tok, rec)[0]  # the same tokens, only the labels differ
        last = [m for m in rec.messages if m.role == "assistant"][-1]
        assert [tok.decode(r) for r in labelled_runs(ids, labels)] == [last.content + "<|im_end|>"], (
            rec.source
        )


def test_train_on_prompt_labels_everything_but_masked_history(
    tok: Any, multi_turn: list[ChatExample]
) -> None:
    for rec in multi_turn:
        ids, labels = chat_ids(tok, rec, train_on_prompt=True)
        assert labels == ids and ids == chat_ids(tok, rec)[0]
        ids, labels = chat_ids(tok, rec, train_on_prompt=True, mask_history=True)
        # With both: the prompts stay labelled, the earlier replies (each with its end of turn) do not.
        earlier = [m.content + "<|im_end|>\n" for m in rec.messages if m.role == "assistant"][:-1]
        assert [tok.decode(r) for r in ignored_runs(ids, labels)] == earlier, rec.source


def test_a_reply_with_its_loss_off_is_context(tok: Any) -> None:
    rec = ChatExample(
        [Message("user", "Hi"), Message("assistant", "Hello!", train=False), Message("user", "Bye"),
         Message("assistant", "Goodbye!")]
    )  # fmt: skip
    ids, labels = chat_ids(tok, rec)
    assert [tok.decode(r) for r in labelled_runs(ids, labels)] == ["Goodbye!<|im_end|>"]
    assert ids == chat_ids(tok, ChatExample([Message(m.role, m.content) for m in rec.messages]))[0]


def test_label_options_reach_the_stats_and_are_refused_for_preference_data(
    tmp_path: Path, tiny_llama_dir: Path, lf: Path
) -> None:
    import yaml

    from temper.config.preference import PrefDataCfg
    from temper.data.stats import data_stats
    from temper.errors import ConfigError

    counts = {}
    for opts in ({}, {"mask_history": True}, {"train_on_prompt": True}):
        path = tmp_path / f"sft{len(counts)}.yaml"
        data = [str(lf / "glaive_toolcall_en_demo.json#30")]
        path.write_text(yaml.safe_dump({"model": str(tiny_llama_dir), "dataset": data, **opts}))
        counts[tuple(opts)] = data_stats(path).encode
    default, history, prompt = counts.values()
    assert 0 < history.n_label_tokens < default.n_label_tokens < prompt.n_label_tokens == prompt.n_tokens
    with pytest.raises(ConfigError, match="mask_history"):
        PrefDataCfg(mask_history=True)


def test_prompt_tokens_equal_inference_rendering(tok: Any, multi_turn: list[ChatExample]) -> None:
    """Before every assistant reply, the training tokens are exactly prompt_ids (what inference feeds)."""
    for rec in multi_turn[:15]:
        ids, labels = chat_ids(tok, rec)
        msgs = to_chat_dicts(rec)
        starts = [
            i for i in range(len(labels)) if labels[i] != IGNORE and (i == 0 or labels[i - 1] == IGNORE)
        ]
        turns = [i for i, m in enumerate(msgs) if m["role"] == "assistant"]
        assert len(starts) == len(turns)
        for start, turn in zip(starts, turns, strict=True):
            assert ids[:start] == prompt_ids(tok, msgs[:turn], tools=rec.tools), rec.source
        # and the plain text path: render_prompt + the tokenizer, without special tokens added twice
        plain = tok(render_prompt(tok, msgs[: turns[0]], tools=rec.tools), add_special_tokens=False)[
            "input_ids"
        ]
        assert ids[: starts[0]] == plain


def test_system_prompt_default_and_row_system(tok: Any) -> None:
    rec = ChatExample([Message("user", "hi"), Message("assistant", "yo")])
    assert "You are a pirate." in render_prompt(tok, to_chat_dicts(rec, "You are a pirate."))
    own = ChatExample([Message("user", "hi"), Message("assistant", "yo")], system="Row system")
    text = render_prompt(tok, to_chat_dicts(own, "You are a pirate."))
    assert "Row system" in text and "pirate" not in text
    sample = encode_chat(tok, rec, 64, system="You are a pirate.")
    assert sample is not None and "pirate" in tok.decode(sample["input_ids"])


def test_truncation_and_drop_are_counted(tok: Any) -> None:
    short = ChatExample([Message("user", "hi"), Message("assistant", "hello there")])
    long = ChatExample([Message("user", "hi"), Message("assistant", "word " * 200)])
    long_prompt = ChatExample([Message("user", "word " * 200), Message("assistant", "ok")])
    records: list[Any] = [short, long, long_prompt, TextExample("text " * 300)]
    samples, stats = encode_dataset(records, tok, 64, "truncate")
    assert (stats.n_rows, stats.n_truncated, stats.n_dropped, len(samples)) == (4, 2, 1, 3)
    assert all(len(s["input_ids"]) <= 64 for s in samples) and len(stats.lengths) == 4
    assert stats["n_truncated"] == 2 and stats.as_dict()["n_dropped"] == 1
    samples, stats = encode_dataset(records, tok, 64, "drop")
    assert (stats.n_truncated, stats.n_dropped, len(samples)) == (0, 3, 1)


def test_text_rows_label_everything_and_end_with_eos(tok: Any) -> None:
    sample = encode_text(tok, TextExample("Anarchism is a political philosophy."), 64)
    assert sample is not None
    assert sample["labels"] == sample["input_ids"] and sample["input_ids"][-1] == tok.eos_token_id


def test_template_override_and_missing_template(tok: Any, tiny_bert_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    bert = AutoTokenizer.from_pretrained(tiny_bert_dir, local_files_only=True)
    bert.chat_template = None
    with pytest.raises(TemperError, match="no chat template"):
        prepare_tokenizer(bert, None)
    with pytest.raises(TemperError, match="unknown template") as err:
        prepare_tokenizer(bert, "nope")
    assert "--template chatml" in str(err.value.hint)  # no template of its own: name one
    # LLaMA-Factory's template names: the model's own format (SmolLM2 writes ChatML) keeps its own template, as
    # a LLaMA-Factory YAML means it; another family's format is refused with the reason.
    # Where LLaMA-Factory's template has its own default system prompt, that is rendered (its smollm2 ends
    # with a period, SmolLM2's own template does not), unless a system prompt is given or the run carries one.
    own = tok.chat_template
    user = [{"role": "user", "content": "hi"}]
    for name in ("smollm2", "qwen"):
        tok.chat_template = own
        lf_system = PEER_DEFAULT_SYSTEMS[name]
        rendered = render_prompt(prepare_tokenizer(tok, name), user)
        tok.chat_template = own
        assert rendered == render_prompt(tok, [{"role": "system", "content": lf_system}, *user])
    tok.chat_template = own
    assert "trained by Hugging Face<|im_end|>" in render_prompt(tok, user)  # SmolLM2's own: no period
    assert prepare_tokenizer(tok, "smollm", None).chat_template == own  # LF's smollm: no default of its own
    from temper.data.templates import inherited_system_note

    note = inherited_system_note(prepare_tokenizer(tok, "smollm2"), None, "smollm2-135m-instruct", "smollm2")
    assert note is not None and "from LLaMA-Factory's 'smollm2' template" in note  # not the model's own
    tok.chat_template = own
    run_template = prepare_tokenizer(tok, None, "Be Ember.").chat_template
    assert prepare_tokenizer(tok, "smollm2").chat_template == run_template  # a run's --system stays
    tok.chat_template = own
    with pytest.raises(TemperError, match="unknown template 'llama3'") as err:
        prepare_tokenizer(tok, "llama3")
    assert "writes <|start_header_id|>" in str(err.value.hint) and "another model family" in str(
        err.value.hint
    )
    with pytest.raises(TemperError, match="unknown template 'baichuan2'") as err:
        prepare_tokenizer(tok, "baichuan2")
    assert "Leave template out to use the model's own chat template" in str(err.value.hint)
    prepare_tokenizer(bert, "chatml")
    assert "<|im_end|>" in bert.get_vocab()
    rec = ChatExample([Message("user", "hi"), Message("assistant", "hello")])
    ids, labels = chat_ids(bert, rec)
    assert [bert.decode(r) for r in labelled_runs(ids, labels)] == ["hello <|im_end|>"]
    jinja = tmp_path / "t.jinja"
    jinja.write_text("{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}")
    other = AutoTokenizer.from_pretrained(tiny_bert_dir, local_files_only=True)
    assert (
        render_prompt(prepare_tokenizer(other, str(jinja)), [{"role": "user", "content": "x"}])
        == "[user] x\n"
    )


def test_trimming_template_and_prefix_unstable_template(tiny_llama_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    trim = tmp_path / "trim.jinja"
    trim.write_text(
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] | trim }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    tok = prepare_tokenizer(AutoTokenizer.from_pretrained(tiny_llama_dir, local_files_only=True), str(trim))
    rec = ChatExample([Message("user", " hi "), Message("assistant", "  hello  \n")])
    ids, labels = chat_ids(tok, rec)
    assert [tok.decode(r) for r in labelled_runs(ids, labels)] == ["hello<|im_end|>"]
    # A template that rewrites earlier turns cannot give an exact mask: say so instead of guessing.
    last_only = tmp_path / "last.jinja"
    last_only.write_text("{{ messages[-1]['content'] }}{% if add_generation_prompt %}>>{% endif %}")
    tok = prepare_tokenizer(
        AutoTokenizer.from_pretrained(tiny_llama_dir, local_files_only=True), str(last_only)
    )
    with pytest.raises(TemperError, match="prefix"):
        chat_ids(tok, rec)


ALPACA_SYSTEM = "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, and polite answers to the user's questions."
)


@pytest.mark.parametrize("name", ["default", "alpaca", "vicuna", "empty"])
@pytest.mark.parametrize("system", [None, "Be brief."])
def test_llamafactory_plain_templates(smollm2_dir: Path, name: str, system: str | None) -> None:
    """LLaMA-Factory's formats for models without a chat template, as its template definitions write them."""
    from transformers import AutoTokenizer

    tok = prepare_tokenizer(AutoTokenizer.from_pretrained(smollm2_dir, local_files_only=True), name)
    e = tok.eos_token
    turns = [("What is 2+2?", "4"), ("And 3+3?", "6")]
    # Each format, slot by slot: (system, user, assistant); LLaMA-Factory's default system prompt when none.
    formats = {
        "default": ("System: {}" + e + "\n", "Human: {}" + e + "\nAssistant:", "{}" + e + "\n", None),
        "alpaca": ("{}", "### Instruction:\n{}\n\n### Response:\n", "{}" + e + "\n\n", ALPACA_SYSTEM),
        "vicuna": ("{}", "USER: {} ASSISTANT:", "{}" + e, VICUNA_SYSTEM),
        "empty": ("{}", "{}", "{}", None),
    }
    fmt_system, fmt_user, fmt_reply, default = formats[name]
    head = system if system is not None else default
    expected = (fmt_system.format(head) if head is not None else "") + "".join(
        fmt_user.format(q) + fmt_reply.format(a) for q, a in turns
    )
    example = ChatExample(
        [Message(r, t) for q, a in turns for r, t in (("user", q), ("assistant", a))], system
    )
    assert render_prompt(tok, to_chat_dicts(example), add_generation_prompt=False) == expected
    ids, labels = chat_ids(tok, example)
    assert tok.decode(ids) == expected
    # The replies are learned with the eos token that ends them (the empty format writes none).
    replies = [a + (e if name != "empty" else "") for _, a in turns]
    assert [tok.decode(r) for r in labelled_runs(ids, labels)] == replies
    tool_row = ChatExample(
        [Message("user", "x"), Message("tool", "{}"), Message("assistant", "y")], source="calls.json:7"
    )
    with pytest.raises(TemperError, match=r"calls.json:7: the chat template cannot render this conversation"):
        chat_ids(tok, tool_row)  # a role the format has no place for is refused, naming the row

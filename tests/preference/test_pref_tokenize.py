"""Tokenization of pairs and unpaired rows: same tokens as SFT, labels only on the reply, collator layout."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from temper.data.load import load_records
from temper.data.pref_formats import PREFERENCE_FORMATS
from temper.data.pref_tokenize import PairCollator, UnpairedCollator, encode_pairs, encode_unpaired
from temper.data.records import ChatExample, KTOExample, Message, PreferenceExample
from temper.data.templates import prepare_tokenizer
from temper.data.tokenize import chat_ids
from temper.errors import DataError
from temper.models.load import load_tokenizer


@pytest.fixture(scope="module")
def tok(tiny_llama_dir: Path) -> Any:
    return prepare_tokenizer(load_tokenizer(str(tiny_llama_dir)))


def test_tokens_and_labels_equal_sft_for_the_same_conversation(tok: Any, shared_data: Path) -> None:
    records = load_records(
        ["dpo_en_demo#40"], dataset_dir=shared_data / "llamafactory", converters=PREFERENCE_FORMATS
    )
    rows, stats = encode_pairs(records, tok, max_length=100_000)
    assert stats["n_truncated"] == 0
    for ex, row in zip(records, rows, strict=True):
        for reply, ids_key in ((ex.chosen, "chosen_ids"), (ex.rejected, "rejected_ids")):
            ids, labels = chat_ids(tok, ChatExample([*ex.prompt, Message("assistant", reply)], ex.system))
            n_prompt = len(row["prompt_ids"])
            assert ids[: n_prompt + len(row[ids_key])] == row["prompt_ids"] + row[ids_key]
            assert [x for x in labels[n_prompt:] if x != -100] == row[ids_key]


def test_reply_ends_with_end_of_turn_and_collator_layout(tok: Any) -> None:
    pairs = [
        PreferenceExample([Message("user", "2+2?")], "4", "five"),
        PreferenceExample([Message("user", "Hi")], "Hello there", "x"),
    ]
    rows, _ = encode_pairs(pairs, tok, max_length=256)
    assert rows[0]["chosen_ids"][-1] == tok.convert_tokens_to_ids("<|im_end|>")
    assert tok.decode(rows[0]["chosen_ids"]) == "4<|im_end|>"
    batch = PairCollator(tok.pad_token_id)(rows)
    assert batch["input_ids"].shape[0] == 4  # chosen 0, chosen 1, rejected 0, rejected 1
    for i, (row, key) in enumerate(
        [
            (rows[0], "chosen_ids"),
            (rows[1], "chosen_ids"),
            (rows[0], "rejected_ids"),
            (rows[1], "rejected_ids"),
        ]
    ):
        n = len(row["prompt_ids"]) + len(row[key])
        assert batch["input_ids"][i, :n].tolist() == row["prompt_ids"] + row[key]
        labels = batch["labels"][i]
        assert labels[labels != -100].tolist() == row[key]
        assert batch["attention_mask"][i].sum().item() == n


def test_truncation_keeps_the_end_of_the_prompt_and_drop_counts(tok: Any) -> None:
    long_prompt = " ".join(f"word{i}" for i in range(200))
    ex = PreferenceExample([Message("user", long_prompt)], "yes", "no")
    rows, stats = encode_pairs([ex], tok, max_length=64)
    row = rows[0]
    assert stats["n_truncated"] == 1
    assert len(row["prompt_ids"]) + max(len(row["chosen_ids"]), len(row["rejected_ids"])) <= 64
    assert tok.decode(row["prompt_ids"]).endswith("word199<|im_end|>\n<|im_start|>assistant\n")
    assert tok.decode(row["chosen_ids"]) == "yes<|im_end|>"
    with pytest.raises(DataError, match="dropped"):
        encode_pairs([ex], tok, max_length=64, truncation="drop")


def test_kto_rows_pair_each_prompt_with_another_rows_completion(tok: Any) -> None:
    records = [KTOExample([Message("user", f"q{i}")], f"answer {i}", i % 2 == 0) for i in range(6)]
    rows, _ = encode_unpaired(records, tok, max_length=128, seed=3)
    completions = [tuple(r["completion_ids"]) for r in rows]
    kl = [tuple(r["kl_completion_ids"]) for r in rows]
    assert sorted(kl) == sorted(completions)  # a permutation of the completions...
    assert all(a != b for a, b in zip(completions, kl, strict=True))  # ...with no row paired with its own
    batch = UnpairedCollator(tok.pad_token_id)(rows[:3])
    assert batch["input_ids"].shape[0] == 6 and batch["kto_label"].tolist() == [r["label"] for r in rows[:3]]

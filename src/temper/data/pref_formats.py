"""Row -> PreferenceExample / KTOExample converters for the peers' preference data layouts.

Pairwise (PREFERENCE_FORMATS):
- `sharegpt_ranking`  LLaMA-Factory `ranking: true` + sharegpt: {"conversations": [{"from": "human", ...}],
                      "chosen": {"from": "gpt", "value": ...}, "rejected": {...}} (role/content spelling too)
- `alpaca_ranking`    LLaMA-Factory `ranking: true` + alpaca: instruction, input, chosen, rejected, system, history
- `swift_rejected`    ms-swift: {"messages": [..., {"role": "assistant", ...}], "rejected_response": "..."} or
                      "rejected_messages" (a full conversation; also LLaMA-Factory v1's chosen_messages)
- `trl`               TRL prompt/chosen/rejected, standard (strings) or conversational (message lists), and the
                      implicit-prompt form (chosen/rejected are whole conversations sharing the prompt)
Unpaired (KTO_FORMATS):
- `kto_tag`           LLaMA-Factory / ms-swift: a conversation ending with the assistant reply + `kto_tag` or
                      `label` (true/false); the alpaca spelling (instruction/input/output) works too
- `trl_unpaired`      TRL prompt / completion / label

Converters are pure, in the data layer's shape (temper.data.formats): `convert(row, tags) -> record`, raising
RowError([(field, problem)]) so that the loader collects every problem with file:row:field before failing
(`convert_rows` does the same for rows already in memory). `tags` are dataset_info role tags.

Example:
    >>> row = {"instruction": "2+2?", "chosen": "4", "rejected": "5"}
    >>> ex = PREFERENCE_FORMATS["alpaca_ranking"].convert(row, {})
    >>> ex.prompt[0].content, ex.chosen, ex.rejected
    ('2+2?', '4', '5')
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from temper.data.formats import Format, RowError, has_keys
from temper.data.pref_fields import (
    NO_TAGS,
    Row,
    Tags,
    alpaca_prompt,
    bad,
    check_prompt,
    common_prefix,
    label_of,
    messages_of,
    reply_of,
    split_system,
)
from temper.data.records import KTOExample, Message, PreferenceExample
from temper.errors import DataError

# ---- pairwise converters ----------------------------------------------------------------------------------


def sharegpt_ranking(row: Row, tags: Tags = NO_TAGS) -> PreferenceExample:
    key = "conversations" if "conversations" in row else "messages"
    prompt, system = split_system(messages_of(row.get(key), key, tags), row.get("system"))
    return PreferenceExample(
        check_prompt(prompt, key),
        reply_of(row.get("chosen"), "chosen", tags),
        reply_of(row.get("rejected"), "rejected", tags),
        system,
    )


def alpaca_ranking(row: Row, tags: Tags = NO_TAGS) -> PreferenceExample:
    system = row.get("system") if isinstance(row.get("system"), str) and row.get("system") else None
    prompt = alpaca_prompt(row)
    return PreferenceExample(
        prompt,
        reply_of(row.get("chosen"), "chosen", tags),
        reply_of(row.get("rejected"), "rejected", tags),
        system,
    )


def swift_rejected(row: Row, tags: Tags = NO_TAGS) -> PreferenceExample:
    key = "chosen_messages" if "chosen_messages" in row else "messages"
    chosen_conv = messages_of(row.get(key), key, tags)
    if chosen_conv[-1].role != "assistant":
        raise bad(key, "the conversation must end with the chosen assistant reply")
    if "rejected_messages" in row:
        rejected = reply_of(row["rejected_messages"], "rejected_messages")
        rejected_conv = messages_of(row["rejected_messages"], "rejected_messages")
        if rejected_conv[:-1] != chosen_conv[:-1]:
            raise bad("rejected_messages", f"its turns before the last must equal those of {key}")
    else:
        rejected = reply_of(row.get("rejected_response"), "rejected_response")
    prompt, system = split_system(chosen_conv[:-1], row.get("system"))
    return PreferenceExample(check_prompt(prompt, key), chosen_conv[-1].content, rejected, system)


def trl_preference(row: Row, tags: Tags = NO_TAGS) -> PreferenceExample:
    chosen_v, rejected_v = row.get("chosen"), row.get("rejected")
    if (
        "prompt" not in row
    ):  # implicit prompt: two whole conversations that share everything but the last reply
        chosen_conv, rejected_conv = messages_of(chosen_v, "chosen"), messages_of(rejected_v, "rejected")
        n = common_prefix(chosen_conv[:-1], rejected_conv[:-1])
        if n != len(chosen_conv) - 1 or n != len(rejected_conv) - 1:
            raise bad(
                "chosen", "without a prompt column, chosen and rejected must differ only in the last turn"
            )
        prompt, system = split_system(chosen_conv[:-1], row.get("system"))
        return PreferenceExample(
            check_prompt(prompt, "chosen"),
            reply_of(chosen_v, "chosen"),
            reply_of(rejected_v, "rejected"),
            system,
        )
    raw = row["prompt"]
    if isinstance(raw, str):
        if not raw.strip():
            raise bad("prompt", "empty prompt")
        prompt, system = [Message("user", raw)], None
    else:
        prompt, system = split_system(messages_of(raw, "prompt"), row.get("system"))
    return PreferenceExample(
        check_prompt(prompt, "prompt"), reply_of(chosen_v, "chosen"), reply_of(rejected_v, "rejected"), system
    )


# ---- unpaired converters ----------------------------------------------------------------------------------


def kto_tag(row: Row, tags: Tags = NO_TAGS) -> KTOExample:
    tag_key = "kto_tag" if "kto_tag" in row else "label"
    label = label_of(row.get(tag_key), tag_key)
    system = row.get("system") if isinstance(row.get("system"), str) and row.get("system") else None
    if "instruction" in row:
        output = row.get("output", row.get("response"))
        return KTOExample(alpaca_prompt(row), reply_of(output, "output"), label, system)
    key = next((k for k in ("messages", "conversations", "completion") if k in row), "messages")
    conv = messages_of(row.get(key), key, tags)
    if conv[-1].role != "assistant" or not conv[-1].content.strip():
        raise bad(key, "the conversation must end with a non-empty assistant reply")
    prompt, system = split_system(conv[:-1], system)
    return KTOExample(check_prompt(prompt, key), conv[-1].content, label, system)


def trl_unpaired(row: Row, tags: Tags = NO_TAGS) -> KTOExample:
    raw = row.get("prompt")
    if isinstance(raw, str) and raw.strip():
        prompt, system = [Message("user", raw)], None
    else:
        prompt, system = split_system(messages_of(raw, "prompt"), row.get("system"))
    label = label_of(row.get("label"), "label")
    return KTOExample(
        check_prompt(prompt, "prompt"), reply_of(row.get("completion"), "completion"), label, system
    )


def _any(*keys: str) -> Callable[[Row], bool]:
    return lambda row: any(k in row for k in keys)


def preference_task(row: Row) -> str | None:
    """ "preference" or "kto" when a row's keys mark it as DPO/KTO data, else None (SFT rows, or unknown).

    Narrower than the formats' own detects (a sharegpt_ranking row is any `conversations` row once the task
    is known): chosen + rejected, a rejected_* field (ms-swift, LLaMA-Factory v1), a kto_tag or a true/false
    label.

    >>> preference_task({"conversations": [], "chosen": {}, "rejected": {}}), preference_task({"messages": []})
    ('preference', None)
    """
    if not isinstance(row, Mapping):
        return None
    if ("chosen" in row and "rejected" in row) or "rejected_response" in row or "rejected_messages" in row:
        return "preference"
    if "kto_tag" in row or isinstance(row.get("label"), bool):
        return "kto"
    return None


# Plain dict registries in the data layer's `Format` shape; the first format whose `detect` matches wins.
# lf_columns: LLaMA-Factory dataset_info `columns` keys -> the field names these converters read.
PREFERENCE_FORMATS: dict[str, Format] = {
    "swift_rejected": Format(
        swift_rejected,
        _any("rejected_response", "rejected_messages"),
        "ms-swift messages + rejected_response (or rejected_messages)",
        {"messages": "messages", "rejected_response": "rejected_response", "system": "system"},
    ),
    "sharegpt_ranking": Format(
        sharegpt_ranking,
        lambda row: "conversations" in row or ("messages" in row and "chosen" in row),
        "LLaMA-Factory ranking sharegpt: conversations + chosen/rejected messages",
        {"messages": "conversations", "chosen": "chosen", "rejected": "rejected", "system": "system"},
    ),
    "alpaca_ranking": Format(
        alpaca_ranking,
        has_keys("instruction", "chosen"),
        "LLaMA-Factory ranking alpaca: instruction/input/chosen/rejected/system/history",
        {
            "prompt": "instruction",
            "query": "input",
            "chosen": "chosen",
            "rejected": "rejected",
            "system": "system",
            "history": "history",
        },
    ),
    "trl": Format(
        trl_preference,
        has_keys("chosen", "rejected"),
        "TRL prompt/chosen/rejected (strings or message lists; prompt may be implicit)",
        {"prompt": "prompt", "chosen": "chosen", "rejected": "rejected"},
    ),
}


def _dispatch(formats: Mapping[str, Format], what: str) -> Callable[[Row, Tags], Any]:
    """A converter that picks the first matching format: dataset_info entries only say `ranking: true`."""

    def convert(row: Row, tags: Tags) -> Any:
        for fmt in formats.values():
            if fmt.detect(row):
                return fmt.convert(row, tags)
        raise bad("row", f"cannot tell the {what} layout from the keys {sorted(row)}")

    return convert


def _merged_columns(formats: Mapping[str, Format]) -> dict[str, str]:
    return {k: v for f in formats.values() for k, v in f.lf_columns.items()}


# The loader names dataset_info `ranking: true` entries "preference" and `kto_tag` entries "kto".
PREFERENCE_FORMATS["preference"] = Format(
    _dispatch(dict(PREFERENCE_FORMATS), "preference"),
    lambda row: False,  # only chosen by name; auto-detection finds the specific format itself
    "a dataset_info `ranking: true` entry (sharegpt or alpaca)",
    {**_merged_columns(PREFERENCE_FORMATS), "messages": "conversations"},
)

KTO_FORMATS: dict[str, Format] = {
    "trl_unpaired": Format(trl_unpaired, has_keys("prompt", "completion"), "TRL prompt/completion/label"),
    "kto_tag": Format(
        kto_tag,
        _any("kto_tag", "label"),
        "a conversation ending with the reply + kto_tag/label true|false (LLaMA-Factory, ms-swift)",
        {
            "messages": "messages",
            "kto_tag": "kto_tag",
            "system": "system",
            "prompt": "instruction",
            "query": "input",
            "response": "output",
        },
    ),
}

KTO_FORMATS["kto"] = Format(
    _dispatch(dict(KTO_FORMATS), "KTO"),
    lambda row: False,
    "a dataset_info entry with a kto_tag column",
    {**_merged_columns(KTO_FORMATS)},
)


def convert_rows(
    rows: Iterable[tuple[str, Row]],
    formats: Mapping[str, Format],
    format: str = "auto",
    tags: Tags = NO_TAGS,
) -> list[Any]:
    """Convert (source, row) pairs, collecting every `source:field: problem` into one DataError.

    temper.data.load.load_records does this for files; this is the in-memory version (tests, Python API).

    Example:
        >>> try:
        ...     convert_rows([("a.json:1", {"prompt": "hi", "chosen": "hello", "rejected": ""})], PREFERENCE_FORMATS)
        ... except DataError as e:
        ...     print(e.problems)
        ['a.json:1:rejected: missing or empty reply']
    """
    records, problems, n = [], [], 0
    for source, row in rows:
        n += 1
        name = format if format != "auto" else next((k for k, f in formats.items() if f.detect(row)), None)
        if name is None:
            problems.append(f"{source}: cannot tell the format from the keys {sorted(row)}")
            continue
        try:
            record = formats[name].convert(row, tags)
        except RowError as e:
            problems += [f"{source}:{field}: {message}" for field, message in e.problems]
            continue
        record.source = source
        records.append(record)
    if problems:
        raise DataError(
            f"{len(problems)} problem(s) in {n} rows:",
            problems,
            hint=f"Fix the rows, or pass --format explicitly (one of {', '.join(formats)}).",
        )
    return records

"""Peer keys that are read together: one key's meaning depends on another, or one key stands for two of
temper's. `translate` (config/foreign.py) reads the others one at a time."""

from __future__ import annotations

import re
from typing import Any

from temper.errors import ConfigError


def whole_config_keys(values: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(values with the peer keys that depend on other keys, or stand for two temper keys, rewritten; notes).

    `translate` reads one key at a time; these need the whole config:
    - ms-swift's stopping_strategy is read only together with interleave_prob: without it, ms-swift concatenates
      its datasets, whatever stopping_strategy says (and every ms-swift args.json has one, first_exhausted by
      default). Translated on its own it would make temper interleave where ms-swift does not.
    - ms-swift's init_weights: pissa (the full SVD) or pissa_niter_N (a fast SVD of N iterations), peft's
      spellings, are temper's pissa_init with pissa_iter -1 or N.
    - ms-swift's train_type llamapro (with llamapro_num_new_blocks N, default 4) is temper's freeze tuning with
      expand_blocks N: N pass-through layers inserted when the model loads, and only they train.
    """
    out = dict(values)
    norm = {k.replace("-", "_"): k for k in out}
    # An args.json lists every option, unset ones as null: only a value that is there counts.
    given = {n for n, k in norm.items() if out[k] not in (None, "None", "", [])}
    notes: list[str] = []
    if "stopping_strategy" in given and not given & {"interleave_prob", "interleave_probs", "mix_strategy"}:
        value = out.pop(norm["stopping_strategy"])
        notes.append(
            f"ignored: stopping_strategy {value} (ms-swift applies it only with interleave_prob; without, the "
            "datasets are concatenated)"
        )
    if "init_weights" in given:
        pissa = re.fullmatch(r"pissa(?:_niter_(\d+))?", str(out[norm["init_weights"]]).strip().lower())
        if pissa:
            del out[norm["init_weights"]]
            out["pissa_init"], out["pissa_iter"] = True, int(pissa.group(1)) if pissa.group(1) else -1
    # ms-swift's key in a YAML or args.json; on the command line --train_type arrives as temper's `tuning`
    kind = next((norm[k] for k in ("train_type", "tuner_type", "tuning") if k in given), None)
    if kind and str(out[kind]).strip().lower() == "llamapro":
        blocks = out.pop(norm["llamapro_num_new_blocks"], 4) if "llamapro_num_new_blocks" in norm else 4
        groups = out.pop(norm["llamapro_num_groups"], None) if "llamapro_num_groups" in norm else None
        if groups not in (None, "None", "") and int(groups) != int(blocks):
            raise ConfigError(
                f"llamapro_num_groups {groups} with llamapro_num_new_blocks {blocks}: temper inserts one layer "
                "after every layers / N, as ms-swift does with the groups left at their default.",
                hint="Drop llamapro_num_groups (or set it to llamapro_num_new_blocks).",
                key="llamapro_num_groups",
            )
        out[kind], out["expand_blocks"] = "freeze", int(blocks)
        notes.append(f"{kind} llamapro -> tuning freeze, expand_blocks {int(blocks)}")
    return out, notes

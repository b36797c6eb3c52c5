"""`temper.evaluate(cfg)`: load the items once, score one model (or two with `compare`), write the report.

Top to bottom: resolve the data (dataset_args / data_dir) -> load and validate every item -> for each model:
load it, score each subset (MCQ letters, QA generations or perplexity) -> rows -> table, JSON, samples jsonl.

Example:
    >>> from temper.evaluation.config import EvalConfig
    >>> cfg = EvalConfig.from_sources(None, ["--model", "smollm2-135m-instruct", "--eval-dataset", "ceval",
    ...                                      "--data-dir", "../shared/data/ceval", "--limit", "5"])
    >>> report = evaluate(cfg)  # doctest: +SKIP
    >>> report["output_dir"]  # doctest: +SKIP
    'evals/eval-ceval-20261123-181500'
"""

from __future__ import annotations

import gc
import sys
import time
from pathlib import Path
from typing import Any

from temper.errors import ConfigError
from temper.evaluation import report as rep
from temper.evaluation.config import EvalCfg, EvalConfig
from temper.evaluation.datasets import MCQSubset, QASubset, load_mcq, load_qa

DATASET_ARG_KEYS = ("local_path", "subset_list", "few_shot_num")
MCQ_METRIC = "AverageAccuracy"


def dataset_args(e: EvalCfg) -> dict[str, Any]:
    """This dataset's entry of --dataset-args, checked (other datasets' entries are ignored)."""
    args = e.dataset_args.get(e.eval_dataset, {})
    if not isinstance(args, dict):
        raise ConfigError(f"dataset_args[{e.eval_dataset!r}]: got {args!r}, expected a JSON object.")
    unknown = sorted(set(args) - set(DATASET_ARG_KEYS))
    if unknown:
        raise ConfigError(
            f"dataset_args[{e.eval_dataset!r}]: unknown key(s) {', '.join(unknown)}.",
            hint=f"Known keys: {', '.join(DATASET_ARG_KEYS)}.",
        )
    return args


def load_items(e: EvalCfg) -> list[MCQSubset] | list[QASubset] | list[str]:
    """The items every model is scored on: MCQ subsets, QA subsets, or (ppl) the data files."""
    if e.eval_dataset == "ppl":
        if not e.data:
            raise ConfigError(
                "eval_dataset=ppl needs data files.", hint="Pass --data FILE (txt, json, jsonl ...)."
            )
        return list(e.data)
    args = dataset_args(e)
    root = args.get("local_path") or e.data_dir
    if not root:
        raise ConfigError(
            f"{e.eval_dataset}: no data folder given.",
            hint=f'Pass --data-dir DIR or --dataset-args \'{{"{e.eval_dataset}": {{"local_path": "DIR"}}}}\'.',
        )
    subsets = list(args.get("subset_list") or e.subset)
    if e.eval_dataset == "general_qa":
        return load_qa(root, subsets, e.limit)
    few_shot = e.few_shot if e.few_shot is not None else int(args.get("few_shot_num", 0))
    return load_mcq(e.eval_dataset, root, subsets, e.limit, few_shot)


def score_model(
    model: Any, tok: Any, e: EvalCfg, items: Any, chat: bool
) -> tuple[list[rep.SubsetScore], Any]:
    """Score every subset; returns the SubsetScores and (ppl) the corpus-level overall numbers."""
    from temper.evaluation import mcq, perplexity, qa

    if e.eval_dataset == "ppl":
        res = perplexity.perplexity(model, tok, items, e.max_length, e.system, e.progress)
        score = rep.SubsetScore("all", res["rows"], {"perplexity": res["perplexity"]}, samples=res["samples"])
        return [score], {"perplexity": res["perplexity"]}
    out = []
    for subset in items:
        if isinstance(subset, QASubset):
            rows = qa.score_qa(model, tok, subset, chat, e.system, e.per_device_eval_batch_size,
                               e.max_new_tokens or 256, e.progress)  # fmt: skip
            metrics = qa.mean_metrics(rows)
            out.append(rep.SubsetScore(subset.name, len(rows), metrics, samples=rows))
            continue
        if e.mcq_mode == "generate":
            rows = mcq.score_mcq_generate(model, tok, subset, chat, e.system, e.per_device_eval_batch_size,
                                          e.max_new_tokens or 16, e.progress)  # fmt: skip
        else:
            rows = mcq.score_mcq_logits(model, tok, subset, chat, e.system, e.per_device_eval_batch_size,
                                        e.max_length, e.prefix_cache, e.progress)  # fmt: skip
        acc = sum(r["score"] for r in rows) / len(rows)
        out.append(rep.SubsetScore(subset.name, len(rows), {MCQ_METRIC: acc}, subset.category, rows))
    return out, None


def _load(cfg: EvalConfig, name: str) -> tuple[Any, Any, Any]:
    from temper.models.adapters import fold_single_adapter
    from temper.models.load import load_causal_lm, resolve_model

    # The config's adapter goes with its model; a --compare model is taken as it is.
    ref = resolve_model(name, cfg.model.adapter if name == cfg.model.model else None)
    model, tok = load_causal_lm(ref, dtype=cfg.model.dtype, attn_implementation=cfg.model.attn_implementation)
    model = fold_single_adapter(model)  # a run dir's adapter answers every question: fold it in (fp32 only)
    if cfg.model.template:
        from temper.data.templates import prepare_tokenizer

        tok = prepare_tokenizer(tok, cfg.model.template)
    return ref, model, tok


def label(name: str) -> str:
    """How a model is named in the table: the alias, or the folder name of a path."""
    return Path(name).name if ("/" in name or Path(name).exists()) else name


def evaluate(cfg: EvalConfig) -> dict[str, Any]:
    """Run the evaluation described by `cfg`; print the table, write the report, return it as a dict."""
    import torch

    from temper.evaluation.prompts import uses_chat_template

    e = cfg.eval
    if e.num_threads:
        torch.set_num_threads(e.num_threads)
    torch.manual_seed(e.seed)
    items = load_items(e)
    names = [cfg.model.model] + ([e.compare] if e.compare else [])
    results: list[dict[str, Any]] = []
    first_ref = None
    for name in names:
        start = time.perf_counter()
        ref, model, tok = _load(cfg, name)
        first_ref = first_ref or ref
        chat = uses_chat_template(tok, e.chat_template)
        subsets, overall = score_model(model, tok, e, items, chat)
        seconds = time.perf_counter() - start
        rows = rep.summary_rows(label(name), e.eval_dataset, subsets, overall)
        results.append({"name": name, "label": label(name), "subsets": subsets, "rows": rows, "seconds": seconds,
                        "chat_template": chat})  # fmt: skip
        del model
        gc.collect()
    return _finish(cfg, results, first_ref)


def _finish(cfg: EvalConfig, results: list[dict[str, Any]], ref: Any) -> dict[str, Any]:
    from rich.console import Console

    e = cfg.eval
    base = (
        Path(e.output_dir)
        if e.output_dir
        else (ref.run_dir if ref is not None and ref.run_dir else Path("evals"))
    )
    out_dir = rep.new_output_dir(base, e.eval_dataset)
    rows = [r for res in results for r in res["rows"]]
    compared = rep.compare_rows(results[0]["rows"], results[1]["rows"]) if len(results) > 1 else []
    report = {
        "dataset": e.eval_dataset,
        "models": [
            {
                "name": r["name"],
                "label": r["label"],
                "seconds": round(r["seconds"], 2),
                "chat_template": r["chat_template"],
            }
            for r in results
        ],  # fmt: skip
        "config": cfg.to_dict(),
        "compare": compared,
        "output_dir": str(out_dir),
    }
    rep.write_report(out_dir, report, rows)
    seen: set[str] = set()
    for res in results:
        suffix = "" if len(results) == 1 else f"-{rep.safe_name(res['label'])}"
        suffix += "-2" if suffix in seen else ""  # the same model compared with itself
        seen.add(suffix)
        rep.write_samples(out_dir / f"samples{suffix}.jsonl", res["label"], res["subsets"])
    # Not a terminal (a log file, a pipe): rich would fit the table into 80 columns, cutting metric and subset
    # names ("AverageAccu…"), and break the paths below across lines; a log has room for both.
    console = Console() if sys.stdout.isatty() else Console(width=200, soft_wrap=True)
    console.print(rep.render_table(rows, title=f"temper eval: {e.eval_dataset}"))
    if compared:
        console.print(rep.render_compare(compared, title="comparison (B - A)"))
    console.print(f"report: {out_dir}/report.json   samples: {out_dir}/samples*.jsonl")
    return {**report, "rows": rows}

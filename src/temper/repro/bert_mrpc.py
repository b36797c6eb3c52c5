"""BERT's MRPC fine-tuning protocol (Devlin et al. 2019, section 4.1 and appendix A.3; google-research/bert
run_classifier.py defaults) re-run with today's software on the bundled encoder.

Pinned: GLUE MRPC train (3,668 pairs) -> dev (408 pairs), max length 128, batch 32, learning rate 2e-5,
3 epochs, AdamW with weight decay 0.01, 10% linear warm-up then linear decay, fp32, seed 42, the final
checkpoint (no best-epoch selection on dev). The model is all-MiniLM-L6-v2 (22.7M parameters, 6 layers,
sentence-embedding distilled), not BERT-base (110M): the only encoder weights available offline. The
paper's GLUE number is on the hidden test set; dev is what we can score, so we also list the dev accuracy
that the BERT authors' README reports for the same command.

Example:
    >>> from temper.repro.bert_mrpc import run   # doctest: +SKIP
    >>> run("reports/bert-mrpc")                  # doctest: +SKIP
"""

from __future__ import annotations

import time
from pathlib import Path

from temper.config.encoder import ClassifyConfig
from temper.repro.report import Report, write_report

PAPER_F1 = (88.9, "Devlin et al. 2019, BERT, NAACL, Table 1: BERT-base MRPC F1 on the GLUE test server")
README_ACC = (
    84.55,
    "google-research/bert README: BERT-base MRPC dev accuracy with this exact command (84-88% over reruns)",
)

PROTOCOL = {
    "task": "glue-mrpc",
    "max_length": 128,
    "per_device_train_batch_size": 32,
    "learning_rate": 2e-5,
    "num_train_epochs": 3,
    "weight_decay": 0.01,
    "warmup_ratio": 0.1,
    "lr_scheduler_type": "linear",
    "bf16": "false",
    "seed": 42,
    "load_best_model": False,
}


def run(
    out_dir: str | Path, quick: bool = False, model: str = "minilm-l6", data_dir: str | Path | None = None
) -> Report:
    """Fine-tune under the pinned protocol into out_dir/run and write out_dir/report.{md,json}.

    quick: 32 training and 32 dev pairs, one epoch (a CI smoke test of the whole path, not a result).
    """
    from temper.recipes.classify import train_classifier

    start = time.perf_counter()
    out = Path(out_dir)
    values = {
        **PROTOCOL,
        "model": model,
        "output_dir": str(out / "run"),
        "overwrite_output_dir": True,
        "save_total_limit": 1,
    }
    if data_dir is not None:
        values["data_dir"] = str(data_dir)
    if quick:
        values.update(max_train_samples=32, max_eval_samples=32, num_train_epochs=1)
    result = train_classifier(ClassifyConfig.from_dict(values, source="repro bert-mrpc"))
    acc = 100 * result.metrics["eval_accuracy"]
    f1 = 100 * result.metrics["eval_f1"]
    report = Report(
        "bert-mrpc",
        "BERT (Devlin et al. 2019) MRPC fine-tuning protocol, re-run on the bundled encoder",
        model=f"{model} — NOT BERT-base: all-MiniLM-L6-v2 (22.7M params) is the only encoder available offline",
        protocol={
            **{k: v for k, v in PROTOCOL.items()},
            **({"QUICK": "32 train / 32 dev rows, 1 epoch"} if quick else {}),
        },
        quick=quick,
    )
    report.add("MRPC dev F1 (x100)", f1, PAPER_F1[0], PAPER_F1[1], note="paper: BERT-base on the test set")
    report.add(
        "MRPC dev accuracy (x100)",
        acc,
        README_ACC[0],
        README_ACC[1],
        note="same split (dev), different model",
    )
    report.tables["All dev metrics of our run"] = [
        {"metric": k[5:], "value": round(v, 4)}
        for k, v in result.metrics.items()
        if not k.endswith(("runtime", "per_second"))
    ]
    report.notes += [
        "MRPC dev has 408 pairs: one pair is 0.25 accuracy points, and reruns with other seeds move results by "
        "several points (the BERT README reports 84-88% for BERT-base).",
        "The paper tuned the learning rate per task on dev and reported test-server numbers; we pin 2e-5 and "
        "report dev, as the BERT README does.",
        f"Run directory (weights, metrics.jsonl, loss.png): {out / 'run'}; training took {result.seconds:.0f} s.",
    ]
    report.seconds = time.perf_counter() - start
    write_report(report, out)
    return report

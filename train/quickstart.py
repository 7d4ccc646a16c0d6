"""The quickstart: build nano and RSMEB-lite, evaluate, train on `train`, evaluate on `test`, report.

Writes ``OUT/before/results.json`` and ``OUT/after/results.json`` (RSMEB results format), ``OUT/report.md``
(before/after table) and ``OUT/report.png`` (per-family chart), and the trained model in ``OUT/model``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def before_after_table(before: dict[str, Any], after: dict[str, Any]) -> str:
    lines = ["| task | family | chance | before | after | change |", "|---|---|---|---|---|---|"]
    for name, b in before["tasks"].items():
        a = after["tasks"][name]
        if b["status"] != "ok":
            continue
        lines.append(f"| {name} | {b['family']} | {b['chance']:.3f} | {b['score']:.3f} | {a['score']:.3f} | "
                     f"{a['score'] - b['score']:+.3f} |")
    lines += ["", "| family | chance | before | after |", "|---|---|---|---|"]
    for family, score in before["families"].items():
        lines.append(f"| {family} | {before['families_chance'][family]:.3f} | {score:.3f} | {after['families'][family]:.3f} |")
    lines += ["", f"**Overall** (mean of families): before {before['overall']:.3f}, after {after['overall']:.3f} "
                  f"({after['overall'] - before['overall']:+.3f})."]
    return "\n".join(lines) + "\n"


def quickstart(out: str | os.PathLike, max_steps: int | None = None, tasks: list[str] | None = None,
               config_path: str | os.PathLike | None = None, seed: int = 0) -> dict[str, Any]:
    from rsmeb_eval.builders.lite import LITE_NOTES, build_lite
    from rsmeb_eval.dataset_io import write_dataset
    from rsmeb_eval.encoders import SentenceTransformerEncoder
    from rsmeb_eval.evaluator import evaluate
    from rsmeb_eval.report import family_chart, write_report
    from vlm2geovec.checkpoint import build_nano, save_checkpoint
    from vlm2geovec_train.recipe import TrainConfig, train

    out = Path(out)
    nano_dir, data_dir = out / "nano", out / "rsmeb-lite"
    print(f"[1/5] nano model -> {nano_dir}")
    model, processor = build_nano(seed=seed)
    save_checkpoint(model, processor, nano_dir)
    if not (data_dir / "README.md").is_file():
        print(f"[2/5] RSMEB-lite -> {data_dir}")
        write_dataset(data_dir, build_lite(seed=0), "RSMEB-lite", LITE_NOTES)
    print("[3/5] evaluate the untrained model on RSMEB-lite test")
    before = evaluate(SentenceTransformerEncoder(nano_dir, name="nano (untrained)"), data_dir, tasks=tasks)
    write_report(before, out / "before")
    config_path = config_path or Path(__file__).parent / "configs" / "nano.yaml"
    config = TrainConfig.from_yaml(config_path, model=str(nano_dir), data=str(data_dir), tasks=tasks,
                                   max_steps=max_steps, seed=seed)
    print(f"[4/5] train {config.max_steps} steps on RSMEB-lite train")
    _, trainer, _ = train(config, out / "model")
    print("[5/5] evaluate the trained model on RSMEB-lite test")
    after = evaluate(SentenceTransformerEncoder(out / "model", name="nano (trained)"), data_dir, tasks=tasks)
    write_report(after, out / "after")
    from vlm2geovec_train.recipe import write_model_card

    rows = {name: len(dataset) for name, dataset in trainer.train_dataset.items()}
    write_model_card(out / "model", config, rows, results=after)
    table = before_after_table(before, after)
    (out / "report.md").write_text(f"# Quickstart: nano on RSMEB-lite\n\n{table}", encoding="utf-8")
    family_chart({"before": before, "after": after}, out / "report.png", title="nano on RSMEB-lite test")
    print(table)
    print(f"wrote {out / 'report.md'}, {out / 'report.png'}, {out / 'before'}, {out / 'after'}")
    return {"before": before, "after": after}

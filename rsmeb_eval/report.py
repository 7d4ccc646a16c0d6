"""Write evaluation results: results.json, results.md (a table with chance beside every score) and a chart."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from rsmeb_eval.schema import FAMILIES


def markdown_table(results: dict[str, Any]) -> str:
    lines = [f"# RSMEB results — {results['model']} ({results['split']} split)", "",
             "| task | family | metric | score | chance | queries |", "|---|---|---|---|---|---|"]
    for name, r in results["tasks"].items():
        if r["status"] != "ok":
            lines.append(f"| {name} | {r['family']} | {r['main_score']} | n/a ({r['status']}: {r.get('reason', '')}) | | |")
            continue
        chance = f"{r['chance']:.3f}" if r.get("chance") is not None else ""
        lines.append(f"| {name} | {r['family']} | {r['main_score']} | {r['score']:.3f} | {chance} | {r['n_queries']} |")
    lines += ["", "| family | score | chance |", "|---|---|---|"]
    for family, score in results["families"].items():
        chance = results.get("families_chance", {}).get(family)
        lines.append(f"| {family} | {score:.3f} | {'' if chance is None else f'{chance:.3f}'} |")
    if results.get("overall") is not None:
        lines += ["", f"**Overall** (mean of families): {results['overall']:.3f}"]
    return "\n".join(lines) + "\n"


def family_chart(results_by_label: dict[str, dict[str, Any]], path: str | os.PathLike, title: str = "RSMEB") -> None:
    """Grouped bars per family for one or more result sets (e.g. before/after training), with chance marks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    families = [f for f in FAMILIES if any(f in r["families"] for r in results_by_label.values())]
    width = 0.8 / max(1, len(results_by_label))
    fig, ax = plt.subplots(figsize=(1.6 * len(families) + 2, 4.2), dpi=120)
    x = np.arange(len(families))
    for i, (label, results) in enumerate(results_by_label.items()):
        values = [results["families"].get(f, np.nan) for f in families]
        ax.bar(x + i * width - 0.4 + width / 2, values, width, label=label)
    chance = next(iter(results_by_label.values())).get("families_chance", {})
    for j, family in enumerate(families):
        if family in chance:
            ax.hlines(chance[family], j - 0.42, j + 0.42, colors="black", linestyles="dashed", linewidth=1)
    ax.set_xticks(x, [f.replace("_", "\n") for f in families], fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("main score (family mean)")
    ax.set_title(f"{title} (dashed: chance)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(results: dict[str, Any], out_dir: str | os.PathLike) -> dict[str, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "results.json", "markdown": out_dir / "results.md", "chart": out_dir / "families.png"}
    paths["json"].write_text(json.dumps(results, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    paths["markdown"].write_text(markdown_table(results), encoding="utf-8")
    if results["families"]:
        family_chart({results["model"]: results}, paths["chart"], title=f"RSMEB — {results['model']}")
    return paths

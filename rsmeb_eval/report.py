"""Write evaluation results: results.json, results.md (a table with chance beside every score) and a chart."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from rsmeb_eval.schema import FAMILIES


def markdown_table(results: dict[str, Any]) -> str:
    lines = [f"# RSMEB results — {results['model']} ({results['split']} split)", "",
             "| task | family | metric | score | 95% CI | chance | queries |", "|---|---|---|---|---|---|---|"]
    for name, r in results["tasks"].items():
        if r["status"] != "ok":
            lines.append(f"| {name} | {r['family']} | {r['main_score']} | n/a ({r['status']}: {r.get('reason', '')}) "
                         "| | | |")
            continue
        chance = f"{r['chance']:.3f}" if r.get("chance") is not None else ""
        lines.append(f"| {name} | {r['family']} | {r['main_score']} | {r['score']:.3f} | {interval_text(r)} | {chance} | "
                     f"{r['n_queries']} |")
    lines += ["", "| family | score | chance |", "|---|---|---|"]
    for family, score in results["families"].items():
        chance = results.get("families_chance", {}).get(family)
        lines.append(f"| {family} | {score:.3f} | {'' if chance is None else f'{chance:.3f}'} |")
    if results.get("overall") is not None:
        lines += ["", f"**Overall** (mean of families): {results['overall']:.3f}"]
    return "\n".join(lines) + "\n"


def interval_text(task_result: dict[str, Any]) -> str:
    """'0.412–0.520': the 95% bootstrap interval of the main score, where the metric has one."""
    ci = task_result.get(f"{task_result['main_score']}_ci95")
    return f"{ci[0]:.3f}–{ci[1]:.3f}" if ci else "n/a"


def task_chart(results_by_label: dict[str, dict[str, Any]], path: str | os.PathLike, title: str = "RSMEB") -> None:
    """Grouped bars per task for one or more result sets (e.g. before/after training): the main score with its
    95% bootstrap interval as an error bar, the task's number of test queries under its name, chance dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    first = next(iter(results_by_label.values()))
    names = [n for n, r in first["tasks"].items() if r["status"] == "ok"]
    width = 0.8 / max(1, len(results_by_label))
    fig, ax = plt.subplots(figsize=(1.25 * len(names) + 2, 4.6), dpi=120)
    x = np.arange(len(names))
    for i, (label, results) in enumerate(results_by_label.items()):
        tasks = [results["tasks"][n] for n in names]
        values = np.array([t["score"] for t in tasks])
        cis = [t.get(f"{t['main_score']}_ci95") or [t["score"], t["score"]] for t in tasks]
        errors = np.array([[v - lo for v, (lo, _) in zip(values, cis)], [hi - v for v, (_, hi) in zip(values, cis)]])
        ax.bar(x + i * width - 0.4 + width / 2, values, width, yerr=np.clip(errors, 0, None), capsize=2, label=label)
    for j, name in enumerate(names):
        if first["tasks"][name].get("chance") is not None:
            ax.hlines(first["tasks"][name]["chance"], j - 0.42, j + 0.42, colors="black", linestyles="dashed",
                      linewidth=1)
    labels = [n.replace("-", "\n") + f"\nn={first['tasks'][n]['n_queries']}" for n in names]
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("main score (P@1), 95% bootstrap CI")
    ax.set_title(f"{title} (dashed: chance)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


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
    paths = {"json": out_dir / "results.json", "markdown": out_dir / "results.md", "chart": out_dir / "families.png",
             "task_chart": out_dir / "tasks.png"}
    paths["json"].write_text(json.dumps(results, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    paths["markdown"].write_text(markdown_table(results), encoding="utf-8")
    if results["families"]:
        family_chart({results["model"]: results}, paths["chart"], title=f"RSMEB — {results['model']}")
        task_chart({results["model"]: results}, paths["task_chart"], title=f"RSMEB — {results['model']}")
    return paths

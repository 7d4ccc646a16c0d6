"""The RSMEB dataset card: YAML configs, the task table, and the reconstruction disclaimer."""

from __future__ import annotations

from rsmeb_eval.registry import get_task

DISCLAIMER = (
    "RSMEB's official task list (the paper reports 21 tasks in six families) is not published yet: this "
    "benchmark is our reconstruction from the paper's abstract and the public datasets behind each family."
)


def task_table(names: list[str]) -> str:
    lines = ["| task | family | source | query → candidates | instruction (query) | candidates | metric | licence |",
             "|---|---|---|---|---|---|---|---|"]
    for name in names:
        m = get_task(name).metadata
        protocol = m.main_score + (" (+ full-corpus R@k, nDCG@10, MRR)" if "corpus" in m.protocol else "")
        lines.append(
            f"| {m.name} | {m.family} | {m.source} | {'+'.join(m.query_modalities)} → "
            f"{'+'.join(m.candidate_modalities)} | {m.query_instruction} | {m.candidates} | {protocol} | {m.license} |"
        )
    return "\n".join(lines)


def dataset_card(names: list[str], configs_yaml: str, title: str = "RSMEB", notes: str = "") -> str:
    return (
        f"---\n{configs_yaml}license: other\ntags:\n- remote-sensing\n- embedding-benchmark\n- rsmeb\n---\n\n"
        f"# {title}\n\n{DISCLAIMER}\n\n"
        "Each task has two configs: `<task>` (queries with `candidate_ids` and `positive_ids`) and "
        "`<task>-corpus` (the items candidates point to). Items are stored model-agnostically as `image` "
        "(PNG bytes), `text`, `bbox` (pixel `[x1, y1, x2, y2]` boxes on that row's image), `lat`, `lon`; "
        "instructions are not stored in the data (they are the task's metadata, listed below).\n\n"
        "```python\nfrom datasets import load_dataset\n"
        f"queries = load_dataset(\"path/to/this/folder\", \"{names[0] if names else 'TASK'}\", split=\"test\")\n```\n\n"
        f"## Tasks\n\n{task_table(names)}\n\n"
        "Metrics: `p@1` over each query's fixed candidate list (MMEB protocol; ties count against the model); "
        "full-corpus retrieval adds R@1/5/10 (a relevant item in the top k), their mean, nDCG@10 and MRR.\n\n"
        f"{notes}"
    )

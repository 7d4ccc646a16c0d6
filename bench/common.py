"""What every benchmark script does with its record: print it, write the JSON, append to RESULTS.md."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable


def write_outputs(record: dict, json_path: str | None, results_md: str | None, quick: bool,
                  md_lines: Callable[[dict], list[str]]) -> dict:
    print(json.dumps(record, indent=2))
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(record, indent=2) + "\n")
    if results_md and not quick:  # quick runs (CI) never touch the recorded results
        with open(results_md, "a", encoding="utf-8") as handle:
            handle.writelines(md_lines(record))
    return record

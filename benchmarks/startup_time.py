"""Launch to first paint and launch to "ready" on the demo model, as a user starts it.

Usage:
    python benchmarks/startup_time.py [--runs 5] [--model demo]

Starts the real `llama-tui` (this checkout, `python -m llama_tui`) in an 80x24 pseudo-terminal
`--runs` times (after one unmeasured start that warms the page cache and converts the demo
GGUF if needed) and prints, per run and as medians: process start until the first screen is
written, and until the status bar says "ready". With `--phases` it also times, in this
process, importing torch, importing transformers and the model load (the load's first time in
a process includes transformers' own lazy imports). LLAMA_TUI_HOME is a temporary folder whose
cache/ links to the real llama-tui cache. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import platformdirs

sys.path.insert(0, str(Path(__file__).resolve().parent))
from app_speed import PtyApp  # a sibling script, not a package


def launch(home: Path, model: str) -> tuple[float, float]:
    app = PtyApp(home, "--model", model)
    try:
        _, painted = app.wait_for(b"Type a message", timeout=60)
        _, ready = app.wait_for(b"ready", timeout=600)
    finally:
        app.stop()
    return painted - app.started, ready - app.started


def phases(model: str) -> None:
    t0 = time.perf_counter()
    import torch  # noqa: F401

    t1 = time.perf_counter()
    import transformers  # noqa: F401

    t2 = time.perf_counter()
    from llama_tui.config.settings import load_settings
    from llama_tui.engine.local.backend import LocalBackend

    settings = load_settings(cli={"model": model}).settings
    backend = LocalBackend(settings.model, settings.load_options())
    backend.load()
    t3 = time.perf_counter()
    backend.close()
    print(f"import torch {t1 - t0:.2f} s, import transformers {t2 - t1:.2f} s, "
          f"first load in the process (with transformers' lazy imports) {t3 - t2:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--model", default="demo")
    parser.add_argument("--phases", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        real_cache = Path(platformdirs.user_cache_dir("llama_tui", appauthor=False))
        real_cache.mkdir(parents=True, exist_ok=True)
        (home / "cache").symlink_to(real_cache, target_is_directory=True)
        launch(home, args.model)  # warm-up: page cache, and the demo's one-off conversion
        paints, readies = [], []
        for i in range(args.runs):
            paint, ready = launch(home, args.model)
            paints.append(paint)
            readies.append(ready)
            print(f"run {i + 1}: first paint {paint:.2f} s, ready {ready:.2f} s", flush=True)
    print(f"median of {args.runs}: first paint {statistics.median(paints):.2f} s, "
          f"ready {statistics.median(readies):.2f} s")
    if args.phases:
        phases(args.model)


if __name__ == "__main__":
    main()

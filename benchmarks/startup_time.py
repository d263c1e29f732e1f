"""Launch to first paint and launch to "ready" on the demo model, as a user starts it.

Usage:
    python benchmarks/startup_time.py [--runs 5] [--model demo] [--phases]
    python benchmarks/startup_time.py --paint-only [--runs 15] [--no-bytecode] [--compare DIR]

Starts the real `llama-tui` (this checkout, `python -m llama_tui`) in an 80x24 pseudo-terminal
`--runs` times (after one unmeasured start that warms the page cache and converts the demo
GGUF if needed) and prints, per run and as medians: process start until the first screen is
written (the welcome text), and until the status bar says "ready". Each launch alternates
with a minimal Textual app (one Static, the anchor of the target "first paint <= 1.3x a
minimal Textual app") measured the same way, and the ratio of the medians is printed, with
the ratio of the fastest runs (less sensitive to other users of a shared machine).
`--paint-only` skips waiting for "ready" (more runs in less time). `--compare DIR` also
launches, alternately, another copy of the package (DIR/llama_tui, e.g. an earlier commit:
`git archive COMMIT llama_tui | tar -x -C DIR`): before and after in the same run.

Bytecode: an installed package has its `.pyc` files; a checkout run with
PYTHONDONTWRITEBYTECODE=1 (set on our dev machines) compiles every module of ours from
source at each launch, ~60-80 ms of the first paint. So the script compiles the package
once (`compileall`, into the gitignored __pycache__ folders) and lets the launches use the
bytecode, unless `--no-bytecode`.

With `--phases` it also times, in this process, importing torch, importing transformers and
the model load (the load's first time in a process includes transformers' own lazy imports).
LLAMA_TUI_HOME is a temporary folder whose cache/ links to the real llama-tui cache. Not part
of the test suite.
"""

from __future__ import annotations

import argparse
import compileall
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import platformdirs

sys.path.insert(0, str(Path(__file__).resolve().parent))
from app_speed import MINIMAL_APP, PtyApp  # a sibling script, not a package

PACKAGE = Path(__file__).resolve().parent.parent / "llama_tui"


def launch(home: Path, model: str, *, wait_ready: bool = True) -> tuple[float, float]:
    """(first paint, ready) in seconds from process start; ready is 0 if not waited for."""
    app = PtyApp(home, "--model", model)
    try:
        _, painted = app.wait_for(b"Type a message", timeout=60)
        ready = app.wait_for(b"ready", timeout=600)[1] if wait_ready else app.started
    finally:
        app.stop()
    return painted - app.started, ready - app.started


def paint_in(home: Path, model: str, folder: Path) -> float:
    """First paint of the copy of llama_tui in `folder` (`python -m` imports it from the
    working directory, before the installed one)."""
    here = Path.cwd()
    os.chdir(folder)
    try:
        return launch(home, model, wait_ready=False)[0]
    finally:
        os.chdir(here)


def minimal_paint(home: Path) -> float:
    """The anchor: a minimal Textual app's first paint, measured the same way."""
    app = PtyApp(home, argv=[sys.executable, "-c", MINIMAL_APP])
    try:
        _, painted = app.wait_for(b"Type a message", timeout=60)
    finally:
        app.stop()
    return painted - app.started


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
    parser.add_argument("--paint-only", action="store_true", help="do not wait for ready")
    parser.add_argument("--compare", type=Path, metavar="DIR",
                        help="also time DIR/llama_tui (another version) alternately")
    parser.add_argument("--no-bytecode", action="store_true",
                        help="compile our modules from source at each launch")
    args = parser.parse_args()
    if not args.no_bytecode:
        os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
        compileall.compile_dir(PACKAGE, quiet=1)
        if args.compare:
            compileall.compile_dir(args.compare / "llama_tui", quiet=1)
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        real_cache = Path(platformdirs.user_cache_dir("llama_tui", appauthor=False))
        real_cache.mkdir(parents=True, exist_ok=True)
        (home / "cache").symlink_to(real_cache, target_is_directory=True)
        launch(home, args.model)  # warm-up: page cache, and the demo's one-off conversion
        minimal_paint(home)
        if args.compare:
            paint_in(home, args.model, args.compare)
        paints, readies, minimal, other = [], [], [], []
        for i in range(args.runs):  # alternated, so machine noise hits both alike
            paint, ready = launch(home, args.model, wait_ready=not args.paint_only)
            paints.append(paint)
            readies.append(ready)
            minimal.append(minimal_paint(home))
            if args.compare:
                other.append(paint_in(home, args.model, args.compare))
            print(f"run {i + 1}: first paint {paint:.3f} s (minimal app {minimal[-1]:.3f} s"
                  + (f", {args.compare}: {other[-1]:.3f} s" if other else "")
                  + f"), ready {ready:.2f} s", flush=True)
    paint, anchor = statistics.median(paints), statistics.median(minimal)
    print(f"median of {args.runs}: first paint {paint:.3f} s, minimal Textual app "
          f"{anchor:.3f} s: {paint / anchor:.2f}x (fastest runs: "
          f"{min(paints) / min(minimal):.2f}x); ready {statistics.median(readies):.2f} s")
    if other:
        before = statistics.median(other)
        print(f"{args.compare}: first paint {before:.3f} s: {before / anchor:.2f}x the minimal "
              f"app (fastest runs: {min(other) / min(minimal):.2f}x)")
    if args.phases:
        phases(args.model)


if __name__ == "__main__":
    main()

"""Resuming long saved sessions: time to the last message on screen, to "ready", to the
context meter's count.

Usage:
    python benchmarks/resume_long.py [--runs 3] [--sizes 20,200,1000,2000] [--model demo]

Writes saved JSON sessions (`/save x.json`'s format) of each size: alternating prompts and
replies of a few lines, every fifth reply with a code block, the last reply ending in a
marker. Then starts the real `llama-tui --resume FILE` (this checkout, `python -m
llama_tui`) in an 80x24 pseudo-terminal, as a user would, the sizes round-robin `--runs`
times after one unmeasured warm-up start, and prints per size (medians): process start
until the last message's marker is written to the terminal, until the status bar says
"ready" (the model loaded), and until the context meter shows a count instead of
`ctx ?/N`. Ratios are to the smallest size in the same run (the issue's target: the last
screen in under 1 s at 2,000 messages, and "ready" within 1.2x of a short session's).
LLAMA_TUI_HOME is a temporary folder whose cache/ links to the real llama-tui cache, so
the demo GGUF is converted at most once. Like `startup_time.py`, the package is compiled to
bytecode first and the launches use it (as an installed package does), unless
`--no-bytecode`. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import compileall
import os
import re
import statistics
import sys
import tempfile
from pathlib import Path

import platformdirs

sys.path.insert(0, str(Path(__file__).resolve().parent))
from app_speed import MINIMAL_APP, PtyApp  # a sibling script, not a package

CTX_COUNTED = re.compile(rb"ctx \d+")


def marker(size: int) -> str:
    return f"ZQXENDMARK{size}"


def write_session(folder: Path, size: int) -> Path:
    """A saved JSON session of `size` messages (half prompts, half replies)."""
    from llama_tui.session.export import save_conversation
    from llama_tui.session.transcript import Conversation

    conv = Conversation(title=f"bench {size}")
    for i in range(size // 2):
        conv.add("user", f"Question {i}: how would you explain topic number {i} to a friend?")
        reply = (
            f"Answer {i}. Here is a short explanation of topic {i}, in two sentences. "
            "It covers the main idea and one example.\n\nA second paragraph adds a "
            "detail or two that matter in practice."
        )
        if i % 5 == 4:
            reply += f"\n\n```python\ndef topic_{i}(x):\n    return x * {i}\n```"
        if i == size // 2 - 1:
            reply += f"\n\nThe end: {marker(size)}"
        conv.add("assistant", reply)
    path = folder / f"session-{size}.json"
    save_conversation(conv, str(path))
    return path


def resume(home: Path, model: str, path: Path, size: int) -> tuple[float, float, float]:
    """(last message shown, ready, context counted), seconds from process start."""
    app = PtyApp(home, "--model", model, "--resume", str(path))
    try:
        _, shown = app.wait_for(marker(size).encode(), timeout=300)
        _, ready = app.wait_for(b"ready", timeout=600)
        _, counted = app.wait_for(CTX_COUNTED, timeout=300)
    finally:
        app.stop()
    return shown - app.started, ready - app.started, counted - app.started


def minimal_paint(home: Path) -> float:
    """The anchor: a minimal Textual app's first paint, measured the same way."""
    app = PtyApp(home, argv=[sys.executable, "-c", MINIMAL_APP])
    try:
        _, painted = app.wait_for(b"Type a message", timeout=60)
    finally:
        app.stop()
    return painted - app.started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sizes", default="20,200,1000,2000")
    parser.add_argument("--model", default="demo")
    parser.add_argument("--no-bytecode", action="store_true")
    args = parser.parse_args()
    if not args.no_bytecode:
        os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
        compileall.compile_dir(Path(__file__).resolve().parent.parent / "llama_tui", quiet=1)
    sizes = [int(s) for s in args.sizes.split(",")]
    results: dict[int, list[tuple[float, float, float]]] = {s: [] for s in sizes}
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        real_cache = Path(platformdirs.user_cache_dir("llama_tui", appauthor=False))
        real_cache.mkdir(parents=True, exist_ok=True)
        (home / "cache").symlink_to(real_cache, target_is_directory=True)
        files = {s: write_session(Path(tmp), s) for s in sizes}
        resume(home, args.model, files[sizes[0]], sizes[0])  # warm-up: page cache, conversion
        minimal: list[float] = []
        for run in range(args.runs):
            minimal.append(minimal_paint(home))
            print(f"run {run + 1}: minimal Textual app first paint {minimal[-1]:.2f} s")
            for s in sizes:  # round-robin, so machine noise hits every size alike
                r = resume(home, args.model, files[s], s)
                results[s].append(r)
                print(
                    f"run {run + 1} size {s}: last message {r[0]:.2f} s, ready {r[1]:.2f} s, "
                    f"ctx counted {r[2]:.2f} s",
                    flush=True,
                )
    base = [statistics.median(x[k] for x in results[sizes[0]]) for k in range(3)]
    print(
        f"\nmedians of {args.runs} runs, ratios to the {sizes[0]}-message session in the same run"
    )
    anchor = statistics.median(minimal)
    print(f"(a minimal Textual app's first paint in the same run: {anchor:.2f} s; the last")
    print("message's time is also given as a multiple of it, which holds better than seconds")
    print("when other programs share the machine)")
    print("| messages | last message on screen | x minimal app | ready | ctx counted |")
    print("|---|---|---|---|---|")
    for s in sizes:
        med = [statistics.median(x[k] for x in results[s]) for k in range(3)]
        cells = [f"{m:.2f} s ({m / b:.2f}x)" for m, b in zip(med, base, strict=True)]
        cells.insert(1, f"{med[0] / anchor:.1f}x")
        print(f"| {s:,} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

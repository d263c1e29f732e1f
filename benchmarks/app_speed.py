"""The app's own costs on the demo model: first paint, decode speed through the UI, key latency.

Usage:
    python benchmarks/app_speed.py [--runs 3] [--tokens 200] [--keys 40] [--paints 5]

Runs the real `llama-tui` (this checkout, `python -m llama_tui`) in a pseudo-terminal at 80x24,
as a user would, and prints one table:

- launch to first paint: process start until the first screen (the welcome text) is written
  to the terminal; median of `--paints` launches. Anchor: a minimal Textual app measured in
  the same run.
- decode tokens/s through the app vs bare: the same greedy prompt and `--tokens` limit,
  alternated `--runs` times: the app (its reply footer shows the engine's decode rate) and
  `LocalBackend.stream` in this process with no UI (the same engine, same options), plus a
  bare `model.generate` for reference. Ratio app / bare: target >= 0.97.
- keystroke-to-screen latency while a reply streams: a rare character is written to the
  pty and timed until the app echoes it; `--keys` presses, p50 / p95 (target p95 < 50 ms).

LLAMA_TUI_HOME is a temporary folder whose cache/ links to the real llama-tui cache, so the
demo GGUF is converted at most once. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import re
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from pathlib import Path
from typing import Any

PROMPT = "Write a long, detailed story about a dragon who learns to bake bread."
KEYS = "¤§¶µ¢£¥©®°±¼½¾×÷ÆØÞßæøþ"  # echoed by the input, unlikely in model output
FOOTER = re.compile("(\\d+) tokens? · ([\\d.]+) tok/s".encode())


# The anchor for first paint: the smallest Textual app, measured the same way in the same run.
MINIMAL_APP = """
from textual.app import App
from textual.widgets import Static
class Hello(App):
    def compose(self):
        yield Static("Type a message")
Hello().run()
"""


class PtyApp:
    """`llama-tui` in a pseudo-terminal; everything it writes is kept with timestamps."""

    def __init__(self, home: Path, *args: str, argv: list[str] | None = None) -> None:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        env = {**os.environ, "LLAMA_TUI_HOME": str(home), "HF_HUB_OFFLINE": "1",
               "TERM": "xterm-256color", "COLORTERM": "truecolor"}
        env.pop("TMUX", None)
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            argv or [sys.executable, "-m", "llama_tui", *args], stdin=slave, stdout=slave,
            stderr=slave, env=env, start_new_session=True, close_fds=True,
        )
        os.close(slave)
        self.master = master
        self.out = bytearray()
        self.cond = threading.Condition()
        self.closed = False
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:
                data = b""
            with self.cond:
                if not data:
                    self.closed = True
                    self.cond.notify_all()
                    return
                self.out += data
                self.cond.notify_all()

    def wait_for(self, pattern: bytes | re.Pattern[bytes], start: int = 0,
                 timeout: float = 300.0) -> tuple[int, float]:
        """(end offset of the match, time it arrived) for the first match after `start`."""
        deadline = time.perf_counter() + timeout
        with self.cond:
            while True:
                if isinstance(pattern, bytes):
                    i = self.out.find(pattern, start)
                    end = i + len(pattern) if i >= 0 else -1
                else:
                    m = pattern.search(self.out, start)
                    end = m.end() if m else -1
                if end >= 0:
                    return end, time.perf_counter()
                left = deadline - time.perf_counter()
                if left <= 0 or self.closed:
                    raise TimeoutError(f"no {pattern!r}; tail: {bytes(self.out[-400:])!r}")
                self.cond.wait(left)

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        os.close(self.master)


def first_paint(home: Path, minimal: bool = False) -> float:
    argv = [sys.executable, "-c", MINIMAL_APP] if minimal else None
    app = PtyApp(home, "--model", "demo", argv=argv)
    try:
        _, t = app.wait_for(b"Type a message", timeout=30)
        return t - app.started
    finally:
        app.stop()


def app_reply(app: PtyApp, tokens: int) -> float:
    """Send PROMPT in a fresh conversation; the decode tok/s the app shows."""
    app.type("/clear\r")
    app.type(PROMPT + "\r")
    # Only output after this reply started can hold its footer.
    mark, _ = app.wait_for(b"generating", len(app.out), timeout=60)
    end, _ = app.wait_for(FOOTER, mark, timeout=600)
    found = list(FOOTER.finditer(app.out, mark, end))
    assert found
    return float(found[-1].group(2))


def bare_rates(backend: Any, tokens: int) -> tuple[float, float]:
    """(LocalBackend.stream decode tok/s, bare model.generate end-to-end tok/s)."""
    from llama_tui.core.backend import ChatMessage
    from llama_tui.core.params import GenerationParams

    history = [ChatMessage("user", PROMPT)]
    params = GenerationParams(do_sample=False, max_new_tokens=tokens)
    gen = backend.stream(history, params, threading.Event())
    for _ in gen:
        pass
    engine = gen.stats.decode_tokens_per_s or 0.0
    sys.path.insert(0, str(Path(__file__).parent))
    from engine_speed import bare_generate  # the same bare call engine_speed.py times

    ids = backend._formatter.encode(history)
    n, s = bare_generate(backend, ids, tokens)
    return engine, n / s


def headless_ratio(runs: int, tokens: int) -> tuple[list[float], list[float]]:
    """The app's own logic, without a terminal: (app decode tok/s, bare decode tok/s).

    The app runs headless (`run_test`) in this process; the bare runs use the same loaded
    backend from a thread while the UI idles, so both share torch's thread setup exactly.
    """
    import asyncio

    from llama_tui.config.settings import load_settings
    from llama_tui.core.backend import ChatMessage
    from llama_tui.core.params import GenerationParams
    from llama_tui.ui.app import create_app

    loaded = load_settings(cli={"model": "demo", "do_sample": False, "max_new_tokens": tokens})
    app = create_app(loaded)
    params = GenerationParams(do_sample=False, max_new_tokens=tokens)
    app_rates: list[float] = []
    bare: list[float] = []

    def bare_run() -> float:
        gen = app.model.backend.stream([ChatMessage("user", PROMPT)], params, threading.Event())
        for _ in gen:
            pass
        return gen.stats.decode_tokens_per_s or 0.0

    async def drive() -> None:
        async with app.run_test(size=(80, 24)) as pilot:
            while app.model.backend is None:
                await asyncio.sleep(0.2)
            for i in range(runs + 1):  # the first pair is a warm-up
                await app.chat.new_conversation()
                app.chat.prompt.load_text(PROMPT)
                await pilot.press("enter")
                while not app.generating:
                    await asyncio.sleep(0.05)
                while app.generating:
                    await asyncio.sleep(0.2)
                rate = float(app.chat_state.conversation.messages[-1].stats["decode_tokens_per_s"])
                other = await asyncio.to_thread(bare_run)
                if i:
                    app_rates.append(rate)
                    bare.append(other)

    asyncio.run(drive())
    return app_rates, bare


def key_latency(app: PtyApp, presses: int) -> list[float]:
    """Type rare characters while a long reply streams; seconds until each is echoed."""
    app.type("/clear\r")
    mark = len(app.out)
    app.type("Write a very long story, in twenty chapters, about a lighthouse keeper.\r")
    app.wait_for(b"generating", mark, timeout=60)
    time.sleep(1.0)  # let the reply stream for a while before typing
    out: list[float] = []
    for i in range(presses):
        if i and i % len(KEYS) == 0:
            app.type("\x15")  # ctrl+u: clear the input so every key is new on screen
            time.sleep(0.2)
        ch = KEYS[i % len(KEYS)]
        mark = len(app.out)
        t0 = time.perf_counter()
        app.type(ch)
        _, t = app.wait_for(ch.encode(), mark, timeout=10)
        out.append(t - t0)
        time.sleep(0.08)  # a fast typist: ~12 keys/s
    app.type("\x1b")  # stop the reply
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=200)
    ap.add_argument("--keys", type=int, default=40)
    ap.add_argument("--paints", type=int, default=5)
    args = ap.parse_args()

    import platformdirs

    tmp = Path(tempfile.mkdtemp(prefix="llama-tui-bench-"))
    real_cache = Path(platformdirs.user_cache_dir("llama_tui", appauthor=False))
    real_cache.mkdir(parents=True, exist_ok=True)
    (tmp / "cache").symlink_to(real_cache, target_is_directory=True)
    os.environ["LLAMA_TUI_HOME"] = str(tmp)
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        rows = run(tmp, args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    width = max(len(r[0]) for r in rows)
    print(f"\n{'measure'.ljust(width)}  value      anchor / ratio")
    for name, value, note in rows:
        print(f"{name.ljust(width)}  {value.ljust(9)}  {note}")


def run(home: Path, args: argparse.Namespace) -> list[tuple[str, str, str]]:
    from llama_tui.config.settings import load_settings
    from llama_tui.engine.local.backend import LocalBackend

    print("first paint...", flush=True)
    first_paint(home)  # warm the page cache and the model conversion
    paints, minimal = [], []
    for _ in range(args.paints):  # alternated, so machine noise hits both alike
        paints.append(first_paint(home))
        minimal.append(first_paint(home, minimal=True))
    print(f"  first paint, s: {' '.join(f'{p:.3f}' for p in paints)}", flush=True)
    print(f"  minimal Textual app, s: {' '.join(f'{p:.3f}' for p in minimal)}", flush=True)

    print("loading the demo model for the bare runs...", flush=True)
    settings = load_settings(cli={"model": "demo"}).settings
    backend = LocalBackend(settings.model, settings.load_options())
    backend.load()

    flags = ["--model", "demo", "--greedy", "--max-new-tokens", str(args.tokens)]
    app = PtyApp(home, *flags)
    try:
        app.wait_for(b"ready", timeout=600)
        print("warm-up...", flush=True)
        app_reply(app, args.tokens)
        bare_rates(backend, args.tokens)
        app_runs, engine_runs, generate_runs = [], [], []
        for i in range(args.runs):
            print(f"run {i + 1}/{args.runs}...", flush=True)
            engine, generate = bare_rates(backend, args.tokens)
            engine_runs.append(engine)
            generate_runs.append(generate)
            app_runs.append(app_reply(app, args.tokens))
            print(f"  app {app_runs[-1]:.1f} | engine {engine:.1f} | generate {generate:.1f}",
                  flush=True)
        print("keystroke latency...", flush=True)
        latencies = key_latency(app, args.keys)
    finally:
        app.stop()
        backend.close()
    print("headless app vs bare, same process...", flush=True)
    h_app, h_bare = headless_ratio(args.runs, args.tokens)
    ha, hb = statistics.median(h_app), statistics.median(h_bare)
    a, e, g = (statistics.median(x) for x in (app_runs, engine_runs, generate_runs))
    lat = sorted(latencies)
    p95 = lat[min(len(lat) - 1, round(0.95 * (len(lat) - 1)))]
    return [
        ("launch to first paint (median)", f"{statistics.median(paints) * 1000:.0f} ms",
         f"target < 300 ms; runs {' '.join(f'{p * 1000:.0f}' for p in paints)}"),
        ("first paint, minimal Textual app (anchor)",
         f"{statistics.median(minimal) * 1000:.0f} ms",
         f"ratio {statistics.median(paints) / statistics.median(minimal):.2f}"),
        ("decode tok/s, bare LocalBackend.stream", f"{e:.1f}", "1.000"),
        ("decode tok/s, through the app (pty)", f"{a:.1f}",
         f"{a / e:.3f} (target >= 0.97)"),
        ("bare model.generate, end to end tok/s", f"{g:.1f}", "reference"),
        ("decode tok/s, app headless | bare, same process", f"{ha:.1f}",
         f"{hb:.1f}: ratio {ha / hb:.3f} (the app's logic alone, no terminal)"),
        ("runs app | bare", " ".join(f"{x:.1f}" for x in app_runs),
         " ".join(f"{x:.1f}" for x in engine_runs)),
        ("keystroke to screen while streaming, p50", f"{statistics.median(lat) * 1000:.1f} ms",
         f"{len(lat)} keys"),
        ("keystroke to screen while streaming, p95", f"{p95 * 1000:.1f} ms",
         "target < 50 ms"),
    ]


if __name__ == "__main__":
    main()

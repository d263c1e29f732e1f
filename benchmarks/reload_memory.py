"""Memory across model reloads: RSS after each of N `/model demo` reloads in the real app.

Usage:
    python benchmarks/reload_memory.py [--reloads 20] [--spec demo]

Runs the app headless (Textual's test driver, 80x24) on the real engine, types
`/model SPEC` N times, and after each reload waits until the old model is closed, then
prints the process's resident memory (psutil). A steady series means the old models are
freed; a growing one means something still holds them. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import psutil

from llama_tui.config.settings import LoadedSettings, Settings
from llama_tui.ui.app import create_app


def rss_mib() -> float:
    return psutil.Process().memory_info().rss / 2**20


async def run(reloads: int, spec: str) -> list[float]:
    app = create_app(LoadedSettings(settings=Settings(model=spec), sources={}))
    series: list[float] = []
    async with app.run_test(size=(80, 24)) as pilot:

        async def until(cond: Any, timeout: float = 300.0) -> None:
            deadline = time.monotonic() + timeout
            while not cond():
                if time.monotonic() > deadline:
                    raise SystemExit(f"timed out waiting for {cond}")
                await pilot.pause(0.05)

        await until(lambda: app.model.backend is not None or app.state == "error")
        if app.model.backend is None:
            raise SystemExit(f"could not load {spec}: {app.model.load_error}")
        print(f"loaded      RSS {rss_mib():7.0f} MiB", flush=True)
        for i in range(1, reloads + 1):
            old = app.model.backend
            app.chat.prompt.load_text(f"/model {spec}")
            await pilot.press("enter")
            await until(lambda old=old: app.model.backend not in (old, None))
            await app.workers.wait_for_complete()  # the close worker has freed the old one
            await pilot.pause()
            series.append(rss_mib())
            print(f"reload {i:3d}  RSS {series[-1]:7.0f} MiB", flush=True)
    return series


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reloads", type=int, default=20)
    parser.add_argument("--spec", default="demo")
    args = parser.parse_args()
    series = asyncio.run(run(args.reloads, args.spec))
    if series:
        print(f"first {series[0]:.0f} MiB, last {series[-1]:.0f} MiB, "
              f"growth {series[-1] - series[0]:+.0f} MiB over {len(series)} reloads")


if __name__ == "__main__":
    main()

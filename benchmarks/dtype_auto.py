"""What `dtype auto` picks on this CPU for the demo model, and what measuring it costs.

Usage:
    python benchmarks/dtype_auto.py [--threads 2] [--model demo]

Loads the model twice with `--device cpu --dtype auto` under a fresh, temporary
LLAMA_TUI_HOME (so an empty dtype cache): the first load measures every candidate dtype
(engine/loading/calibration.py), the second finds the pick in the cache. Prints the decode
tok/s measured per dtype, the pick, the time the measurement took and both load times.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", default="demo")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        os.environ["LLAMA_TUI_HOME"] = home
        # The demo's one-time GGUF conversion is cached under the home too: do it untimed.
        from llama_tui.core.backend import LoadOptions
        from llama_tui.engine.loading import calibration, dtype_cache
        from llama_tui.engine.loading.models import load_model

        options = LoadOptions(device="cpu", dtype="float32", threads=args.threads)
        load_model(args.model, options)
        spent: list[float] = []
        real = calibration.calibrate

        def timed(*a: object, **kw: object) -> str:
            t0 = time.perf_counter()
            pick = real(*a, **kw)  # type: ignore[arg-type]
            spent.append(time.perf_counter() - t0)
            return pick

        calibration.calibrate = timed  # type: ignore[assignment]
        auto = LoadOptions(device="cpu", dtype="auto", threads=args.threads)
        t0 = time.perf_counter()
        first = load_model(args.model, auto)
        first_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        second = load_model(args.model, auto)
        second_s = time.perf_counter() - t0
        cache = json.loads(dtype_cache.cache_file().read_text(encoding="utf-8"))
        (entry,) = cache["entries"].values()
        print(f"cpu: {dtype_cache.cpu_name()}, torch {dtype_cache.torch_version()}, "
              f"threads {args.threads}")
        for dtype, rate in entry["tokens_per_s"].items():
            print(f"  {dtype:9} {rate:6.1f} tok/s (greedy decode, {calibration.TIMED_STEPS} steps)")
        print(f"pick: {first.info.dtype} (cache says {entry['dtype']}; second load: "
              f"{second.info.dtype})")
        print(f"measuring: {spent[0]:.2f} s; first load {first_s:.2f} s, "
              f"second load (cached) {second_s:.2f} s")


if __name__ == "__main__":
    main()

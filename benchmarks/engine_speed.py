"""Decode speed through LocalBackend.stream vs a bare `model.generate`, and TTFT across turns.

Usage:
    python benchmarks/engine_speed.py [--model demo] [--device auto] [--dtype auto]
        [--threads 2] [--tokens 200] [--runs 3] [--turns 10] [--reply-tokens 64]
        [--fast-path auto|eager|compiled|off] [--no-compile]

Prints one table. Part 1: the same greedy prompt, `--tokens` new tokens, bare generate and the
engine alternated `--runs` times in the same process after one warm-up of each; medians and
their ratio (target >= 0.97, benchmarks/README.md). Part 2: a `--turns`-turn greedy conversation run
with the KV cache reused and without; time to first token of turn 1 and of the last turn, and
whether the replies were identical. The engine decodes through `generate` or the FastDecoder
as `llama_tui.engine.fast.glue` decides (`--fast-path` overrides the device policy, like
LocalBackend's `fast_path`); the table says which. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from typing import Any

from llama_tui.core.backend import ChatMessage, LoadOptions
from llama_tui.core.params import GenerationParams
from llama_tui.engine.local.backend import LocalBackend

PROMPT = "Write a long, detailed story about a dragon who learns to bake bread."
# About 70 tokens per user turn: long enough that re-prefilling the whole chat shows.
TURN_TEXT = (
    "Thanks. Now continue the story with a new chapter: describe the village market, the "
    "smell of fresh bread, the baker's apprentice and what the dragon says to the crowd. "
    "Keep it vivid. Chapter {n}."
)


def bare_generate(backend: LocalBackend, ids: list[int], tokens: int) -> tuple[int, float]:
    """(new tokens, seconds) for a plain generate call with the engine's greedy settings.

    It runs in a fresh thread, like the engine's generate: on this shared 2-core box a generate
    on the main thread measured 2-5x slower than the same call in a new thread under load
    (OpenMP scheduling, not engine work), which would flatter the engine.
    """
    import torch

    model = backend._model
    x = torch.tensor([ids], device=backend._input_device)
    result: list[Any] = []

    def run() -> None:
        result.append(
            model.generate(
                input_ids=x,
                attention_mask=torch.ones_like(x),
                max_new_tokens=tokens,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                min_p=None,
            )
        )

    sync(backend)
    t0 = time.perf_counter()
    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    sync(backend)
    return result[0].shape[1] - len(ids), time.perf_counter() - t0


def engine_generate(
    backend: LocalBackend, history: list[ChatMessage], tokens: int
) -> tuple[int, float, Any]:
    sync(backend)
    t0 = time.perf_counter()
    gen = backend.stream(
        history, GenerationParams(do_sample=False, max_new_tokens=tokens), threading.Event()
    )
    for _ in gen:
        pass
    elapsed = time.perf_counter() - t0
    assert gen.stats is not None
    return gen.stats.generated_tokens, elapsed, gen.stats


def sync(backend: LocalBackend) -> None:
    if backend._input_device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def speed(backend: LocalBackend, tokens: int, runs: int) -> list[tuple[str, str, str]]:
    history = [ChatMessage("user", PROMPT)]
    assert backend._formatter is not None
    ids = backend._formatter.encode(history)
    bare_generate(backend, ids, tokens)  # warm-up, same shapes as the timed runs
    engine_generate(backend, history, tokens)
    bare_rates, engine_rates, engine_decode = [], [], []
    for _ in range(runs):
        n, s = bare_generate(backend, ids, tokens)
        bare_rates.append(n / s)
        n, s, stats = engine_generate(backend, history, tokens)
        engine_rates.append(n / s)
        engine_decode.append(stats.decode_tokens_per_s or 0.0)
    b, e = statistics.median(bare_rates), statistics.median(engine_rates)
    return [
        (f"bare generate, {tokens} new tokens, tok/s (end to end)", f"{b:.1f}", "1.00"),
        ("LocalBackend.stream, tok/s (end to end)", f"{e:.1f}", f"{e / b:.3f}"),
        (
            "LocalBackend stats.decode_tokens_per_s",
            f"{statistics.median(engine_decode):.1f}",
            "",
        ),
        (
            "runs (bare | engine)",
            " ".join(f"{r:.1f}" for r in bare_rates),
            " ".join(f"{r:.1f}" for r in engine_rates),
        ),
    ]


def conversation(
    backend: LocalBackend, turns: int, reply_tokens: int
) -> tuple[list[float], list[int], list[str]]:
    history = [ChatMessage("system", "You are a storyteller."), ChatMessage("user", PROMPT)]
    ttfts, prompts, replies = [], [], []
    params = GenerationParams(do_sample=False, max_new_tokens=reply_tokens)
    for n in range(1, turns + 1):
        if n > 1:
            history.append(ChatMessage("user", TURN_TEXT.format(n=n)))
        gen = backend.stream(history, params, threading.Event())
        reply = gen.text()
        assert gen.stats is not None and gen.stats.ttft_s is not None
        ttfts.append(gen.stats.ttft_s)
        prompts.append(gen.stats.prompt_tokens)
        replies.append(reply)
        history.append(ChatMessage("assistant", reply))
    return ttfts, prompts, replies


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="demo")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=200)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--turns", type=int, default=10)
    ap.add_argument("--reply-tokens", type=int, default=64)
    ap.add_argument("--skip-speed", action="store_true", help="only the multi-turn TTFT part")
    ap.add_argument("--fast-path", default="auto", choices=["auto", "eager", "compiled", "off"])
    ap.add_argument("--no-compile", dest="compile", action="store_false")
    args = ap.parse_args()

    import torch
    import transformers

    options = LoadOptions(
        device=args.device, dtype=args.dtype, threads=args.threads, compile=args.compile
    )
    backend = LocalBackend(args.model, options, fast_path=args.fast_path)
    t0 = time.perf_counter()
    info = backend.load()
    load_s = time.perf_counter() - t0
    rows: list[tuple[str, str, str]] = [
        ("model", f"{info.name} ({info.device}, {info.dtype})", ""),
        ("versions", f"torch {torch.__version__}, transformers {transformers.__version__}", ""),
        ("load + warm-up, s", f"{load_s:.2f}", ""),
        ("engine decode path", "FastDecoder" if backend.fast_path_active else "generate", ""),
    ]
    if not args.skip_speed:
        rows += speed(backend, args.tokens, args.runs)

    results = {}
    for reuse in (True, False):
        backend.options = LoadOptions(
            device=args.device,
            dtype=args.dtype,
            threads=args.threads,
            compile=args.compile,
            kv_reuse=reuse,
        )
        backend._cache, backend._cache_ids = None, []
        if backend._fast is not None:
            backend._fast.decoder.reset()
        results[reuse] = conversation(backend, args.turns, args.reply_tokens)
    (t_on, p_on, r_on), (t_off, _, r_off) = results[True], results[False]
    last = args.turns
    rows += [
        (f"prompt tokens turn 1 / turn {last}", f"{p_on[0]} / {p_on[-1]}", ""),
        (
            f"TTFT reuse ON, turn 1 / turn {last}, s",
            f"{t_on[0]:.3f} / {t_on[-1]:.3f}",
            f"{t_on[-1] / t_on[0]:.2f}x",
        ),
        (
            f"TTFT reuse OFF, turn 1 / turn {last}, s",
            f"{t_off[0]:.3f} / {t_off[-1]:.3f}",
            f"{t_off[-1] / t_off[0]:.2f}x",
        ),
        (f"TTFT turn {last}, OFF / ON", "", f"{t_off[-1] / t_on[-1]:.1f}x"),
        (
            "replies identical with and without reuse",
            f"{sum(a == b for a, b in zip(r_on, r_off, strict=True))}/{last}",
            "",
        ),
    ]
    backend.close()
    rows.append(("TTFT per turn, reuse ON, ms", " ".join(f"{t * 1000:.0f}" for t in t_on), ""))
    rows.append(("TTFT per turn, reuse OFF, ms", " ".join(f"{t * 1000:.0f}" for t in t_off), ""))
    width = max(len(r[0]) for r in rows)
    vw = max(len(r[1]) for r in rows)
    print(f"{'measure':<{width}}  {'value':<{vw}}  ratio")
    for name, value, ratio in rows:
        print(f"{name:<{width}}  {value:<{vw}}  {ratio}")


if __name__ == "__main__":
    main()

"""What recording token logprobs costs: decode speed with capture on and off, and the journal
bytes per token.

Usage:
    python benchmarks/logprobs_cost.py [--tokens 128] [--runs 3] [--k 5] [--dtype auto]
        [--long 1024]

One process, one table. The demo model (SmolLM2-135M) on the CPU, loaded once, driven
through `LocalBackend` (the path the app takes) on the `generate` path and on the fast
decoder (eager, as the CPU float16 policy uses it), each with `logprobs` = 0 and = K. The four
configurations are measured after one untimed warm-up each, `--runs` times, each path's off
and on runs back to back (alternating which goes first); the cost is the median over those
pairs of off speed / on speed - 1, so a machine whose load drifts hits both sides alike. A
seeded sampled reply, so capture on and off decode the same tokens (the tests pin that).
Decode tok/s is the engine's own (producer-side) figure; "CPU" is the process's CPU time
per generated token (every thread: the consumer's per-token text work included), which
other programs' load disturbs far less than speed does.

Bytes per token: one `--long`-token reply (fast decoder, K alternatives) filed into a message
as the chat core does, then the journal line of that reply (ASCII JSON, as the journal
writes it) with and without its token log; the difference over the tokens is the cost per
token, and x 10,000 the size a 10k-token reply adds.

"time inside the capture code" is the capture's own time (wrapped with a clock for the
measurement: the logits processors and the streamer hook on the generate path, the capture in
the fast step and its read-back, the consumer's texts) against the reply's time: on a machine
shared with other work the difference of two speeds is noisy, this share is not.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from typing import Any

PROMPT = "Write a long, detailed story about a dragon who learns to bake bread."


def _run(backend: Any, params: Any) -> tuple[float, float, int, Any]:
    """(decode tok/s, CPU ms per token, tokens, (text, token log)) of one reply."""
    from llama_tui.core.backend import ChatMessage

    c0 = time.process_time()
    gen = backend.stream([ChatMessage("user", PROMPT)], params, threading.Event())
    text = gen.text()
    cpu = time.process_time() - c0
    stats = gen.stats
    n = stats.generated_tokens
    return float(stats.decode_tokens_per_s or 0.0), cpu / n * 1e3, n, (text, gen.token_log)


class CaptureClock:
    """Time spent inside the capture code, on both threads (wrapped for the measurement)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._saved: list[tuple[Any, str, Any]] = []

    def wrap(self, owner: Any, name: str) -> None:
        original = getattr(owner, name)
        clock = self

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                clock.seconds += time.perf_counter() - t0

        self._saved.append((owner, name, original))
        setattr(owner, name, timed)

    def restore(self) -> None:
        for owner, name, original in reversed(self._saved):
            setattr(owner, name, original)


def capture_share(backend: Any, params: Any, runs: int) -> tuple[float, float, float]:
    """(capture ms per token, step ms per token, share): the capture's own time (logits
    processors, the streamer hook or the fast step's capture and read-back, the consumer's
    texts) against the time per generated token, with capture on, median of `runs`."""
    from llama_tui.engine.fast import compile as fast_compile
    from llama_tui.engine.fast import decoder, glue
    from llama_tui.engine.local import logprobs

    clock = CaptureClock()
    clock.wrap(logprobs._RawScores, "__call__")
    clock.wrap(logprobs._SampledScores, "__call__")
    clock.wrap(logprobs.GenerateCapture, "on_push")
    clock.wrap(logprobs.TokenTexts, "catch_up")
    clock.wrap(glue, "capture_from_values")
    clock.wrap(fast_compile, "capture_values")  # inside the eager step
    clock.wrap(decoder, "capture_values")  # the prefill's first token
    shares = []
    try:
        for _ in range(runs):
            clock.seconds = 0.0
            t0 = time.perf_counter()
            _, _, n, _ = _run(backend, params)
            total = time.perf_counter() - t0
            shares.append((clock.seconds / n * 1e3, total / n * 1e3, clock.seconds / total))
    finally:
        clock.restore()
    return sorted(shares, key=lambda s: s[2])[len(shares) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--long", type=int, default=1024, help="tokens of the reply sized")
    args = ap.parse_args()

    from llama_tui.core.backend import LoadOptions
    from llama_tui.core.params import GenerationParams
    from llama_tui.engine.loading.models import load_model
    from llama_tui.engine.local.backend import LocalBackend

    opts = LoadOptions(device="cpu", dtype=args.dtype)
    t0 = time.perf_counter()
    loaded = load_model("demo", opts)
    print(f"demo loaded in {time.perf_counter() - t0:.1f} s ({loaded.info.dtype} on cpu)")
    backends = {}
    for path, mode in (("generate", "off"), ("fast decoder", "eager")):
        b = LocalBackend("demo", opts, fast_path=mode)  # type: ignore[arg-type]
        b.attach(loaded.model, loaded.tokenizer, loaded.info, loaded.generation_defaults)
        backends[path] = b
    base = GenerationParams(
        do_sample=True,
        temperature=0.8,
        top_p=0.95,
        top_k=50,
        seed=1234,
        max_new_tokens=args.tokens,
    )
    configs = [(path, k) for path in backends for k in (0, args.k)]
    results: dict[tuple[str, int], list[tuple[float, float, int]]] = {c: [] for c in configs}
    texts: dict[tuple[str, int], str] = {}
    for path, k in configs:  # warm-up, untimed
        _run(backends[path], base.with_changes(logprobs=k))
    for r in range(args.runs):
        for path in backends:
            # Off and on back to back, in alternating order: a loaded machine drifts, and a
            # pair sees the same load.
            for k in (0, args.k) if r % 2 == 0 else (args.k, 0):
                rate, cpu_ms, n, (text, _log) = _run(backends[path], base.with_changes(logprobs=k))
                results[(path, k)].append((rate, cpu_ms, n))
                texts[(path, k)] = text

    print(f"\n{args.tokens} new tokens max, seeded sampling, {args.runs} on/off pairs")
    print("| path | logprobs | tokens | decode tok/s | CPU ms/token | decode cost | CPU cost |")
    print("|---|---|---|---|---|---|---|")
    for path in backends:
        off, on = results[(path, 0)], results[(path, args.k)]
        # The cost: the median over pairs of (off speed / on speed - 1), and of CPU time.
        cost = statistics.median(a[0] / b[0] - 1 for a, b in zip(off, on, strict=True))
        wcost = statistics.median(b[1] / a[1] - 1 for a, b in zip(off, on, strict=True))
        for k, rows in ((0, off), (args.k, on)):
            rate = statistics.median(r for r, _, _ in rows)
            cpu = statistics.median(c for _, c, _ in rows)
            cells = ("", "") if k == 0 else (f"{cost * 100:+.1f}%", f"{wcost * 100:+.1f}%")
            print(
                f"| {path} | {k} | {rows[-1][2]} | {rate:.1f} | {cpu:.1f} | "
                f"{cells[0]} | {cells[1]} |"
            )
        same = texts[(path, 0)] == texts[(path, args.k)]
        print(f"|   | same reply on/off: {same} | | | | | |")

    # The capture's own time against the reply's: less noisy than the difference of two
    # speeds on a loaded machine (it leaves out only the GIL waits it causes).
    print("\ntime inside the capture code, capture on (median run):")
    for path, b in backends.items():
        ms, step, share = capture_share(b, base.with_changes(logprobs=args.k), args.runs)
        print(f"  {path}: {ms:.2f} ms per token of {step:.1f} ms per token = {share * 100:.1f}%")
    import torch

    from llama_tui.engine.local.logprobs import capture_values

    logits = torch.randn(int(loaded.model.get_output_embeddings().weight.shape[0]))
    token, lp = torch.tensor([5]), torch.zeros(1)
    capture_values(logits, token, lp)
    t0 = time.perf_counter()
    for _ in range(200):
        capture_values(logits, token, lp)
    print(
        f"  fast step's capture_values: {(time.perf_counter() - t0) / 200 * 1e3:.2f} ms "
        f"per token ({logits.numel()} logits)"
    )

    # -- bytes per token ---------------------------------------------------------------
    from llama_tui.chat.tokens import reply_tokens
    from llama_tui.session.records import encode_record, reply_finished_rec
    from llama_tui.session.transcript import Conversation

    params = base.with_changes(max_new_tokens=args.long, logprobs=args.k)
    _, _, n, (text, log) = _run(backends["fast decoder"], params)
    conv = Conversation()
    msg = conv.add("assistant", text)
    without = len(encode_record(conv.id, reply_finished_rec(msg)))
    msg.tokens = reply_tokens(None, log, msg, 0)
    with_tokens = len(encode_record(conv.id, reply_finished_rec(msg)))
    stored = json.dumps(msg.tokens, separators=(",", ":"), ensure_ascii=True)
    pieces = len(msg.tokens["pid"]) if msg.tokens else 0
    per = (with_tokens - without) / max(n, 1)
    print(f"\njournal, one reply of {n} tokens with top-{args.k} ({pieces} distinct pieces):")
    print(
        f"  reply line {without} B without tokens, {with_tokens} B with: "
        f"{per:.1f} B per token (the text itself: {without / max(n, 1):.1f} B per token)"
    )
    print(
        f"  token log alone {len(stored)} B; a 10k-token reply adds about "
        f"{per * 10_000 / 1024:.0f} KiB"
    )


if __name__ == "__main__":
    main()

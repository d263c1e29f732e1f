"""Time to first token after switching branch, against a full re-prefill, in one run.

Usage:
    python benchmarks/branch_switch.py [--model demo] [--dtype auto] [--runs 5]
        [--context-tokens 1200] [--paths eager,off] [--device cpu]

A conversation of about `--context-tokens` prompt tokens ends in a reply with two versions
(a retry). The benchmark answers a follow-up on version 1, switches to version 2 and answers
the same follow-up there: the second reply shares everything up to the fork with the first,
so the engine's KV cache serves that prefix and only the differing tail is prefilled. The
same reply with KV reuse turned off (a full re-prefill, what a server without prefix caching
or a tool that rebuilds the prompt does) is the baseline, alternated with it `--runs` times.
Prints the median TTFTs, the reused prompt tokens and the ratio, for the fast decoder and
for `generate` (`--paths`), in the dtype `--dtype` gives. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import statistics
import threading

from llama_tui.core.backend import ChatMessage, LoadOptions
from llama_tui.core.params import GenerationParams
from llama_tui.engine.local.backend import LocalBackend

PARAGRAPH = (
    "The committee reviewed the quarterly figures for every region, noting that shipping "
    "costs rose while the number of returns fell, and asked each team to explain the change "
    "in its own words before the next meeting. "
)


def history(context_tokens: int, version: str) -> list[ChatMessage]:
    """The conversation up to the follow-up, on the branch whose reply is `version`."""
    words_per_token = 0.75
    n = max(1, int(context_tokens * words_per_token / len(PARAGRAPH.split())))
    return [
        ChatMessage("user", "Summarise these notes:\n" + PARAGRAPH * n),
        ChatMessage("assistant", version),
        ChatMessage("user", "Now list three risks in one line each."),
    ]


def ttft(backend: LocalBackend, msgs: list[ChatMessage], params: GenerationParams
         ) -> tuple[float, int, int]:
    gen = backend.stream(msgs, params, threading.Event())
    gen.text()
    assert gen.stats is not None and gen.stats.ttft_s is not None
    return gen.stats.ttft_s, gen.stats.reused_prompt_tokens, gen.stats.prompt_tokens


def measure(args: argparse.Namespace, fast_path: str) -> None:
    """One decode path: the switch with KV reuse against a full re-prefill."""
    params = GenerationParams(do_sample=False, max_new_tokens=4)
    backends = {}
    for reuse in (True, False):
        # Prompt lookup off: on the generate path it would start greedy replies from an
        # empty cache (`engine.local.assisted`), which is not what this measures.
        b = LocalBackend(args.model, LoadOptions(device=args.device, dtype=args.dtype,
                                                 kv_reuse=reuse, prompt_lookup="off"),
                         fast_path=fast_path)
        info = b.load()
        backends[reuse] = b
    path = "fast decoder" if backends[True].fast_path_active else "generate"
    v1 = history(args.context_tokens, "Version one: the costs rose and returns fell.")
    v2 = history(args.context_tokens, "Version two: shipping up, returns down, teams asked.")
    switch: list[float] = []
    full: list[float] = []
    reused = prompt = 0
    for _ in range(args.runs):
        ttft(backends[True], v1, params)  # the reply on version 1 fills the cache
        t, reused, prompt = ttft(backends[True], v2, params)  # switched to version 2
        switch.append(t)
        t_full, _r, _p = ttft(backends[False], v2, params)
        full.append(t_full)
    s, f = statistics.median(switch), statistics.median(full)
    print(f"| {path} ({info.dtype}) | {prompt} | {reused} | {s * 1000:.0f} ms | "
          f"{f * 1000:.0f} ms | {s / f:.2f}x |")
    for b in backends.values():
        b.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="demo")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--context-tokens", type=int, default=1200)
    ap.add_argument("--paths", default="eager,off",
                    help="fast-path modes to measure: eager (fast decoder), off (generate)")
    args = ap.parse_args()
    print(f"{args.model}, {args.runs} runs, medians; TTFT of the reply after a branch switch")
    print("| path | prompt tokens | from the KV cache | TTFT with reuse | full re-prefill "
          "| ratio |")
    print("|---|---|---|---|---|---|")
    for mode in args.paths.split(","):
        measure(args, mode)


if __name__ == "__main__":
    main()

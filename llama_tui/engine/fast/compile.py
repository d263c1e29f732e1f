"""The fast decoder's step, and its compiled variants: background torch.compile, CUDA graphs.

One decode step is the model forward with `cache=`, then the token choice
(`sampling.select_token`) on the device; the chosen id is written back into the step's own
input buffer, so steps chain on the device and only the id comes back to the host.

On CUDA the step is compiled by `torch.compile(fullgraph=True)` in a background thread
(`StepRunner.want`), one variant per (cache bucket, greedy/sampling) pair, then captured as
a CUDA graph in the decoding thread and replayed. Until a variant is ready the eager step
serves, so compiling never makes the user wait; the switch happens at a token boundary,
mid-reply if need be.

Why our own CUDA graph capture instead of `mode="reduce-overhead"`: inductor's CUDA graph
trees are thread-local (torch/_inductor/cudagraph_trees.py keeps them in threading.local), so
graphs recorded by the warm-up thread would be re-recorded in the decoding thread, and again
in every new worker thread a UI spawns per reply. A `torch.cuda.CUDAGraph` replays from any
thread. `graphs="inductor"` keeps the reduce-overhead route for comparison (benchmarks/gpu.py).

torch is imported lazily, inside functions.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from llama_tui.engine.fast.cache import crop_static_cache
from llama_tui.engine.local.logprobs import CAPTURE_LEN, capture_values
from llama_tui.engine.local.sampling import SamplingBuffers, select_token_and_logprob

log = logging.getLogger(__name__)

DecoderState = Literal["eager", "optimising", "ready", "failed"]
StateCallback = Callable[[DecoderState, str], None]
GraphMode = Literal["manual", "inductor", "off"]
# step(cache, token, floats, ints, presence, capture) -> next id tensor
StepFn = Callable[..., Any]


def configure_compile_cache() -> str:
    """Point inductor's (and Triton's) on-disk caches under our cache dir; return the folder.

    Set before the first compile so that compiled kernels (inductor's FX graph cache,
    AOTAutograd cache, Triton binaries) are reused by the next launch. Dynamo's tracing of the
    Python model is not cached by torch: every launch traces again; what a warm cache saves is
    inductor's code generation and the C++/Triton compilation. An explicit env var wins.
    """
    from llama_tui.atomic import make_private_dirs
    from llama_tui.locations import cache_dir

    root = make_private_dirs(cache_dir() / "inductor")
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(root))
    os.environ.setdefault("TRITON_CACHE_DIR", str(root / "triton"))
    try:
        import torch._inductor.config as ind

        ind.fx_graph_cache = True
        if hasattr(ind, "autograd_cache"):
            ind.autograd_cache = True
    except Exception:  # pragma: no cover - a torch without inductor: nothing to configure
        pass
    return os.environ["TORCHINDUCTOR_CACHE_DIR"]


def make_step(
    model: Any,
    cache_kw: str,
    greedy: bool,
    capture: bool = True,
    forward: Callable[[Any, Any], Any] | None = None,
) -> StepFn:
    """The decode step (eager as it is; the compiled variants wrap the same function).

    With `capture`, the step also writes the token's logprobs and top alternatives into the
    `capture` buffer (`engine.local.logprobs.capture_values`): the compiled variants always
    do (one static graph; a top-k is nothing next to the forward on a GPU), the eager step
    only for replies that record them. `forward(cache, token) -> float logits [vocab]`
    replaces the model's own forward (the CPU's lean forward, lean.py).
    """

    def step(
        cache: Any, token: Any, floats: Any, ints: Any, presence: Any, capture_buf: Any
    ) -> Any:
        # The position of `token` is the cache length before this forward: the RNG counter.
        position = cache.get_seq_length()
        host_top_k = 0
        if forward is not None:
            logits = forward(cache, token)
            # The lean step runs eagerly on a CPU, where reading top-k costs nothing and lets
            # the sampler take a top-k instead of sorting the vocabulary (sampling.py).
            host_top_k = int(ints[0])
        else:
            out = model(input_ids=token, use_cache=True, **{cache_kw: cache})
            logits = out.logits[0, -1, :].float()
        buf = SamplingBuffers(floats, ints, presence)
        nxt, sampled = select_token_and_logprob(logits, buf, position, greedy, host_top_k)
        if capture:
            capture_buf.copy_(capture_values(logits, nxt, sampled))
        # Feed the choice back into the input buffer so the next step needs no host data.
        token.copy_(nxt.view(1, 1))
        presence.index_fill_(0, nxt, True)
        return nxt

    return step


def mark_static(graphs: GraphMode, token: Any, buf: SamplingBuffers, capture: Any) -> None:
    # reduce-overhead needs mutated inputs at fixed addresses, or it skips the graph; the
    # scratch buffers of the warm-up get the same marking so that guards match.
    if graphs == "inductor":
        import torch

        for t in (token, buf.floats, buf.ints, buf.presence, capture):
            torch._dynamo.mark_static_address(t)


@dataclass
class _Variant:
    """One compiled step for a (bucket, greedy) pair."""

    bucket: int
    greedy: bool
    compiled: Any = None  # the torch.compile'd step, set by the warm-up thread
    ready: bool = False
    failed: str | None = None
    compile_s: float | None = None
    graph: Any = None  # torch.cuda.CUDAGraph bound to the live cache + buffers
    graph_cache_gen: int = -1  # which live cache (LiveCache.gen) the graph replays on
    graph_failed: str | None = None


class StepRunner:
    """Runs one decoder's step: eager, or a compiled variant (with its CUDA graph) once ready.

    Owns the variants, the warm-up thread that compiles them and the graphs captured on the
    decoder's live cache. `want` and the read-only queries may be called from any thread;
    `run` from the decoding thread only.

    Args:
        enabled: compile at all; when False nothing is ever queued and `ready` stays set.
        graphs: "manual" (our CUDA graph per variant), "inductor" (reduce-overhead) or "off".
        make_step: greedy -> a fresh step function (`make_step` bound to the model).
        new_cache: bucket -> a scratch cache of that length, shaped like the live one.
        device, vocab: where and how large the scratch sampling buffers are.
        compile_options: extra torch.compile options (read at each compile).
        set_state: reports "optimising" / "ready" / "failed", from whichever thread.
    """

    def __init__(
        self,
        *,
        enabled: bool,
        graphs: GraphMode,
        make_step: Callable[[bool, bool], StepFn],
        new_cache: Callable[[int], Any],
        device: Any,
        vocab: int,
        compile_options: dict[str, Any],
        set_state: StateCallback,
    ) -> None:
        self.enabled = enabled
        self.graphs: GraphMode = graphs
        self._make_step = make_step
        self._eager_steps: dict[tuple[bool, bool], StepFn] = {}
        self._new_cache = new_cache
        self._device = device
        self._vocab = vocab
        self._options = compile_options
        self._set_state = set_state
        self._variants: dict[tuple[int, bool], _Variant] = {}
        self._vlock = threading.Lock()  # guards _variants and the compile queue
        self._queue: queue.Queue[tuple[int, bool] | None] = queue.Queue()
        self._worker: threading.Thread | None = None
        self._graph_pool: Any = None
        self._closed = False
        self.ready = threading.Event()  # set while the variant wanted last is compiled
        if not enabled:
            self.ready.set()  # nothing will ever compile: never make a waiter hang

    # ----------------------------------------------------------------- decoder's side

    def want(self, bucket: int, greedy: bool) -> _Variant | None:
        """The compiled variant for (bucket, greedy), queueing its compile if needed."""
        if not self.enabled or self._closed:
            return None
        key = (bucket, greedy)
        with self._vlock:
            v = self._variants.get(key)
            if v is None:
                v = self._variants[key] = _Variant(bucket, greedy)
                self._queue.put(key)
                if self._worker is None or not self._worker.is_alive():
                    self._worker = threading.Thread(
                        target=self._compile_worker, name="fastpath-compile", daemon=True
                    )
                    self._worker.start()
        if v.ready:
            self.ready.set()
        elif v.failed is None:
            self.ready.clear()
            self._set_state("optimising", f"compiling the decode step for a {bucket}-token cache")
        return v

    def run(
        self,
        bucket: int,
        greedy: bool,
        args: tuple[Any, ...],
        cache_gen: int,
        room: int,
        capture: bool = False,
    ) -> str:
        """Run one step on `args`; return the path taken ("eager", "compiled" or "graph").

        `args` is (live cache, token, floats, ints, presence); `cache_gen` identifies the live
        cache and `room` is how many positions it has left. The compiled variant for
        (bucket, greedy) serves once it is ready, the eager step until then.
        """
        import torch

        v = self._variants.get((bucket, greedy)) if self.enabled else None
        if v is None or not v.ready or v.compiled is None:
            with torch.no_grad():
                self._eager_step(greedy, capture)(*args)
            return "eager"
        if self.graphs == "manual":
            if v.graph is None and v.graph_failed is None:
                try:
                    self._capture(v, args, cache_gen, room)
                except Exception as e:
                    v.graph_failed = f"{type(e).__name__}: {e}"
                    log.exception("CUDA graph capture failed; using compiled kernels")
            if v.graph is not None and v.graph_cache_gen == cache_gen:
                v.graph.replay()
                return "graph"
        with torch.no_grad():
            v.compiled(*args)
        return "graph" if self.graphs == "inductor" else "compiled"

    def _eager_step(self, greedy: bool, capture: bool) -> StepFn:
        fn = self._eager_steps.get((greedy, capture))
        if fn is None:
            fn = self._eager_steps[(greedy, capture)] = self._make_step(greedy, capture)
        return fn

    def is_ready(self, bucket: int, greedy: bool) -> bool:
        v = self._variants.get((bucket, greedy))
        return bool(v and v.ready)

    @property
    def compiling(self) -> bool:
        """True while some wanted variant is queued or compiling."""
        with self._vlock:
            return any(not v.ready and v.failed is None for v in self._variants.values())

    def variant_info(self) -> list[dict[str, Any]]:
        """Compile times and failures per variant (for logs and benchmarks)."""
        with self._vlock:
            return [
                {
                    "bucket": v.bucket,
                    "greedy": v.greedy,
                    "ready": v.ready,
                    "compile_s": v.compile_s,
                    "failed": v.failed,
                    "graph": v.graph is not None,
                    "graph_failed": v.graph_failed,
                }
                for v in self._variants.values()
            ]

    def drop_graphs(self) -> None:
        """Forget the CUDA graphs: the live cache they were captured against is going away."""
        with self._vlock:
            for v in self._variants.values():
                v.graph = None

    def stop(self) -> None:
        """Tell the warm-up thread to finish; nothing is queued from now on."""
        self._closed = True
        self._queue.put(None)

    def clear(self) -> None:
        """Drop every variant and the graph memory pool (after `stop`)."""
        with self._vlock:
            self._variants.clear()
        self._graph_pool = None

    # ----------------------------------------------------------------- warm-up thread

    def _compile_worker(self) -> None:
        import torch

        configure_compile_cache()
        # One code object serves every variant (a closure per variant), so raise dynamo's
        # per-code recompile limit above the number of (bucket, mode) pairs we may build.
        dc = torch._dynamo.config
        for name in ("recompile_limit", "cache_size_limit"):
            if hasattr(dc, name):
                setattr(dc, name, max(int(getattr(dc, name)), 64))
        while True:
            key = self._queue.get()
            if key is None:
                return
            v = self._variants.get(key)
            if v is None or v.ready:
                continue
            t0 = time.perf_counter()
            try:
                v.compiled = self._compile_variant(v)
                v.compile_s = time.perf_counter() - t0
                v.ready = True
                self.ready.set()
                self._set_state("ready", f"decode step compiled in {v.compile_s:.0f} s")
                log.info("fastpath variant %s compiled in %.1f s", key, v.compile_s)
            except Exception as e:  # eager keeps serving; report once
                v.failed = f"{type(e).__name__}: {e}"
                self.ready.set()  # nothing more will come for this variant
                self._set_state("failed", f"compile failed, staying eager: {v.failed[:200]}")
                log.exception("fastpath compile of %s failed", key)

    def _compile_variant(self, v: _Variant) -> Any:
        """Compile (and run twice) the step on a scratch cache of the same bucket.

        The scratch cache has the same shapes as the live one, so the live cache hits the same
        compiled code (static-address tensors are not guarded on identity in torch >= 2.3).
        Running here, not in the decoding thread, keeps dynamo/inductor off the user's path.
        """
        import torch

        opts = dict(self._options)
        # "triton.cudagraphs" is what mode="reduce-overhead" sets (mode and options exclude
        # each other in torch.compile, and options must stay available).
        opts["triton.cudagraphs"] = self.graphs == "inductor"
        step = self._make_step(v.greedy, True)
        fn = torch.compile(step, fullgraph=True, dynamic=False, options=opts)
        scratch = self._new_cache(v.bucket)
        token = torch.zeros((1, 1), dtype=torch.long, device=self._device)
        buf = SamplingBuffers.allocate(self._vocab, self._device)
        capture = torch.zeros(CAPTURE_LEN, dtype=torch.float32, device=self._device)
        mark_static(self.graphs, token, buf, capture)
        with torch.no_grad():
            for _ in range(2):
                fn(scratch, token, buf.floats, buf.ints, buf.presence, capture)
        if self._device.type == "cuda":
            torch.cuda.synchronize(self._device)
        del scratch
        return fn

    # ----------------------------------------------------------------- decoding thread

    def _capture(self, v: _Variant, args: tuple[Any, ...], cache_gen: int, room: int) -> None:
        """Capture `v.compiled` on the live cache as a CUDA graph (decoding thread, token boundary).

        CUDA graphs need a couple of real runs first (cuBLAS workspaces, lazy inits) on a side
        stream. Those runs write keys/values one and two positions past the valid length and
        change the token/presence buffers; we crop the cache back and restore the buffers, so
        they leave no trace (entries past the length are masked and later overwritten).
        """
        import torch

        cache, tok, _floats, _ints, presence, _capture = args
        if room < 2:
            return  # no room for the warm-up runs: stay on the compiled kernels for this reply
        saved_tok, saved_presence = tok.clone(), presence.clone()
        s = torch.cuda.Stream(device=self._device)
        s.wait_stream(torch.cuda.current_stream(self._device))
        with torch.no_grad():
            with torch.cuda.stream(s):
                for _ in range(2):
                    v.compiled(*args)
            torch.cuda.current_stream(self._device).wait_stream(s)
            crop_static_cache(cache, 2)
            tok.copy_(saved_tok)
            presence.copy_(saved_presence)
            if self._graph_pool is None:
                self._graph_pool = torch.cuda.graph_pool_handle()
            g = torch.cuda.CUDAGraph()
            # thread_local: the warm-up thread may be compiling (allocating, syncing) meanwhile.
            with torch.cuda.graph(g, pool=self._graph_pool, capture_error_mode="thread_local"):
                v.compiled(*args)
        v.graph, v.graph_cache_gen = g, cache_gen

"""A fast single-stream decoder for Hugging Face causal LMs: static KV cache, one graph per token.

`model.generate()` spends most of a decode step on the host (logits processors, stopping
criteria, streamer, cache bookkeeping). On a GPU whose host CPU is slow that is idle GPU
time: a stock 8B model reaches ~10% of the memory-bandwidth limit (PERFORMANCE.md). This
module replaces the loop, not the model:

* the KV cache is a transformers `StaticCache` sized to a *bucket* (512, 1k, 2k, ... up to
  the context), so a growing conversation changes shape a handful of times, not every turn;
* the prompt is prefilled eagerly (in chunks);
* each later token is one call of `step()`: the model forward with `cache=`, then the token
  choice (`sampling.select_token`) on the device; the chosen id is written back into the
  step's own input buffer, so steps chain on the device and only the id comes back to the
  host (one sync per token);
* on CUDA the step is compiled by `torch.compile(fullgraph=True)` in a background thread
  (`warm_up()`), then captured as a CUDA graph in the decoding thread and replayed. Until a
  (bucket, greedy/sampling) variant is ready the eager step serves, so compiling never makes
  the user wait; the switch happens at a token boundary, mid-reply if need be;
* the decoder keeps the ids whose keys/values sit in the cache, so the next turn prefills only
  what differs from the longest common prefix (KV reuse), as TECH_NOTES §3 does with
  DynamicCache. A StaticCache is cropped by moving its length counter back: stale entries
  past the length are masked out (the mask is built from the cache length) and overwritten.
* on CUDA the loop runs one step ahead: the next step is launched before the current id is
  handed to the caller, so the GPU works while the caller decodes text and updates the UI. On
  CPU a launch *is* the computation, so running ahead would only hand every id (the first one
  included: time to first token) out one step late; there the id goes out first.

Why our own CUDA graph capture instead of `mode="reduce-overhead"`: inductor's CUDA graph
trees are thread-local (torch/_inductor/cudagraph_trees.py keeps them in threading.local), so
graphs recorded by the warm-up thread would be re-recorded in the decoding thread, and again
in every new worker thread a UI spawns per reply. A `torch.cuda.CUDAGraph` replays from any
thread. `graphs="inductor"` keeps the reduce-overhead route for comparison (benchmarks/gpu.py).

Usage (LocalBackend):

    dec = FastDecoder(model, compile=opts.compile, on_state=report)   # after loading
    dec.warm_up(prompt_len_hint, greedy=False)      # optional: start compiling right away
    for tok_id in dec.generate_ids(ids, params, cancel):   # in the generation thread
        ...decode incrementally, check stop strings...
    dec.last_stats                                  # stop reason, reused tokens, paths used

Only one `generate_ids` runs at a time per decoder (the Backend contract guarantees it).
torch and transformers are imported lazily, inside functions.
"""

from __future__ import annotations

import inspect
import logging
import os
import queue
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from llama_tui.engine.base import GenerationParams, StopReason
from llama_tui.engine.sampling import SamplingBuffers, select_token

log = logging.getLogger(__name__)

DecoderState = Literal["eager", "optimising", "ready", "failed"]
StateCallback = Callable[[DecoderState, str], None]
GraphMode = Literal["manual", "inductor", "off"]


class StopFlag(Protocol):
    """What `generate_ids` polls between tokens: a `threading.Event`, or any object that
    combines several (the user's cancel and a stop-string hit)."""

    def is_set(self) -> bool: ...


DEFAULT_MIN_BUCKET = 512
DEFAULT_PREFILL_CHUNK = 512


def bucket_for(needed: int, *, min_bucket: int, max_context: int) -> int:
    """Smallest power-of-two cache length >= `needed`, clamped to [min_bucket, max_context]."""
    b = max(1, min_bucket)
    while b < needed:
        b *= 2
    return max(min(b, max_context), min(min_bucket, max_context))


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def configure_compile_cache() -> str:
    """Point inductor's (and Triton's) on-disk caches under our cache dir; return the folder.

    Set before the first compile so that compiled kernels (inductor's FX graph cache,
    AOTAutograd cache, Triton binaries) are reused by the next launch. Dynamo's tracing of the
    Python model is not cached by torch: every launch traces again; what a warm cache saves is
    inductor's code generation and the C++/Triton compilation. An explicit env var wins.
    """
    from llama_tui.locations import cache_dir

    root = cache_dir() / "inductor"
    root.mkdir(parents=True, exist_ok=True)
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


def crop_static_cache(cache: Any, remove: int) -> None:
    """Forget the last `remove` positions of a `StaticCache` by moving its length counters back.

    This is what transformers 5.24's `StaticLayer.crop` does; 5.17 (the GPU image) has no
    `crop` for static layers, so we do it ourselves. In place: the counter is a tensor with a
    static address that compiled code and CUDA graphs read.
    """
    if remove <= 0:
        return
    for layer in cache.layers:
        length = layer.cumulative_length
        if hasattr(length, "sub_"):
            length.sub_(remove)
        else:  # a plain int in some releases
            layer.cumulative_length = length - remove


def unsupported_reason(model: Any) -> str | None:
    """Why `FastDecoder` cannot drive `model` (then use `generate`), or None when it can."""
    try:
        from transformers import StaticCache
        from transformers.cache_utils import StaticLayer
    except ImportError as e:  # pragma: no cover - very old transformers
        return f"transformers has no StaticCache ({e})"
    cfg = getattr(model, "config", None)
    if cfg is None or getattr(cfg, "is_encoder_decoder", False):
        return "not a decoder-only model"
    dmap = getattr(model, "hf_device_map", None)
    if dmap and len(set(map(str, dmap.values()))) > 1:
        return "model is spread over several devices"
    q = getattr(model, "hf_quantizer", None)
    if q is not None and "gguf" not in type(q).__name__.lower():
        return f"quantized model ({type(q).__name__})"
    try:
        cache = StaticCache(config=cfg, max_cache_len=8)
    except Exception as e:
        return f"no static cache for this architecture ({e})"
    if not all(type(layer) is StaticLayer for layer in cache.layers):
        return "sliding-window or hybrid attention layers"
    if not all(hasattr(layer, "cumulative_length") for layer in cache.layers):
        return "this transformers' StaticCache keeps no length counter (cannot be cropped)"
    return None


@dataclass
class DecodeStats:
    """What the last `generate_ids` did."""

    prompt_tokens: int = 0
    reused_tokens: int = 0  # prompt tokens served from the KV cache
    generated_tokens: int = 0  # ids produced (an EOS counts, but is not yielded)
    ttft_s: float | None = None  # start -> first id ready (prefill + first pick)
    decode_s: float = 0.0  # first id -> last id
    stop_reason: StopReason = StopReason.EOS
    eos_token_id: int | None = None  # the EOS id that ended the reply (counted, not yielded)
    bucket: int = 0
    steps_by_path: dict[str, int] = field(default_factory=dict)  # eager / compiled / graph

    @property
    def decode_tokens_per_s(self) -> float | None:
        n = self.generated_tokens - 1
        return n / self.decode_s if n > 0 and self.decode_s > 0 else None


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
    graph_cache_gen: int = -1  # which live cache (FastDecoder._cache_gen) the graph replays on
    graph_failed: str | None = None


class FastDecoder:
    """Static-cache decode loop with on-device sampling; see the module docstring.

    Args:
        model: a loaded transformers causal LM on one device (see `unsupported_reason`).
        compile: compile the step in the background. None = on CUDA only (on CPU the compile
            costs minutes for a small gain; benchmarks/cpu.py measures it).
        graphs: on CUDA, "manual" (our CUDA graph per variant), "inductor"
            (torch.compile mode="reduce-overhead"), or "off" (compiled kernels, no graph).
        min_bucket: the smallest cache length; buckets double from there up to the context.
        max_context: cache length cap; default the model's max_position_embeddings.
        eos_token_ids: ids that end a reply; default from the generation config.
        on_state: called with ("optimising" | "ready" | "failed" | "eager", detail) from
            whichever thread changes the state; must be thread-safe and quick.
        run_ahead: launch the next step before handing out the current id. None = on CUDA
            only (asynchronous launches); on CPU it would delay every id by one step.
    """

    def __init__(
        self,
        model: Any,
        *,
        compile: bool | None = None,
        graphs: GraphMode = "manual",
        min_bucket: int = DEFAULT_MIN_BUCKET,
        max_context: int | None = None,
        prefill_chunk: int = DEFAULT_PREFILL_CHUNK,
        eos_token_ids: Sequence[int] | int | None = None,
        on_state: StateCallback | None = None,
        compile_options: dict[str, Any] | None = None,
        run_ahead: bool | None = None,
    ) -> None:
        import torch

        reason = unsupported_reason(model)
        if reason is not None:
            raise ValueError(f"FastDecoder cannot drive this model: {reason}")
        self.model = model
        self.config = model.config
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        on_cuda = self.device.type == "cuda"
        self.compile_enabled = on_cuda if compile is None else bool(compile)
        self.graphs: GraphMode = graphs if on_cuda else "off"
        self.run_ahead = on_cuda if run_ahead is None else bool(run_ahead)
        self.compile_options = dict(compile_options or {})
        self.min_bucket = min_bucket
        ctx = max_context or getattr(self.config, "max_position_embeddings", None) or 2048
        self.max_context = int(ctx)
        self.prefill_chunk = prefill_chunk
        self.on_state = on_state
        # transformers 5.24 renamed forward(past_key_values=) to cache= (the old name warns);
        # the GPU image's 5.17 only knows past_key_values.
        params = inspect.signature(model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self.eos_ids = self._eos_ids(eos_token_ids)

        # out_features, not weight.shape: a dynamically quantized head has weight() as a method.
        head = model.get_output_embeddings()
        vocab = int(getattr(head, "out_features", 0) or head.weight.shape[0])
        self._buf = SamplingBuffers.allocate(vocab, self.device)
        self._token = torch.zeros((1, 1), dtype=torch.long, device=self.device)
        self._mark_static(self._token, self._buf)
        self._cache: Any = None
        self._cache_gen = 0  # bumped whenever the live cache object is replaced or dropped
        self._bucket = 0
        self._floor_bucket = 0  # raised by warm_up()
        self._tokens: list[int] = []  # ids whose keys/values are in the cache, in order
        self._variants: dict[tuple[int, bool], _Variant] = {}
        self._eager_steps: dict[bool, Callable[..., Any]] = {}
        self._busy = threading.Lock()
        self._vlock = threading.Lock()  # guards _variants and the compile queue
        self._queue: queue.Queue[tuple[int, bool] | None] = queue.Queue()
        self._worker: threading.Thread | None = None
        self._graph_pool: Any = None
        self.ready = threading.Event()  # set while the variant wanted last is compiled
        if not self.compile_enabled:
            self.ready.set()  # nothing will ever compile: never make a waiter hang
        self.state: DecoderState = "eager"
        self.last_stats = DecodeStats()
        self._closed = False

    # ----------------------------------------------------------------- public API

    def generate_ids(
        self,
        prompt_ids: Sequence[int],
        params: GenerationParams,
        cancel: StopFlag,
        reuse_prefix: bool = True,
    ) -> Iterator[int]:
        """Yield the reply's token ids one by one (EOS ends the reply and is not yielded).

        Stops at EOS, `params.max_new_tokens`, a full cache (context) or `cancel` (checked
        before every step and after every yield). Closing the iterator early (a stop string)
        is fine: the cache bookkeeping stays exact. `last_stats` is final once it ends.
        Raises ValueError at once for an empty prompt or one that fills the context.
        """
        prompt = list(prompt_ids)
        if not prompt:
            raise ValueError("empty prompt")
        if len(prompt) >= self.max_context:
            raise ValueError(
                f"prompt of {len(prompt)} tokens does not fit the context ({self.max_context})"
            )
        return self._generate(prompt, params, cancel, reuse_prefix)

    def warm_up(
        self, prompt_tokens: int = 0, *, greedy: bool = False, max_new_tokens: int = 512
    ) -> None:
        """Start compiling the step for the bucket that such a reply would use (non-blocking).

        The bucket also becomes the smallest one the next cache is allocated with, so that a
        shorter first prompt still lands on the variant being compiled.
        """
        need = max(prompt_tokens + max_new_tokens, 1)
        bucket = max(self._bucket, self._bucket_for(need))
        self._floor_bucket = max(self._floor_bucket, bucket)
        self._want(bucket, greedy)

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until the variant asked for last is compiled (benchmarks, tests)."""
        return self.ready.wait(timeout)

    def is_ready(self, bucket: int, greedy: bool) -> bool:
        v = self._variants.get((bucket, greedy))
        return bool(v and v.ready)

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

    @property
    def cached_tokens(self) -> int:
        return len(self._tokens)

    @property
    def compiling(self) -> bool:
        """True while some wanted variant is queued or compiling (the UI's "optimising")."""
        with self._vlock:
            return any(not v.ready and v.failed is None for v in self._variants.values())

    def reusable_tokens(self, prompt_ids: Sequence[int], reuse_prefix: bool = True) -> int:
        """How many of `prompt_ids` the next `generate_ids` will serve from the KV cache."""
        if not reuse_prefix or not prompt_ids:
            return 0
        # The last prompt token is always fed: its logits pick the first reply token.
        return min(common_prefix_length(self._tokens, prompt_ids), len(prompt_ids) - 1)

    def reset(self) -> None:
        """Forget the cached prefix (a new conversation); keeps the buffers and graphs."""
        if self._cache is not None and self._tokens:
            crop_static_cache(self._cache, len(self._tokens))
        self._tokens = []

    def close(self) -> None:
        """Stop the warm-up thread and drop caches and graphs. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._drop_cache()
        with self._vlock:
            self._variants.clear()
        self._tokens = []
        self._graph_pool = None

    # ----------------------------------------------------------------- internals

    def _mark_static(self, token: Any, buf: SamplingBuffers) -> None:
        # reduce-overhead needs mutated inputs at fixed addresses, or it skips the graph; the
        # scratch buffers of the warm-up get the same marking so that guards match.
        if self.graphs == "inductor":
            import torch

            for t in (token, buf.floats, buf.ints, buf.presence):
                torch._dynamo.mark_static_address(t)

    def _drop_cache(self, new: Any = None, bucket: int = 0) -> None:
        """Replace (or drop) the live cache; graphs captured against the old one go with it."""
        with self._vlock:
            for v in self._variants.values():
                v.graph = None
        self._cache, self._bucket = new, bucket
        self._cache_gen += 1

    def _eos_ids(self, eos: Sequence[int] | int | None) -> frozenset[int]:
        if eos is None:
            gc = getattr(self.model, "generation_config", None)
            eos = getattr(gc, "eos_token_id", None)
            if eos is None:
                eos = getattr(self.config, "eos_token_id", None)
        if eos is None:
            return frozenset()
        if isinstance(eos, int):
            return frozenset({eos})
        return frozenset(int(e) for e in eos)

    def _bucket_for(self, needed: int) -> int:
        return bucket_for(needed, min_bucket=self.min_bucket, max_context=self.max_context)

    def _set_state(self, state: DecoderState, detail: str) -> None:
        self.state = state
        if self.on_state is not None:
            try:
                self.on_state(state, detail)
            except Exception:  # a UI callback must never break decoding
                log.exception("on_state callback failed")

    def _new_cache(self, bucket: int) -> Any:
        import torch
        from transformers import StaticCache

        cfg = self.config
        cache = StaticCache(config=cfg, max_cache_len=bucket)
        heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        # Allocate now (not lazily in the first update) so that the tensors get their static
        # addresses outside any compiled region, and the size is known up front.
        with torch.no_grad():
            cache.early_initialization(1, heads, head_dim, self.dtype, self.device)
        return cache

    def _ensure_cache(self, prompt: list[int], needed: int, reuse: bool) -> int:
        """Make the live cache big enough and crop it to the reusable prefix; return its length."""
        keep = self.reusable_tokens(prompt, reuse)
        target = min(max(self._bucket_for(needed), self._floor_bucket), self.max_context)
        if self._cache is None or target > self._bucket:
            old, old_len = self._cache, len(self._tokens)
            new = self._new_cache(target)
            if old is not None and keep > 0:
                import torch

                # Carry the reusable prefix into the bigger cache (a device copy, no recompute).
                with torch.no_grad():
                    for i, layer in enumerate(old.layers):
                        new.update(layer.keys[:, :, :keep], layer.values[:, :, :keep], i)
            else:
                keep = 0
            del old
            log.debug("cache bucket %d -> %d (had %d tokens)", self._bucket, target, old_len)
            self._drop_cache(new, target)
        elif len(self._tokens) > keep:
            crop_static_cache(self._cache, len(self._tokens) - keep)
        self._tokens = prompt[:keep]
        return keep

    def _make_step(self, greedy: bool) -> Callable[..., Any]:
        model, kw = self.model, self._cache_kw

        def step(cache: Any, token: Any, floats: Any, ints: Any, presence: Any) -> Any:
            # The position of `token` is the cache length before this forward: the RNG counter.
            position = cache.get_seq_length()
            out = model(input_ids=token, use_cache=True, **{kw: cache})
            logits = out.logits[0, -1, :].float()
            nxt = select_token(logits, SamplingBuffers(floats, ints, presence), position, greedy)
            # Feed the choice back into the input buffer so the next step needs no host data.
            token.copy_(nxt.view(1, 1))
            presence.index_fill_(0, nxt, True)
            return nxt

        return step

    def _eager_step(self, greedy: bool) -> Callable[..., Any]:
        fn = self._eager_steps.get(greedy)
        if fn is None:
            fn = self._eager_steps[greedy] = self._make_step(greedy)
        return fn

    def _prefill(self, ids: list[int], greedy: bool) -> int:
        """Feed `ids` after the cached prefix and pick the first reply token (one host sync)."""
        import torch

        model, kw, cache = self.model, self._cache_kw, self._cache
        with torch.no_grad():
            out = None
            for i in range(0, len(ids), self.prefill_chunk):
                part = ids[i : i + self.prefill_chunk]
                chunk = torch.tensor([part], dtype=torch.long, device=self.device)
                # logits_to_keep=1: only the last position's logits are needed (a prompt x vocab
                # float tensor would be large for 128k vocabularies).
                out = model(input_ids=chunk, use_cache=True, logits_to_keep=1, **{kw: cache})
                self._tokens.extend(part)
            assert out is not None
            logits = out.logits[0, -1, :].float()
            position = cache.get_seq_length() - 1
            nxt = select_token(logits, self._buf, position, greedy)
            self._token.copy_(nxt.view(1, 1))
            self._buf.presence.index_fill_(0, nxt, True)
        return int(nxt.item())

    def _want(self, bucket: int, greedy: bool) -> _Variant | None:
        """The compiled variant for (bucket, greedy), queueing its compile if needed."""
        if not self.compile_enabled or self._closed:
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

        opts = dict(self.compile_options)
        # "triton.cudagraphs" is what mode="reduce-overhead" sets (mode and options exclude
        # each other in torch.compile, and options must stay available).
        opts["triton.cudagraphs"] = self.graphs == "inductor"
        fn = torch.compile(self._make_step(v.greedy), fullgraph=True, dynamic=False, options=opts)
        scratch = self._new_cache(v.bucket)
        token = torch.zeros((1, 1), dtype=torch.long, device=self.device)
        buf = SamplingBuffers.allocate(self._buf.presence.shape[0], self.device)
        self._mark_static(token, buf)
        with torch.no_grad():
            for _ in range(2):
                fn(scratch, token, buf.floats, buf.ints, buf.presence)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        del scratch
        return fn

    def _capture(self, v: _Variant) -> None:
        """Capture `v.compiled` on the live cache as a CUDA graph (decoding thread, token boundary).

        CUDA graphs need a couple of real runs first (cuBLAS workspaces, lazy inits) on a side
        stream. Those runs write keys/values one and two positions past the valid length and
        change the token/presence buffers; we crop the cache back and restore the buffers, so
        they leave no trace (entries past the length are masked and later overwritten).
        """
        import torch

        cache, buf, tok = self._cache, self._buf, self._token
        if len(self._tokens) + 2 > self._bucket:
            return  # no room for the warm-up runs: stay on the compiled kernels for this reply
        saved_tok, saved_presence = tok.clone(), buf.presence.clone()
        args = (cache, tok, buf.floats, buf.ints, buf.presence)
        s = torch.cuda.Stream(device=self.device)
        s.wait_stream(torch.cuda.current_stream(self.device))
        with torch.no_grad():
            with torch.cuda.stream(s):
                for _ in range(2):
                    v.compiled(*args)
            torch.cuda.current_stream(self.device).wait_stream(s)
            crop_static_cache(cache, 2)
            tok.copy_(saved_tok)
            buf.presence.copy_(saved_presence)
            if self._graph_pool is None:
                self._graph_pool = torch.cuda.graph_pool_handle()
            g = torch.cuda.CUDAGraph()
            # thread_local: the warm-up thread may be compiling (allocating, syncing) meanwhile.
            with torch.cuda.graph(g, pool=self._graph_pool, capture_error_mode="thread_local"):
                v.compiled(*args)
        v.graph, v.graph_cache_gen = g, self._cache_gen

    def _launch(self, greedy: bool, counts: dict[str, int]) -> None:
        """Run one step: feed `self._token` (already the last emitted id), write the next one."""
        import torch

        v = self._variants.get((self._bucket, greedy)) if self.compile_enabled else None
        path = "eager"
        if v is not None and v.ready and v.compiled is not None:
            if self.graphs == "manual":
                if v.graph is None and v.graph_failed is None:
                    try:
                        self._capture(v)
                    except Exception as e:
                        v.graph_failed = f"{type(e).__name__}: {e}"
                        log.exception("CUDA graph capture failed; using compiled kernels")
                if v.graph is not None and v.graph_cache_gen == self._cache_gen:
                    v.graph.replay()
                    path = "graph"
            if path == "eager":
                with torch.no_grad():
                    v.compiled(
                        self._cache,
                        self._token,
                        self._buf.floats,
                        self._buf.ints,
                        self._buf.presence,
                    )
                path = "graph" if self.graphs == "inductor" else "compiled"
        else:
            with torch.no_grad():
                self._eager_step(greedy)(
                    self._cache, self._token, self._buf.floats, self._buf.ints, self._buf.presence
                )
        counts[path] = counts.get(path, 0) + 1

    def _generate(
        self, prompt: list[int], params: GenerationParams, cancel: StopFlag, reuse: bool
    ) -> Iterator[int]:
        # Taken inside the generator: a generator that is never started runs no `finally`.
        if not self._busy.acquire(blocking=False):
            raise RuntimeError("FastDecoder runs one generation at a time")
        stats = DecodeStats(prompt_tokens=len(prompt))
        counts: dict[str, int] = {}
        t0 = time.perf_counter()
        t_first: float | None = None
        try:
            greedy = not params.do_sample
            max_new = max(1, int(params.max_new_tokens))
            stats.reused_tokens = self._ensure_cache(prompt, len(prompt) + max_new, reuse)
            stats.bucket = self._bucket
            seed = params.seed if params.seed is not None else random.getrandbits(32)
            self._buf.load(params, seed, prompt)
            stats.stop_reason = StopReason.CANCELLED
            if cancel.is_set():
                return
            cur = self._prefill(prompt[stats.reused_tokens :], greedy)
            t_first = time.perf_counter()
            stats.ttft_s = t_first - t0
            # Queue the compile only now: dynamo's tracing holds the GIL for long stretches and
            # would otherwise delay the first token it is meant not to delay.
            self._want(self._bucket, greedy)
            generated = 0
            ahead = self.run_ahead
            while True:
                generated += 1
                stop: StopReason | None = None
                if cur in self.eos_ids:
                    stop = StopReason.EOS
                    stats.eos_token_id = cur
                elif generated >= max_new or len(self._tokens) >= self._bucket:
                    stop = StopReason.LENGTH
                elif cancel.is_set():
                    stop = StopReason.CANCELLED
                if stop is None and ahead:
                    # Launch the next step before handing `cur` out (it is already in the
                    # device buffer): the device computes while the caller renders.
                    self._launch(greedy, counts)
                    self._tokens.append(cur)
                stats.generated_tokens = generated
                if stop is not None:
                    stats.stop_reason = stop
                    if stop is not StopReason.EOS:
                        yield cur
                    return
                yield cur
                if cancel.is_set():
                    stats.stop_reason = StopReason.CANCELLED
                    return
                if not ahead:
                    self._launch(greedy, counts)
                    self._tokens.append(cur)
                cur = int(self._token.item())  # the one host sync per token
        except Exception:
            # A failure mid-forward (out of memory, a device error) can leave some layers one
            # update ahead of the others: forget the cache rather than trust it.
            self._drop_cache()
            self._tokens = []
            stats.stop_reason = StopReason.ERROR
            raise
        finally:
            if t_first is not None:
                stats.decode_s = time.perf_counter() - t_first
            stats.steps_by_path = counts
            self.last_stats = stats
            self._busy.release()

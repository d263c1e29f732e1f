"""A fast single-stream decoder for Hugging Face causal LMs: static KV cache, one graph per token.

`model.generate()` spends most of a decode step on the host (logits processors, stopping
criteria, streamer, cache bookkeeping). On a GPU whose host CPU is slow that is idle GPU
time: a stock 8B model reaches ~10% of the memory-bandwidth limit (benchmarks/README.md). This
module replaces the loop, not the model:

* the KV cache is a transformers `StaticCache` sized to a *bucket* (512, 1k, 2k, ... up to
  the context), so a growing conversation changes shape a handful of times, not every turn;
  the decoder keeps the ids whose keys/values sit in it, so the next turn prefills only what
  differs from the longest common prefix (KV reuse; cache.py: buckets, cropping a
  StaticCache);
* the prompt is prefilled eagerly (in chunks);
* each later token is one call of the step: the model forward, then the token choice on the
  device, written back into the step's own input buffer, so steps chain on the device and
  only the id comes back to the host (one sync per token);
* on CUDA the step is compiled by `torch.compile(fullgraph=True)` in a background thread
  (`warm_up()`), then captured as a CUDA graph in the decoding thread and replayed; the eager
  step serves until then, so compiling never makes the user wait (compile.py: the step,
  its variants, why we capture CUDA graphs ourselves);
* on CUDA the loop runs one step ahead: the next step is launched before the current id is
  handed to the caller, so the GPU works while the caller decodes text and updates the UI. On
  CPU a launch *is* the computation, so running ahead would only hand every id (the first one
  included: time to first token) out one step late; there the id goes out first.

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

import functools
import inspect
import logging
import random
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

from llama_tui.core.backend import StopReason
from llama_tui.core.params import GenerationParams
from llama_tui.engine.fast.cache import LiveCache, new_static_cache, unsupported_reason
from llama_tui.engine.fast.compile import (
    DecoderState,
    GraphMode,
    StateCallback,
    StepRunner,
    make_step,
    mark_static,
)
from llama_tui.engine.fast.lean import LeanForward
from llama_tui.engine.fast.stats import DecodeStats, StopFlag
from llama_tui.engine.local.logprobs import CAPTURE_LEN, capture_values
from llama_tui.engine.local.sampling import (
    NON_FINITE_TOKEN,
    SamplingBuffers,
    select_token_and_logprob,
)

log = logging.getLogger(__name__)

DEFAULT_MIN_BUCKET = 512
DEFAULT_PREFILL_CHUNK = 512


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
        lean: run the eager step through `LeanForward` (lean.py) instead of the model's own
            forward: on CPU by default, never with `compile`; used where the model's layers
            allow it.
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
        lean: bool | None = None,
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
        self._cache_kw = _forward_cache_keyword(model)
        self.eos_ids = self._eos_ids(eos_token_ids)
        vocab = _vocab_size(model)
        self._buf = SamplingBuffers.allocate(vocab, self.device)
        self._token = torch.zeros((1, 1), dtype=torch.long, device=self.device)
        # The step's logprob capture (engine.local.logprobs), read with the token id.
        self._capture_buf = torch.zeros(CAPTURE_LEN, dtype=torch.float32, device=self.device)
        self._capture = False  # this reply records logprobs
        # The capture of the id handed out last, as floats (None: capture off).
        self.current_capture: list[float] | None = None
        mark_static(self.graphs, self._token, self._buf, self._capture_buf)
        self._busy = threading.Lock()
        self.lean = self._lean_forward(lean)
        self._steps = self._step_runner(vocab)
        self.ready = self._steps.ready  # set while the variant wanted last is compiled
        # The live KV cache and the ids in it; graphs go with a replaced cache.
        self._kv = LiveCache(
            self._new_cache,
            min_bucket=min_bucket,
            max_context=self.max_context,
            on_replace=self._steps.drop_graphs,
        )
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
        bucket = max(self._kv.bucket, self._kv.bucket_for(need))
        self._kv.floor = max(self._kv.floor, bucket)
        self._steps.want(bucket, greedy)

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until the variant asked for last is compiled (benchmarks, tests)."""
        return self.ready.wait(timeout)

    def is_ready(self, bucket: int, greedy: bool) -> bool:
        return self._steps.is_ready(bucket, greedy)

    def variant_info(self) -> list[dict[str, Any]]:
        """Compile times and failures per variant (for logs and benchmarks)."""
        return self._steps.variant_info()

    @property
    def cached_tokens(self) -> int:
        return len(self._kv.tokens)

    @property
    def compiling(self) -> bool:
        """True while some wanted variant is queued or compiling (the UI's "optimising")."""
        return self._steps.compiling

    def reusable_tokens(self, prompt_ids: Sequence[int], reuse_prefix: bool = True) -> int:
        """How many of `prompt_ids` the next `generate_ids` will serve from the KV cache."""
        return self._kv.reusable(prompt_ids, reuse_prefix)

    def reset(self) -> None:
        """Forget the cached prefix (a new conversation); keeps the buffers and graphs."""
        self._kv.reset()

    def close(self) -> None:
        """Stop the warm-up thread and drop caches and graphs. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._steps.stop()
        self._kv.replace()  # drops the cache, and the graphs captured against it
        self._steps.clear()
        self._kv.tokens = []

    # ----------------------------------------------------------------- internals

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

    def _step_runner(self, vocab: int) -> StepRunner:
        """The step: eager, its compiled variants, their warm-up thread, CUDA graphs."""
        return StepRunner(
            enabled=self.compile_enabled,
            graphs=self.graphs,
            make_step=functools.partial(make_step, self.model, self._cache_kw, forward=self.lean),
            new_cache=self._new_cache,
            device=self.device,
            vocab=vocab,
            compile_options=self.compile_options,
            set_state=self._set_state,
        )

    def _lean_forward(self, lean: bool | None) -> LeanForward | None:
        """The lean forward for the eager step, when wanted and possible (else None)."""
        # Compiled steps trace the model's own forward (the lean one reads the position on
        # the host, which a graph cannot).
        if not (self.device.type == "cpu" if lean is None else lean) or self.compile_enabled:
            return None
        try:
            return LeanForward(self.model)  # checks `lean_reason` itself
        except ValueError as exc:
            log.info("lean CPU step not used (%s): the model's forward serves", exc)
            return None

    def _set_state(self, state: DecoderState, detail: str) -> None:
        self.state = state
        if self.on_state is not None:
            try:
                self.on_state(state, detail)
            except Exception:  # a UI callback must never break decoding
                log.exception("on_state callback failed")

    def _new_cache(self, bucket: int) -> Any:
        return new_static_cache(self.config, bucket, self.dtype, self.device)

    def _prefill(self, ids: list[int], greedy: bool) -> int:
        """Feed `ids` after the cached prefix and pick the first reply token (one host sync)."""
        import torch

        model, kw, cache, tokens = self.model, self._cache_kw, self._kv.cache, self._kv.tokens
        with torch.no_grad():
            out = None
            for i in range(0, len(ids), self.prefill_chunk):
                part = ids[i : i + self.prefill_chunk]
                chunk = torch.tensor([part], dtype=torch.long, device=self.device)
                # logits_to_keep=1: only the last position's logits are needed (a prompt x vocab
                # float tensor would be large for 128k vocabularies).
                out = model(input_ids=chunk, use_cache=True, logits_to_keep=1, **{kw: cache})
                tokens.extend(part)
            assert out is not None
            logits = out.logits[0, -1, :].float()
            position = cache.get_seq_length() - 1
            host_top_k = int(self._buf.ints[0]) if self.lean is not None else 0  # as the step
            nxt, sampled = select_token_and_logprob(logits, self._buf, position, greedy, host_top_k)
            self._token.copy_(nxt.view(1, 1))
            self._buf.presence.index_fill_(0, nxt, True)
            if self._capture:
                self._capture_buf.copy_(capture_values(logits, nxt, sampled))
        return self._read_token()

    def _read_token(self) -> int:
        """The id the last step chose: the one host sync per token (with the capture, when
        on, in the same read)."""
        if not self._capture:
            self.current_capture = None
            return int(self._token.item())
        values = self._capture_buf.tolist()
        self.current_capture = values
        return int(values[0])

    def _launch(self, greedy: bool, counts: dict[str, int]) -> None:
        """Run one step: feed `self._token` (already the last emitted id), write the next one."""
        kv = self._kv
        buf = self._buf
        args = (kv.cache, self._token, buf.floats, buf.ints, buf.presence, self._capture_buf)
        room = kv.bucket - len(kv.tokens)
        path = self._steps.run(kv.bucket, greedy, args, kv.gen, room, self._capture)
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
            stats.reused_tokens = self._kv.ensure(prompt, len(prompt) + max_new, reuse)
            stats.bucket = self._kv.bucket
            seed = params.seed if params.seed is not None else random.getrandbits(32)
            self._buf.load(params, seed, prompt)
            self._capture = params.logprobs > 0
            stats.stop_reason = StopReason.CANCELLED
            if cancel.is_set():
                return
            cur = self._prefill(prompt[stats.reused_tokens :], greedy)
            t_first = time.perf_counter()
            stats.ttft_s = t_first - t0
            # Queue the compile only now: dynamo's tracing holds the GIL for long stretches and
            # would otherwise delay the first token it is meant not to delay.
            self._steps.want(self._kv.bucket, greedy)
            yield from self._decode(cur, greedy, max_new, cancel, stats, counts)
        except Exception:
            # A failure mid-forward (out of memory, a device error) can leave some layers one
            # update ahead of the others: forget the cache rather than trust it.
            self._kv.replace()
            self._kv.tokens = []
            stats.stop_reason = StopReason.ERROR
            raise
        finally:
            if t_first is not None:
                stats.decode_s = time.perf_counter() - t_first
            stats.steps_by_path = counts
            self.last_stats = stats
            self._busy.release()

    def _decode(
        self,
        cur: int,
        greedy: bool,
        max_new: int,
        cancel: StopFlag,
        stats: DecodeStats,
        counts: dict[str, int],
    ) -> Iterator[int]:
        """The token loop after the prefill picked `cur`; sets the stop reason in `stats`."""
        generated = 0
        ahead = self.run_ahead
        while True:
            if cur == NON_FINITE_TOKEN:
                # The wording is the one generate's sampler uses, which classify_error turns
                # into "use bfloat16 or greedy". Raised before the id is fed back.
                raise RuntimeError("probability tensor contains either `inf`, `nan` or element < 0")
            generated += 1
            stop: StopReason | None = None
            if cur in self.eos_ids:
                stop = StopReason.EOS
                stats.eos_token_id = cur
            elif generated >= max_new or len(self._kv.tokens) >= self._kv.bucket:
                stop = StopReason.LENGTH
            elif cancel.is_set():
                stop = StopReason.CANCELLED
            if stop is None and ahead:
                # Launch the next step before handing `cur` out (it is already in the device
                # buffer): the device computes while the caller renders.
                self._launch(greedy, counts)
                self._kv.tokens.append(cur)
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
                self._kv.tokens.append(cur)
            cur = self._read_token()  # the one host sync per token


def _forward_cache_keyword(model: Any) -> str:
    """transformers 5.24 renamed forward(past_key_values=) to cache= (the old name warns);
    earlier 5.x releases only know past_key_values."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _vocab_size(model: Any) -> int:
    # out_features, not weight.shape: a dynamically quantized head has weight() as a method.
    head = model.get_output_embeddings()
    return int(getattr(head, "out_features", 0) or head.weight.shape[0])

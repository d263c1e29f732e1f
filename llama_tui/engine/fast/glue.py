"""When `LocalBackend` decodes through the `FastDecoder` instead of `model.generate`, and how.

The policy (figures: benchmarks/README.md, "Measured"):

* `LoadOptions.compile` false (`--no-compile`): never. Every reply uses `generate`.
* CUDA: always, with the decode step compiled in a background thread. `generate` is bound by
  the host there (~10% of the memory-bandwidth limit on an 8B model); the decoder serves the
  first replies eagerly at once, and its compiled step takes over at a token boundary when it
  is ready, so compiling never makes the user wait. The compile starts right after loading,
  while the user reads and types, for a typical first reply's cache bucket.
* CPU: no compile (on 2 CPU cores it costs 10 s to several minutes for 1.0-1.3x). The eager
  decoder with its lean step (lean.py: transformers' Llama / Mistral / Qwen2 layers) in every
  dtype: on the demo model at 1 thread it measured 1.40x `generate` in int4, 1.18x in
  float16, 1.17x in bfloat16 and 1.08x in float32, with generate's greedy tokens in all four.
  Without the lean step (other architectures) the decoder runs the model's own forward, which
  measured 0.8-0.9x `generate` on a quiet CPU: those keep `generate`.
* MPS: unmeasured, so `generate`.
* Per reply, whatever the decoder cannot do goes to `generate` with a log line. Today that is
  only a reply that would not fit the decoder's context. Every sampling setting (temperature,
  top-k, top-p, min-p, repetition penalty, seed) runs on the device, and raw mode is only a
  different prompt, so both are served. A model the decoder cannot drive at all (sliding-window
  attention, several devices, most quantizers) never gets one: `fast.cache.unsupported_reason`.

Greedy replies are token-identical on both paths (fp32 and fp16; tests pin it). A seeded
sampled reply is reproducible on each path, but the two draw differently: the decoder hashes
(seed, position, token id) where `generate` uses torch's generator.

No torch import at module level (the decoder imports it lazily).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from llama_tui.core.params import GenerationParams
from llama_tui.engine.fast.cache import unsupported_reason
from llama_tui.engine.fast.decoder import FastDecoder
from llama_tui.engine.fast.lean import lean_reason
from llama_tui.engine.local.logprobs import RawLog, capture_from_values, sampling_differs
from llama_tui.engine.local.streaming import (
    FastReply,
    GenerationJob,
    IdStreamer,
    QueueItem,
    StopFlags,
)

log = logging.getLogger(__name__)

# "auto" is the policy above; "eager" / "compiled" use the decoder on any device, without or
# with compiling (tests, benchmarks); "off" always uses `generate`. `--no-compile` beats all.
FastPathMode = Literal["auto", "eager", "compiled", "off"]

# The prompt length assumed when compiling before the first reply: a system prompt and a
# question fit, so with the default 512 new tokens the first replies land on that variant.
WARM_UP_PROMPT_TOKENS = 512


@dataclass(frozen=True)
class FastPathChoice:
    """Whether to build a decoder for a model, whether to compile it, and why (for the log)."""

    use: bool
    compile: bool
    why: str


def choose_fast_path(
    device_type: str, dtype: str, *, compile: bool, mode: FastPathMode = "auto", lean: bool = True
) -> FastPathChoice:
    """The policy of the module docstring, for a model on `device_type` in `dtype`; `lean`:
    whether the lean CPU step can drive the model (`lean.lean_reason`)."""
    if not compile:
        return FastPathChoice(False, False, "turned off (--no-compile)")
    if mode == "off":
        return FastPathChoice(False, False, "turned off")
    if mode in ("eager", "compiled"):
        return FastPathChoice(True, mode == "compiled", f"requested ({mode})")
    if device_type == "cuda":
        return FastPathChoice(True, True, "CUDA: eager at once, compiled step in the background")
    if device_type == "cpu" and lean:
        return FastPathChoice(True, False, f"CPU {dtype}: lean eager step measured faster")
    return FastPathChoice(
        False, False, f"{device_type} {dtype}: not measured faster than generate there"
    )


class FastPath:
    """One backend's `FastDecoder` and the per-reply decisions around it."""

    def __init__(self, decoder: FastDecoder, why: str) -> None:
        self.decoder = decoder
        self.why = why

    @classmethod
    def create(
        cls,
        model: Any,
        *,
        compile: bool,
        mode: FastPathMode,
        device_type: str,
        context_length: int | None = None,
    ) -> FastPath | None:
        """A fast path for `model` when the policy and the model allow one, else None."""
        dtype = str(getattr(model, "dtype", "")).removeprefix("torch.")
        if device_type == "cpu":
            from llama_tui.engine.quant.apply import quant_label

            dtype = quant_label(model) or dtype  # "int4": bf16 activations, 4-bit weights
        lean = device_type == "cpu" and lean_reason(model) is None
        choice = choose_fast_path(device_type, dtype, compile=compile, mode=mode, lean=lean)
        if not choice.use:
            log.info("fast decode path not used (%s): replies use generate", choice.why)
            return None
        reason = unsupported_reason(model)
        if reason is not None:
            log.info("fast decode path unavailable (%s): replies use generate", reason)
            return None
        ctx = getattr(model.config, "max_position_embeddings", None) or context_length
        if ctx is not None and context_length is not None:
            ctx = min(int(ctx), context_length)
        try:
            decoder = FastDecoder(model, compile=choice.compile, max_context=ctx)
        except Exception:  # never fatal: generate serves every reply
            log.exception("fast decoder setup failed: replies use generate")
            return None
        log.info("fast decode path on (%s)", choice.why)
        return cls(decoder, choice.why)

    @property
    def optimising(self) -> bool:
        """True while a decode step compiles in the background."""
        return self.decoder.compiling

    def warm_up(self, params: GenerationParams) -> None:
        """Start compiling for a typical first reply with `params` (CUDA); else nothing."""
        if self.decoder.compile_enabled:
            self.decoder.warm_up(
                WARM_UP_PROMPT_TOKENS,
                greedy=not params.do_sample,
                max_new_tokens=params.max_new_tokens,
            )

    def refuse(self, prompt_ids: Sequence[int], params: GenerationParams) -> str | None:
        """Why this reply cannot go through the decoder (it then uses generate), or None."""
        if not prompt_ids:
            return "empty prompt"
        need = len(prompt_ids) + params.max_new_tokens
        if need > self.decoder.max_context:
            return f"{need} tokens exceed the decoder's context ({self.decoder.max_context})"
        return None

    def job(
        self,
        ids: list[int],
        params: GenerationParams,
        cancel: threading.Event,
        t0: float,
        reuse_prefix: bool,
    ) -> GenerationJob:
        """The reply's job, as `LocalBackend._prepare` builds it for generate."""
        q: queue.SimpleQueue[QueueItem] = queue.SimpleQueue()
        internal = threading.Event()
        return GenerationJob(
            {},
            q,
            IdStreamer(q),
            internal,
            ids,
            params.seed,
            None,
            max_new_tokens=params.max_new_tokens,
            t0=t0,
            reused=self.decoder.reusable_tokens(ids, reuse_prefix),
            fast=FastReply(params, StopFlags(cancel, internal), reuse_prefix),
            token_log=RawLog() if params.logprobs > 0 else None,
        )

    def run(self, job: GenerationJob) -> None:
        """Decode `job` (in its generation thread), pushing ids like generate's streamer.

        Like `generate`, the EOS id that ends a reply is pushed too (it decodes to nothing):
        the consumer reads the stop reason and the token count off the stream.
        """
        reply = job.fast
        assert reply is not None
        push = job.streamer.push
        dec = self.decoder
        log, k = job.token_log, reply.params.logprobs
        sampled = sampling_differs(reply.params)
        for token in dec.generate_ids(job.prompt_ids, reply.params, reply.stop, reply.reuse_prefix):
            if log is not None and dec.current_capture is not None:
                log.append(capture_from_values(dec.current_capture, k, sampled))
            push([token])
        eos = dec.last_stats.eos_token_id
        if eos is not None:
            if log is not None and dec.current_capture is not None:
                log.append(capture_from_values(dec.current_capture, k, sampled))
            push([eos])

    def close(self) -> None:
        self.decoder.close()

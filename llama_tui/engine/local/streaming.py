"""Streaming plumbing for the local backend: the token-id streamer, the cancel criteria, one
generation's job, and the consumer that turns its queue into text chunks and stats.

Everything here runs on the hot path of generation, so per-token work is kept to a queue put
and two tiny decodes of a sliding window of ids. torch is only touched through the objects that
`generate` hands us, so importing this module stays cheap (no torch import at module level).
"""

from __future__ import annotations

import hashlib
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from llama_tui.core.backend import Generation, GenerationStats, ReplayFacts, StopReason
from llama_tui.core.errors import GenerationError
from llama_tui.core.params import GenerationParams
from llama_tui.engine.local.decoding import IncrementalDecoder
from llama_tui.engine.local.logprobs import RawLog, TokenTexts

# How often the consumer re-checks that the generate thread is alive while the queue is idle.
POLL_S = 0.25


class Finished:
    """Queue sentinel: `generate` returned (normally, by cancel or stop)."""


class Failed:
    """Queue sentinel carrying the classified error raised inside `generate`."""

    __slots__ = ("error",)

    def __init__(self, error: GenerationError) -> None:
        self.error = error


FINISHED = Finished()
QueueItem = list[int] | Finished | Failed


class IdStreamer:
    """A `generate` streamer that pushes token ids onto a queue.

    Decoding happens in the consumer thread, so the generate thread only does a `.tolist()`, a
    clock read and a queue put per token. The first `put` is the whole prompt and is skipped.
    Timing is taken here, on the producer side, so a slow consumer does not skew decode speed.
    """

    # transformers only checks for `put` / `end`; subclassing BaseStreamer would import it eagerly.
    def __init__(self, q: queue.SimpleQueue[QueueItem]) -> None:
        self._q = q
        self._seen_prompt = False
        self.count = 0
        self.first_at: float | None = None
        self.last_at: float | None = None
        self.pushes = 0  # batches of ids: decode steps (assisted decoding accepts several)
        # Token logprob capture (engine.local.logprobs) records each id before it is queued.
        self.on_push: Callable[[list[int]], None] | None = None

    def put(self, value: Any) -> None:
        if not self._seen_prompt:
            self._seen_prompt = True
            return
        self.push(value.reshape(-1).tolist())

    def push(self, ids: list[int]) -> None:
        """Queue reply ids (generate's `put` after the prompt, or the fast decoder's loop)."""
        now = time.perf_counter()
        if self.first_at is None:
            self.first_at = now
        self.last_at = now
        self.count += len(ids)
        self.pushes += 1
        if self.on_push is not None:
            self.on_push(ids)
        self._q.put(ids)

    def end(self) -> None:
        # The wrapper around generate pushes FINISHED / Failed itself, after its bookkeeping,
        # so that a consumer never sees the end before the KV cache state is settled.
        pass


class StopFlags:
    """A `StoppingCriteria` that stops every row when either event is set.

    `cancel` is the caller's event (Esc in the UI); `internal` is ours (a stop string seen by the
    decoder, the consumer going away, the backend closing). The two result tensors are built once
    per generation and returned as-is: `StoppingCriteriaList` combines them out of place.
    """

    def __init__(self, cancel: threading.Event, internal: threading.Event) -> None:
        self._cancel = cancel
        self._internal = internal
        self._tensors: tuple[Any, Any] | None = None

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        if self._tensors is None or self._tensors[0].shape[0] != input_ids.shape[0]:
            import torch

            shape = (input_ids.shape[0],)
            self._tensors = (
                torch.zeros(shape, dtype=torch.bool, device=input_ids.device),
                torch.ones(shape, dtype=torch.bool, device=input_ids.device),
            )
        return self._tensors[1] if self.is_set() else self._tensors[0]

    def is_set(self) -> bool:
        """Either event set: what the fast decoder polls between tokens (its `StopFlag`)."""
        return self._cancel.is_set() or self._internal.is_set()


@dataclass(frozen=True)
class FastReply:
    """What the fast decoder needs for one reply (see `engine.fast.glue`)."""

    params: GenerationParams
    stop: StopFlags  # the user's cancel or ours (stop string, consumer gone, closing)
    reuse_prefix: bool


@dataclass
class GenerationJob:
    """One generation: what its generate thread needs and what its consumer reads."""

    kwargs: dict[str, Any]  # for model.generate; emptied when the thread ends
    queue: queue.SimpleQueue[QueueItem]
    streamer: IdStreamer
    internal_stop: threading.Event  # stop string seen, consumer gone, backend closing
    prompt_ids: list[int]
    seed: int | None
    cache: Any  # the KV cache passed to generate, or None
    max_new_tokens: int
    t0: float  # perf_counter when the request was accepted (TTFT and total time from here)
    dropped: int = 0
    reused: int = 0
    thread: threading.Thread | None = None
    # Set when the reply runs through the fast decoder instead of `generate` (kwargs empty).
    fast: FastReply | None = None
    done: threading.Event = field(default_factory=threading.Event)
    # Per-token logprobs, appended by the generating thread (None: capture off).
    token_log: RawLog | None = None
    generated: list[int] = field(default_factory=list)  # every id the consumer read
    assisted: str = ""  # "prompt lookup" / "draft model" when assisted (engine.local.assisted)


def consume(
    gen: Generation,
    job: GenerationJob,
    decode: Callable[[list[int]], str],
    stop: tuple[str, ...],
    cancel: threading.Event,
    eos_ids: frozenset[int],
    texts: TokenTexts | None = None,
) -> Iterator[str]:
    """The chunks of `job`, read in the caller's thread; sets `gen.stats` however it ends.

    Waits on the queue with a timeout only to notice a generate thread that died without a
    sentinel (the wrapper prevents that; this is the never-hang backstop). Tokens that arrived
    together are decoded together, so a consumer that fell behind catches up in one step.
    """
    decoder = IncrementalDecoder(decode, job.prompt_ids, stop)
    q = job.queue
    last_id: int | None = None
    error: GenerationError | None = None
    ended = False
    try:
        while True:
            try:
                item = q.get(timeout=POLL_S)
            except queue.Empty:
                if job.done.is_set() or (job.thread is not None and job.thread.is_alive()):
                    continue
                raise GenerationError("The generation thread ended without a result.") from None
            sentinel: QueueItem | None = None
            if isinstance(item, list):
                ids, sentinel = _drain(q, item)
                if ids:
                    last_id = ids[-1]
                    job.generated.extend(ids)
                    gen.tokens += len(ids)
                    if texts is not None:
                        texts.catch_up()
                    text = decoder.push(ids)
                    if decoder.stopped:
                        job.internal_stop.set()  # stop the device at the stop string
                    if text:
                        yield text
            else:
                sentinel = item
            if sentinel is None:
                continue
            ended = True
            if texts is not None:
                texts.catch_up()
            tail = decoder.flush()
            if tail:
                yield tail  # the partial reply reaches the caller before any error
            if isinstance(sentinel, Failed):
                error = sentinel.error
                raise error
            return
    except GenerationError as exc:
        error = exc
        raise
    finally:
        if not ended:
            job.internal_stop.set()  # the caller stopped iterating: stop the device too
        gen.stats = _stats(job, decoder, cancel, eos_ids, last_id, ended, error)


def _drain(
    q: queue.SimpleQueue[QueueItem], ids: list[int]
) -> tuple[list[int], Finished | Failed | None]:
    """`ids` with every id already queued behind them, and the end sentinel if one came."""
    while True:
        try:
            more = q.get_nowait()
        except queue.Empty:
            return ids, None
        if isinstance(more, list):
            ids.extend(more)
        else:
            return ids, more


def _stats(
    job: GenerationJob,
    decoder: IncrementalDecoder,
    cancel: threading.Event,
    eos_ids: frozenset[int],
    last_id: int | None,
    ended: bool,
    error: GenerationError | None,
) -> GenerationStats:
    streamer = job.streamer
    if error is not None:
        reason = StopReason.ERROR
    elif decoder.stopped:
        reason = StopReason.STOP_STRING
    elif last_id is not None and last_id in eos_ids:
        reason = StopReason.EOS
    elif cancel.is_set() or not ended:
        reason = StopReason.CANCELLED
    elif streamer.count >= job.max_new_tokens:
        reason = StopReason.LENGTH
    else:
        reason = StopReason.EOS  # a model-specific criterion (e.g. stop tokens in its config)
    first, last = streamer.first_at, streamer.last_at
    rate = None
    if first is not None and last is not None and streamer.count > 1 and last > first:
        # Producer-side clock: decode speed of the device, not of a slow consumer.
        rate = (streamer.count - 1) / (last - first)
    return GenerationStats(
        prompt_tokens=len(job.prompt_ids),
        generated_tokens=streamer.count,
        ttft_s=(first - job.t0) if first is not None else None,
        decode_tokens_per_s=rate,
        total_s=time.perf_counter() - job.t0,
        stop_reason=reason,
        dropped_messages=job.dropped,
        reused_prompt_tokens=job.reused,
        error=str(error) if error is not None else None,
        assisted=job.assisted,
        assisted_steps=streamer.pushes if job.assisted else 0,
        replay=ReplayFacts(
            seed=job.seed,
            decode_path="fast" if job.fast is not None else "generate",
            prompt_sha256=prompt_digest(job.prompt_ids),
            token_ids=tuple(job.generated),
        ),
    )


def prompt_digest(ids: list[int]) -> str:
    """sha256 of a prompt's token ids: two replies saw the same prompt exactly when equal."""
    return hashlib.sha256(",".join(map(str, ids)).encode("ascii")).hexdigest()

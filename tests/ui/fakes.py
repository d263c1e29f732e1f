"""A scripted fake backend for UI tests: exact control over loading and streaming.

`FakeBackend` implements the `Backend` protocol without torch. Replies come from a script
(a list of chunk lists) or echo the prompt. With `hold_after=N` a reply yields N chunks, sets
`held`, and blocks until `release()` or the cancel event: tests can act mid-stream with no
sleeps. Loading can be held the same way (`load_gate`) or made to fail (`load_error`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from llama_tui.core.backend import (
    ChatMessage,
    Generation,
    GenerationStats,
    LoadProgress,
    LoadStage,
    MemoryReading,
    ModelInfo,
    ProgressCallback,
    StopReason,
)
from llama_tui.core.errors import GenerationError, ModelError
from llama_tui.core.params import GenerationParams

FAKE_INFO = ModelInfo(
    name="Fake-Llama-1B",
    spec="fake",
    source="/models/fake",
    device="cpu",
    dtype="float32",
    context_length=2048,
)
FAKE_DEFAULTS = GenerationParams(temperature=0.6, top_p=0.9, top_k=50, max_new_tokens=256)


@dataclass
class FakeCall:
    history: tuple[ChatMessage, ...]
    params: GenerationParams


@dataclass
class FakeBackend:
    """Scripted backend. Thread-safe enough for one generation at a time."""

    replies: list[list[str]] = field(default_factory=list)
    hold_after: int | None = None
    load_error: Exception | None = None
    load_gate: threading.Event | None = None
    stream_error: Exception | None = None
    stop_reason: StopReason = StopReason.EOS
    info_template: ModelInfo = FAKE_INFO
    defaults: GenerationParams = FAKE_DEFAULTS
    # `ReportsOptimising`: a test flips it to see the status bar say "optimising".
    optimising: bool = False

    def __post_init__(self) -> None:
        self.info: ModelInfo | None = None
        self.calls: list[FakeCall] = []
        self.held = threading.Event()
        self._release = threading.Event()
        self.closed = False
        self.running = threading.Event()  # set while a stream is being consumed
        self.count_calls = 0

    # -- Backend protocol ------------------------------------------------------------------

    def load(self, progress: ProgressCallback | None = None) -> ModelInfo:
        if progress:
            progress(LoadProgress(LoadStage.RESOLVE, "resolving fake"))
            progress(LoadProgress(LoadStage.LOAD, "loading weights", 0.5))
        if self.load_gate is not None:
            self.load_gate.wait(10)
        if self.load_error is not None:
            raise self.load_error
        self.info = self.info_template
        return self.info

    def stream(
        self, history: Sequence[ChatMessage], params: GenerationParams, cancel: threading.Event
    ) -> Generation:
        self.calls.append(FakeCall(tuple(history), params))
        script = self.replies.pop(0) if self.replies else [f"echo: {history[-1].content}"]
        gen = Generation(iter(()))
        gen._chunks = self._run(gen, script, cancel)
        gen.prompt_tokens = sum(len(m.content.split()) for m in history)
        return gen

    def _run(
        self, gen: Generation, script: list[str], cancel: threading.Event
    ) -> Iterator[str]:
        self.running.set()
        start = time.monotonic()
        n = 0
        reason = self.stop_reason
        try:
            for i, chunk in enumerate(script):
                if self.hold_after is not None and i == self.hold_after:
                    self.held.set()
                    while not (cancel.is_set() or self._release.is_set()):
                        cancel.wait(0.005)
                if cancel.is_set():
                    reason = StopReason.CANCELLED
                    break
                n += 1
                gen.tokens = n  # one token per chunk (what a thought's count reads)
                yield chunk
            if self.stream_error is not None:
                gen.stats = GenerationStats(generated_tokens=n, stop_reason=StopReason.ERROR)
                raise self.stream_error
            gen.stats = GenerationStats(
                prompt_tokens=gen.prompt_tokens,
                generated_tokens=n,
                ttft_s=0.05,
                decode_tokens_per_s=42.0,
                total_s=time.monotonic() - start,
                stop_reason=reason,
            )
        finally:
            self.running.clear()

    def release(self) -> None:
        """Let a held reply continue."""
        self._release.set()

    def count_tokens(self, history: Sequence[ChatMessage]) -> int:
        self.count_calls += 1
        return sum(len(m.content.split()) for m in history)

    def default_params(self) -> GenerationParams:
        return self.defaults

    def memory(self) -> MemoryReading:
        return MemoryReading(used_bytes=512 * 1024 * 1024, label="RSS")

    def close(self) -> None:
        self.closed = True


class FakeFactory:
    """`backend_factory` for `create_app`: hands out prepared backends by model spec."""

    def __init__(self, **by_spec: FakeBackend) -> None:
        self.by_spec = by_spec
        self.made: list[str] = []

    def __call__(self, settings: object) -> FakeBackend:
        spec = str(getattr(settings, "model", ""))
        self.made.append(spec)
        if spec in self.by_spec:
            return self.by_spec[spec]
        if "*" in self.by_spec:
            return self.by_spec["*"]
        return FakeBackend(load_error=ModelError(
            f"Model {spec!r} is not in the local cache.",
            "Download it first, or pick another model.",
        ))


class FakeGenerationError(GenerationError):
    """A generation failure with a cause and fix, as the engine raises them."""

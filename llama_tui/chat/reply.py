"""One reply, start to outcome, shared by the TUI and headless mode (no UI here).

Public API (the TUI's chat and headless mode use only this):

- ``run = ReplyRun(state, continuing=False)`` starts a reply on the owner's thread: the
  settings in use are journaled if they changed, a history snapshot and the params are
  taken (``run.request``), and the assistant message is added (or, continuing, the last
  one reopened) and journaled as started. The user's prompt was added before, with
  `ChatState.add_user`.
- ``stream_reply(backend, run.request, sink)`` runs the generation (in a worker thread in
  the TUI) and tells `sink` (a `ReplySink`): ``started(dropped, prompt_tokens)`` before the
  first chunk, ``chunk(text)`` for every piece of the answer and ``thought(text, tokens,
  seconds)`` for every piece of thinking (split by `chat.thinking.ThoughtTracker`, the
  markers never passed on), then ``finished(stats, error)`` exactly once,
  where ``error`` is a `ReplyError` (sanitised cause, fix, kind) or None. A failure of the
  backend becomes ``error``; an exception raised by the sink itself propagates.
- Back on the owner's thread: ``run.add(text)`` per chunk and ``run.add_thinking(text)``
  per piece of thought (conversation + journal checkpoint), then ``run.finish(stats,
  error) -> ReplyOutcome``: complete / stopped / error, the stats and the cause written
  into the message and the journal.
  ``run.stop()`` (Esc) sets the cancel event and finalises at once as "stopped" with the
  partial text; a later ``run.finish(stats)`` only adds the engine's stats.
- ``run_reply(state, backend, prompt, on_chunk=...)`` does all of it on one thread
  (headless mode, tests). Ctrl+C or a sink failure (stdout closed) stops the reply, journals
  it as stopped, and re-raises for the caller to choose the exit code.
- `footer_for` / `message_footer` (in `llama_tui.chat.footer`) describe a finished reply;
  `BUSY` (in `llama_tui.chat.state`) is the one busy-guard wording.

Only the owner's thread touches the conversation; the worker gets the frozen request.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from llama_tui import locations
from llama_tui.chat.replay import replay_record
from llama_tui.chat.thinking import ThoughtTracker, resume_phase
from llama_tui.chat.tokens import TokenSlot, reply_tokens
from llama_tui.core.backend import (
    Backend,
    ChatMessage,
    Generation,
    GenerationStats,
    StopReason,
)
from llama_tui.core.errors import describe_error
from llama_tui.core.params import GenerationParams
from llama_tui.core.thinking import Piece, ThinkPhase
from llama_tui.text import clean, redact

if TYPE_CHECKING:
    from llama_tui.chat.state import ChatState
    from llama_tui.session.attachments import Attachment
    from llama_tui.session.transcript import Message

__all__ = [
    "ReplyError",
    "ReplyOutcome",
    "ReplyRequest",
    "ReplyRun",
    "ReplySink",
    "ReplyStatus",
    "describe_failure",
    "run_reply",
    "stream_reply",
]

log = logging.getLogger(__name__)

ReplyStatus = Literal["complete", "stopped", "error"]


@dataclass(frozen=True)
class ReplyError:
    """Why a reply failed, for the user: sanitised and redacted, never markup."""

    cause: str
    fix: str
    kind: str  # the exception's class name, e.g. "GenerationError"
    exception: BaseException | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class ReplyOutcome:
    """How a reply ended; `message` already says so (status, stats, error)."""

    status: ReplyStatus
    message: Message
    stats: GenerationStats | None
    error: ReplyError | None = None


@dataclass(frozen=True)
class ReplyRequest:
    """What the generation needs, frozen for the worker thread."""

    history: tuple[ChatMessage, ...]
    params: GenerationParams
    cancel: threading.Event
    # Where a continued reply picks up (inside its thought, or in its answer); None: a new
    # reply, which may open a thought.
    phase: ThinkPhase | None = None
    # The generation's per-token logprobs, left here by `stream_reply` (`chat.tokens`).
    tokens: TokenSlot = field(default_factory=TokenSlot, compare=False)


class ReplySink(Protocol):
    """Where `stream_reply` reports; called on the generating thread."""

    def started(self, dropped: int, prompt_tokens: int) -> None: ...

    def chunk(self, text: str) -> None: ...

    def thought(self, text: str, tokens: int, seconds: float | None) -> None:
        """A piece of thinking; `tokens` and `seconds`: the thought so far."""
        ...

    def finished(self, stats: GenerationStats | None, error: ReplyError | None) -> None: ...


def describe_failure(exc: BaseException) -> ReplyError:
    """The cause, fix and kind of a failed reply or load, for the screen or the journal:
    `core.errors.describe_error`, sanitised and redacted; the log file for the unexpected."""
    details = f"Details are in the log file {locations.log_file()}."
    cause, fix, kind = describe_error(exc, details)
    return ReplyError(redact(clean(cause)), redact(clean(fix)), kind, exc)


class ReplyRun:
    """One reply from start to outcome; every method runs on the owner's thread."""

    def __init__(self, state: ChatState, *, continuing: bool = False,
                 cancel: threading.Event | None = None) -> None:
        self.state = state
        state.sync_settings()
        conv = state.conversation
        last = conv.messages[-1] if conv.messages else None
        self.continuing = continuing and last is not None and last.role == "assistant"
        phase = resume_phase(last.thinking, last.content) if self.continuing and last else None
        # The snapshot comes first: a continued reply is part of it, a new one is not.
        self.request = ReplyRequest(conv.history(), state.params, cancel or threading.Event(),
                                    phase)
        # A continued reply's footer counts all of it: the tokens it had before this part.
        self.earlier_tokens = 0
        self.prefix_chars = 0  # the text it had before this part (exact replay)
        self.earlier: GenerationStats | None = None
        self.earlier_token_log: dict[str, Any] | None = None  # a continued reply's tokens
        if self.continuing and last is not None:
            earlier = self.earlier = GenerationStats.from_dict(last.stats)
            self.earlier_tokens = earlier.generated_tokens if earlier is not None else 0
            last.status = "streaming"
            self.message = last
            self.prefix_chars = len(last.content)
            self.earlier_token_log = last.tokens
        else:
            self.message = conv.add("assistant", "", status="streaming")
        self.outcome: ReplyOutcome | None = None
        state.reply_started(self.message)

    @property
    def cancel(self) -> threading.Event:
        return self.request.cancel

    @property
    def done(self) -> bool:
        return self.outcome is not None

    def add(self, text: str) -> None:
        """A chunk arrived: raw text into the message, a journal checkpoint when due.
        Ignored once the reply is finished (stopped: chunks still in flight)."""
        if self.outcome is not None:
            return
        self.message.content += text
        self.state.reply_progress(self.message)

    def add_thinking(self, text: str) -> None:
        """A piece of the reply's thought arrived (ignored once the reply is finished)."""
        if self.outcome is not None:
            return
        self.message.thinking += text
        self.state.reply_progress(self.message)

    def finish(self, stats: GenerationStats | None, error: ReplyError | None = None
               ) -> ReplyOutcome:
        """The generation ended: map it to complete / stopped / error and journal it.

        After `stop`, only the engine's late stats are kept (the outcome stays "stopped")."""
        if stats is not None and self.earlier_tokens:
            before = self.earlier
            stats = dataclasses.replace(
                stats, generated_tokens=self.earlier_tokens + stats.generated_tokens,
                earlier_tokens=self.earlier_tokens,
                thinking_tokens=stats.thinking_tokens + (before.thinking_tokens if before else 0),
                thinking_s=_sum(stats.thinking_s, before.thinking_s if before else None))
        if self.outcome is not None:
            if stats is not None and self.outcome.stats is None:
                self.outcome = ReplyOutcome(self.outcome.status, self.message, stats,
                                            self.outcome.error)
                self._record(stats)
            return self.outcome
        status: ReplyStatus
        if error is not None:
            status = "error"
        elif stats is not None and stats.stop_reason == StopReason.CANCELLED:
            status = "stopped"
        else:
            status = "complete"
        return self._conclude(status, stats, error)

    def stop(self) -> ReplyOutcome:
        """Esc / Ctrl+C: cancel the generation and end the reply now as "stopped", keeping
        the partial text. The engine stops within about one token step."""
        self.cancel.set()
        if self.outcome is not None:
            return self.outcome
        return self._conclude("stopped", None, None)

    def _conclude(self, status: ReplyStatus, stats: GenerationStats | None,
                  error: ReplyError | None) -> ReplyOutcome:
        msg = self.message
        msg.status = status
        msg.error = error.cause if error is not None else None
        self.outcome = ReplyOutcome(status, msg, stats, error)
        self._record(stats)
        return self.outcome

    def _record(self, stats: GenerationStats | None) -> None:
        if stats is not None:
            self.message.stats = stats.to_dict()
            self.message.replay = replay_record(stats, self.request.params, self.state.model,
                                                self.prefix_chars)
        self.message.tokens = reply_tokens(self.earlier_token_log, self.request.tokens.log,
                                           self.message, self.prefix_chars)
        self.state.reply_finished(self.message)


def stream_reply(backend: Backend, request: ReplyRequest, sink: ReplySink) -> None:
    """Generate one reply and report it to `sink` (see the module docstring).

    A backend failure (any `Exception`) is logged and reported as the reply's error; the
    sink's own exceptions, and BaseExceptions such as KeyboardInterrupt, propagate."""
    generation: Generation | None = None
    error: ReplyError | None = None
    info = backend.info
    tracker = ThoughtTracker(info.thinking if info is not None else None, request.phase)
    try:
        generation = backend.stream(request.history, request.params, request.cancel)
        chunks = iter(generation)
    except Exception as exc:
        error = _failed(exc)
    else:
        started = False
        while True:
            try:
                chunk = next(chunks)
            except StopIteration:
                break
            except Exception as exc:
                error = _failed(exc)
                break
            if not started:
                started = True
                sink.started(generation.dropped_messages, generation.prompt_tokens)
            _pass_on(tracker.feed(chunk, generation.tokens), tracker, sink)
        _pass_on(tracker.flush(generation.tokens), tracker, sink)
    stats = generation.stats if generation is not None else None
    request.tokens.log = generation.token_log if generation is not None else None
    sink.finished(tracker.stats(stats), error)


def _pass_on(pieces: list[Piece], tracker: ThoughtTracker, sink: ReplySink) -> None:
    for piece in pieces:
        if piece.thinking:
            sink.thought(piece.text, tracker.tokens, tracker.seconds)
        else:
            sink.chunk(piece.text)


def _sum(a: float | None, b: float | None) -> float | None:
    return None if a is None and b is None else (a or 0.0) + (b or 0.0)


def _failed(exc: Exception) -> ReplyError:
    log.exception("generation failed")
    return describe_failure(exc)


class _Direct:
    """A sink on the owner's thread: chunks go straight into the run, then `on_chunk`."""

    def __init__(self, run: ReplyRun, on_chunk: Callable[[str], None] | None,
                 on_started: Callable[[int, int], None] | None) -> None:
        self.run = run
        self.on_chunk = on_chunk
        self.on_started = on_started
        self.result: tuple[GenerationStats | None, ReplyError | None] = (None, None)

    def started(self, dropped: int, prompt_tokens: int) -> None:
        if self.on_started is not None:
            self.on_started(dropped, prompt_tokens)

    def chunk(self, text: str) -> None:
        self.run.add(text)  # journaled before it is shown: nothing printed is lost
        if self.on_chunk is not None:
            self.on_chunk(text)

    def thought(self, text: str, tokens: int, seconds: float | None) -> None:
        self.run.add_thinking(text)  # journaled; headless mode prints only the answer

    def finished(self, stats: GenerationStats | None, error: ReplyError | None) -> None:
        self.result = (stats, error)


def run_reply(
    state: ChatState,
    backend: Backend,
    prompt: str | None = None,
    *,
    on_chunk: Callable[[str], None] | None = None,
    on_started: Callable[[int, int], None] | None = None,
    cancel: threading.Event | None = None,
    continuing: bool = False,
    attachments: Sequence[Attachment] = (),
) -> ReplyOutcome:
    """Add `prompt` (if given, with its attached files) as the user's message, generate
    the reply on this thread, and return its outcome. Setting `cancel` stops it
    ("stopped", partial text kept).

    A KeyboardInterrupt, or an exception from `on_chunk` (a closed stdout), stops the
    reply, journals it as stopped and propagates."""
    if prompt is not None:
        state.add_user(prompt, attachments)  # fsynced before generating
    run = ReplyRun(state, continuing=continuing, cancel=cancel)
    sink = _Direct(run, on_chunk, on_started)
    try:
        stream_reply(backend, run.request, sink)
    except BaseException:
        run.stop()
        raise
    return run.finish(*sink.result)

"""One reply's thought: its text apart from the answer, its token count and its duration.

`ThoughtTracker` wraps the one splitter (`core.thinking.ThinkSplitter`, configured by the
backend's `ModelInfo.thinking`) for `chat.reply.stream_reply`: each chunk of the generation
becomes thinking and answer pieces, the thought's tokens are counted from the backend's
running count (`Generation.tokens`) and its time from the first thinking piece to the close
marker, and both go into the reply's `GenerationStats` (`thinking_tokens`, `thinking_s`).

A chunk that holds the close marker and answer text too is counted as one answer token;
when a slow reader gets several tokens in one chunk the split count is off by those few.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

from llama_tui.core.backend import GenerationStats
from llama_tui.core.thinking import Piece, ThinkFormat, ThinkPhase, ThinkSplitter

__all__ = ["ThoughtTracker", "resume_phase", "split_text"]


def resume_phase(thinking: str, content: str) -> ThinkPhase:
    """Where a continued reply picks up: inside its thought while it has no answer yet."""
    return "thinking" if thinking and not content else "answer"


def split_text(text: str, fmt: ThinkFormat | None) -> tuple[str, str]:
    """(thinking, answer) of a whole reply's raw text, by the same rule as a stream (a reply
    rebuilt from its tokens, such as the token inspector's fork, has its markers in it)."""
    if fmt is None:
        return "", text
    splitter = ThinkSplitter(fmt, "thinking" if fmt.opens_in_prompt else "start")
    pieces = splitter.feed(text) + splitter.flush()
    thinking = "".join(p.text for p in pieces if p.thinking)
    return thinking, "".join(p.text for p in pieces if not p.thinking)


class ThoughtTracker:
    """Splits one generation's chunks into thinking and answer and measures the thought."""

    def __init__(
        self,
        fmt: ThinkFormat | None,
        phase: ThinkPhase | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        start: ThinkPhase = phase or ("thinking" if fmt and fmt.opens_in_prompt else "start")
        self._splitter = ThinkSplitter(fmt, start) if fmt is not None else None
        self._clock = clock
        self.tokens = 0  # the thought's tokens so far
        self._counted = 0  # the generation's count at the last chunk
        self._began: float | None = None
        self._ended: float | None = None
        self.closed = False

    @property
    def seconds(self) -> float | None:
        """How long the thought has taken (so far); None before it starts."""
        if self._began is None:
            return None
        return (self._ended if self._ended is not None else self._clock()) - self._began

    def feed(self, chunk: str, tokens: int) -> list[Piece]:
        """The pieces of `chunk`; `tokens`: the generation's tokens including this chunk."""
        if self._splitter is None:
            return [Piece(chunk, False)] if chunk else []
        thinking_before = self._splitter.phase == "thinking"
        pieces = self._splitter.feed(chunk)
        self._account(pieces, tokens, thinking_before)
        return pieces

    def flush(self, tokens: int) -> list[Piece]:
        if self._splitter is None:
            return []
        thinking_before = self._splitter.phase == "thinking"
        pieces = self._splitter.flush()
        self._account(pieces, tokens, thinking_before)
        return pieces

    def _account(self, pieces: list[Piece], tokens: int, thinking_before: bool) -> None:
        assert self._splitter is not None
        if self.closed:
            self._counted = tokens
            return
        thinking_now = self._splitter.phase == "thinking"
        if (
            thinking_before or thinking_now or any(p.thinking for p in pieces)
        ) and self._began is None:
            self._began = self._clock()
        if thinking_now:
            self.tokens = tokens
        elif thinking_before or any(p.thinking for p in pieces):
            # The close marker was in this chunk: the thought ends here.
            answer_too = any(not p.thinking for p in pieces)
            self.tokens = max(self._counted, tokens - 1) if answer_too else tokens
            self._ended = self._clock()
            self.closed = True
        self._counted = tokens

    def stats(self, stats: GenerationStats | None) -> GenerationStats | None:
        """`stats` with the thought's tokens and time (unchanged when there was none)."""
        if stats is None or self._began is None:
            return stats
        return dataclasses.replace(
            stats,
            thinking_s=self.seconds,
            thinking_tokens=(
                min(self.tokens, stats.generated_tokens) if stats.generated_tokens else self.tokens
            ),
        )

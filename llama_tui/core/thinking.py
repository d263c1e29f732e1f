"""Thinking output: the markers a model writes its reasoning between, and the one splitter.

Reasoning models (DeepSeek-R1 distills, Qwen3, SmolLM3, ...) write their thinking before the
answer, between markers such as ``<think>`` and ``</think>``. A backend says which markers its
model uses (`ModelInfo.thinking`, a `ThinkFormat`): the local engine reads them from the chat
template and the tokenizer, the remote backend uses the common ``<think>`` pair and writes a
server's separate ``reasoning_content`` / ``reasoning`` stream fields between them. The chat
core (`llama_tui.chat.reply.stream_reply`) then runs every reply's text through one
`ThinkSplitter`, so thinking and answer reach the journal and the screen apart, the markers
never shown, whatever the backend.

The rule: a thought is only recognised at the very start of a reply (after whitespace), or
from the first character when the template's generation prompt opened it already
(`ThinkFormat.opens_in_prompt`, as DeepSeek-R1's does); it ends at the close marker. A marker
later in the answer is the answer's own text. All text is kept exactly (whitespace included)
except the markers themselves, so ``open + thinking + close + answer`` is what the model wrote.

Plain data, no I/O; imports nothing outside `core`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "THINKING_VIEWS",
    "Piece",
    "ThinkFormat",
    "ThinkPhase",
    "ThinkSplitter",
    "thought_summary",
]

ThinkPhase = Literal["start", "thinking", "answer"]
# How the app shows thoughts (the `thinking` setting, `/think`): folded to a one-line
# summary (the default), shown in full, or hidden.
THINKING_VIEWS: tuple[str, ...] = ("fold", "show", "hide")


@dataclass(frozen=True)
class ThinkFormat:
    """How one model marks its thinking."""

    open: str = "<think>"
    close: str = "</think>"
    # The chat template's generation prompt ends with the open marker: every reply starts
    # inside the thought (DeepSeek-R1's template does this).
    opens_in_prompt: bool = False

    def inline(self, thinking: str, answer: str, *, closed: bool = True) -> str:
        """The reply as the model wrote it: thinking between the markers, then the answer.
        `closed=False`: a thought cut off before its close marker (no answer yet)."""
        return self.open + thinking + (self.close + answer if closed else "")


@dataclass(frozen=True)
class Piece:
    """A run of reply text: thinking or answer."""

    text: str
    thinking: bool


class ThinkSplitter:
    """Splits a stream of reply text into thinking and answer pieces (see the module doc).

    `phase` is where the reply starts: "start" (a thought may open here), "thinking" (the
    generation prompt opened one, or a stopped thought is being continued) or "answer" (a
    continued answer: no thought can open). Text that may be the start of a marker is held
    back until the next chunk (or `flush`) says whether it is one.
    """

    def __init__(self, fmt: ThinkFormat, phase: ThinkPhase = "start") -> None:
        self.fmt = fmt
        self.phase: ThinkPhase = phase
        self._held = ""

    def feed(self, text: str) -> list[Piece]:
        """The pieces `text` completes, in order (maybe none: held back)."""
        out: list[Piece] = []
        buf = self._held + text
        self._held = ""
        while buf:
            if self.phase == "answer":
                out.append(Piece(buf, False))
                break
            if self.phase == "start":
                stripped = buf.lstrip()
                if stripped.startswith(self.fmt.open):
                    self.phase = "thinking"
                    buf = stripped[len(self.fmt.open) :]
                    continue
                if not stripped or self.fmt.open.startswith(stripped):
                    self._held = buf  # whitespace, or maybe the open marker: wait
                    break
                self.phase = "answer"
                continue
            # thinking
            at = buf.find(self.fmt.close)
            if at >= 0:
                if at:
                    out.append(Piece(buf[:at], True))
                self.phase = "answer"
                buf = buf[at + len(self.fmt.close) :]
                continue
            keep = _partial_suffix(buf, self.fmt.close)
            if len(buf) > keep:
                out.append(Piece(buf[: len(buf) - keep], True))
            self._held = buf[len(buf) - keep :]
            break
        return out

    def flush(self) -> list[Piece]:
        """The reply ended: whatever was held back is text after all."""
        held, self._held = self._held, ""
        if not held:
            return []
        return [Piece(held, self.phase == "thinking")]


def thought_summary(tokens: int | None, seconds: float | None, *, live: bool = False) -> str:
    """The one-line summary: "thought for 42 tokens, 3.1 s" (what is known of it)."""
    parts = []
    if tokens:
        parts.append(f"{tokens} token{'s' if tokens != 1 else ''}")
    if seconds is not None:
        parts.append(f"{seconds:.1f} s")
    figures = ", ".join(parts)
    if live:
        return "thinking…" + (f" {figures}" if figures else "")
    return "thought" + (f" for {figures}" if figures else "")


def _partial_suffix(text: str, marker: str) -> int:
    """The length of the longest end of `text` that is a proper start of `marker`."""
    for n in range(min(len(marker) - 1, len(text)), 0, -1):
        if marker.startswith(text[-n:]):
            return n
    return 0

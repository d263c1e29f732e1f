"""A reply's thinking, above its answer: folded to one dimmed line, expanded, or hidden.

`ThinkingBlock` sits in every `AssistantTurn` (hidden while the reply has no thought). Its
summary line says "thought for N tokens, T s" and, while the model is still thinking,
"thinking… N tokens, T s", counting up live (each piece, and a timer for the seconds). Below
it, the thought itself, cleaned like any model text and never parsed as markup.

How thoughts are shown is one choice for the whole transcript, a class on the chat screen
(`VIEWS`: fold, the default: the summary only; show: the summary and the thought; hide:
nothing), set by `llama_tui.ui.thinking_view` (the key, `/think`, remembering it). So
switching is one restyle, and a turn mounted later follows it with no bookkeeping.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, ClassVar

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.timer import Timer
from textual.widgets import Static

from llama_tui.core.backend import GenerationStats
from llama_tui.core.thinking import THINKING_VIEWS, thought_summary
from llama_tui.text import StreamCleaner, clean, show_bidi

if TYPE_CHECKING:
    from textual.dom import DOMNode

    from llama_tui.session.transcript import Message

__all__ = ["ThinkingBlock", "set_view"]

TICK_S = 0.5  # how often the live summary's seconds move on
FLUSH_S = 0.25  # the thought's text is re-rendered at most this often while it streams


def set_view(screen: DOMNode, view: str) -> None:
    """Show every thought on `screen` as `view` (one of `THINKING_VIEWS`)."""
    for v in THINKING_VIEWS:
        screen.set_class(v == view and v != "fold", f"-think-{v}")


class ThinkingBlock(Vertical):
    """The thought of one reply: a summary line and the text, styled by the screen's view."""

    # Not scoped: the rules follow a class on the chat screen, above this widget.
    SCOPED_CSS: ClassVar[bool] = False
    DEFAULT_CSS = """
    ThinkingBlock { height: auto; display: none; }
    ThinkingBlock.-thought { display: block; }
    ThinkingBlock .thinking-summary { color: $text-muted; text-style: dim; height: 1; }
    ThinkingBlock .thinking-text {
        display: none; color: $text-muted; text-style: dim; height: auto;
        border-left: outer $primary 40%; padding: 0 0 0 1;
    }
    .-think-show ThinkingBlock .thinking-text { display: block; }
    .-think-hide ThinkingBlock.-thought { display: none; }
    """

    def __init__(self) -> None:
        super().__init__(classes="thinking")
        self._text: list[str] = []
        self._cleaner = StreamCleaner()
        self._tokens = 0
        self._seconds: float | None = None
        self._began: float | None = None  # monotonic, while it streams
        self._live = False
        self._tick: Timer | None = None
        self._last_flush = 0.0
        self._dirty = False  # text arrived that is not on screen yet

    def compose(self) -> ComposeResult:
        yield Static("", markup=False, classes="thinking-summary")
        yield Static("", markup=False, classes="thinking-text")

    @property
    def summary(self) -> str:
        return thought_summary(self._tokens, self._seconds_now(), live=self._live)

    # -- while the reply streams ---------------------------------------------------------

    def write(self, raw: str, tokens: int, seconds: float | None) -> None:
        """A piece of the thought as it streams; `tokens` / `seconds`: the thought so far."""
        if not self._live:
            self._live = True
            self._began = time.monotonic() - (seconds or 0.0)
            self.add_class("-thought")
            self._tick = self.set_interval(TICK_S, self._on_tick)
        self._tokens = tokens
        self._text.append(self._cleaner.feed(raw))
        self._dirty = True
        # Batched like the answer's Markdown: a fast model sends a piece per token.
        if time.monotonic() - self._last_flush >= FLUSH_S:
            self._on_tick()

    def answer_started(self) -> None:
        """The answer began: the thought is over (its figures stop counting)."""
        if self._live:
            self._end_live()

    def finish(self, thinking: str, stats: GenerationStats | None) -> None:
        """The reply ended (complete, stopped or failed): the whole thought, its figures
        from the stats when the engine sent them (else what was counted live)."""
        if self._live:
            self._end_live()
        if stats is not None and stats.thinking_tokens:
            self._tokens = stats.thinking_tokens
            self._seconds = stats.thinking_s if stats.thinking_s is not None else self._seconds
        self._show_thought(thinking)

    def show_saved(self, msg: Message) -> None:
        """A reply shown again (a resumed or opened session)."""
        stats = GenerationStats.from_dict(msg.stats)
        self._tokens = stats.thinking_tokens if stats is not None else 0
        self._seconds = stats.thinking_s if stats is not None else None
        self._show_thought(msg.thinking)

    # -- rendering -----------------------------------------------------------------------

    def _show_thought(self, thinking: str) -> None:
        self._text = [clean(thinking)]
        self.set_class(bool(thinking.strip()), "-thought")
        self._show_summary()
        self._show_text()

    def _end_live(self) -> None:
        self._seconds = self._seconds_now()
        self._live = False
        if self._tick is not None:
            self._tick.stop()
            self._tick = None
        self._text.append(self._cleaner.flush())
        self._show_summary()
        self._show_text()

    def show_text(self) -> None:
        """The view changed: render the thought if it is shown now and has grown."""
        if self._dirty:
            self._show_text()

    def _on_tick(self) -> None:
        self._show_summary()
        # Only a thought on screen is re-rendered while it streams (a long one costs); the
        # view's switch renders it when it is shown (`show_text`).
        if self._dirty and self.screen.has_class("-think-show"):
            self._show_text()

    def _seconds_now(self) -> float | None:
        if self._live and self._began is not None:
            return time.monotonic() - self._began
        return self._seconds

    def on_mount(self) -> None:
        # A reply can end before this block's children exist: show what came meanwhile.
        self._show_summary()
        self._show_text()

    def _show_summary(self) -> None:
        self._last_flush = time.monotonic()
        for label in self.query(".thinking-summary").results(Static):
            label.update(self.summary)

    def _show_text(self) -> None:
        self._dirty = False
        # The model's own whitespace around its thought (`<think>\n...\n</think>`) is kept
        # in the message, not on screen.
        for body in self.query(".thinking-text").results(Static):
            body.update(show_bidi("".join(self._text).strip()))

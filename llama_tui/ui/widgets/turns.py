"""One turn of the transcript: a user prompt, a streamed reply with its footer, a notice.

Every string shown here is untrusted (model output, loaded sessions, error texts) and goes
through `llama_tui.text.clean` first; nothing is ever parsed as Textual markup: user text and
notices are `Static(..., markup=False)`, replies are `Markdown(open_links=False)` (links are
confirmed by the app, which shows the real URL). The container that holds them is
`transcript.py`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.content import Content
from textual.timer import Timer
from textual.widgets import Static

from llama_tui.session.attachments import Attachment
from llama_tui.text import StreamCleaner, clean, redact, show_bidi
from llama_tui.ui.widgets.attachments import with_chips
from llama_tui.ui.widgets.thinking import ThinkingBlock

if TYPE_CHECKING:
    # Imported when the first reply is shown: markdown_it adds ~60 ms to the first paint.
    from textual.widgets import Markdown
    from textual.widgets.markdown import MarkdownStream

FLUSH_S = 0.2  # at most ~5 Markdown appends per second per reply


class UserTurn(Static):
    """A prompt the user sent."""

    def __init__(self, text: str, message_id: str = "",
                 attachments: Sequence[Attachment] = ()) -> None:
        # Attached files show as chips above the text (`widgets/attachments.py`).
        super().__init__(with_chips(clean(text), attachments), markup=False,
                         classes="turn user")
        self.message_id = message_id
        self.border_title = "you"


class Notice(Static):
    """A note from the app (command output, errors, warnings); not part of the conversation."""

    def __init__(self, text: str, *, title: str = "", variant: str = "info") -> None:
        super().__init__(clean(text), markup=False, classes=f"notice -{variant}")
        if title:
            # A plain str border title is parsed as Textual markup (a model id such as
            # "x[/INST]" would crash the app): hand it over as literal Content.
            self.border_title = Content(redact(clean(title)))


class AssistantTurn(Vertical):
    """A reply: streamed Markdown and a footer line for its status and speed."""

    def __init__(self, text: str = "", message_id: str = "") -> None:
        super().__init__(classes="turn assistant")
        self.message_id = message_id
        self._initial = text
        self.border_title = "assistant"
        self._stream: MarkdownStream | None = None
        self._cleaner = StreamCleaner()
        # Text waiting to be appended: appends are batched (FLUSH_S) because each one
        # re-parses the last Markdown block and re-lays out the transcript, CPU that a
        # 2-core machine would otherwise take from the model.
        self._pending: list[str] = []
        self._last_flush = 0.0
        self._flush_timer: Timer | None = None

    def compose(self) -> ComposeResult:
        from textual.widgets import Markdown

        yield ThinkingBlock()  # the reply's thought, folded above it (`widgets/thinking.py`)
        yield Markdown(_display(self._initial), open_links=False)
        yield Static("", markup=False, classes="turn-footer")

    @property
    def thinking(self) -> ThinkingBlock:
        return self.query_one(ThinkingBlock)

    @property
    def markdown(self) -> Markdown:
        from textual.widgets import Markdown

        return self.query_one(Markdown)

    def start_stream(self) -> None:
        """Begin streaming; `MarkdownStream` batches fragments so the UI keeps up."""
        self._cleaner = StreamCleaner()
        md = self.markdown
        self._stream = type(md).get_stream(md)
        self.add_class("-streaming")

    async def write(self, raw_chunk: str) -> None:
        """Append a raw model chunk (cleaned here, statefully, so split sequences die too)."""
        text = self._cleaner.feed(raw_chunk)
        if not text or self._stream is None:
            return
        self._pending.append(text)
        wait = FLUSH_S - (time.monotonic() - self._last_flush)
        if wait <= 0:
            await self._flush()
        elif self._flush_timer is None:
            self._flush_timer = self.set_timer(wait, self._flush)

    async def _flush(self) -> None:
        self._flush_timer = None
        self._last_flush = time.monotonic()
        if self._pending and self._stream is not None:
            text = "".join(self._pending)
            self._pending.clear()
            await self._stream.write(text)

    async def finish(self, full_text: str, footer: str, variant: str) -> None:
        """Stop streaming and render the whole reply once, cleanly (one full update)."""
        if self._flush_timer is not None:
            self._flush_timer.stop()
            self._flush_timer = None
        self._pending.clear()  # the full update below shows everything
        if self._stream is not None:
            await self._stream.stop()
            self._stream = None
        self._cleaner.flush()
        self.remove_class("-streaming")
        await self.markdown.update(_display(full_text))
        self.set_footer(footer, variant)

    def set_footer(self, footer: str, variant: str = "") -> None:
        label = self.query_one(".turn-footer", Static)
        label.update(clean(footer))
        label.display = bool(footer)
        for v in ("-stopped", "-error", "-length", "-ok"):
            label.remove_class(v)
        if variant:
            label.add_class(f"-{variant}")


def _display(text: str) -> str:
    # Bidi overrides can make code read differently from what it is ("Trojan Source").
    return show_bidi(clean(text))

"""The scrolling transcript: the container of the conversation's turns (`turns.py`).

Auto-scroll: the container is anchored (`VerticalScroll.anchor`), so it follows new text
until the user scrolls up, and resumes once they scroll back to the bottom.

Saved messages are shown lazily (`show_messages`: a resumed session, a branch's path).
Mounting a turn costs ~9 ms (Markdown parsing and layout), so a 2,000-message session took
~18 s to show its last message. Only a window of the messages is mounted: at first the
last couple of screenfuls; scrolling near the top mounts the next older batch above (the
view stays on the same text), and after Ctrl+Home (`jump_home`) the first ones, with later
batches mounted as the user scrolls down. A one-line gap says how many messages are not
mounted yet on either side. Turns added during the session (`add_user`, `add_assistant`,
notices) always go at the bottom, after the window; adding one first brings the window
back to the end. Copy, F3 and retry read the conversation itself, never these widgets.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from textual import message
from textual.containers import VerticalScroll
from textual.geometry import Size
from textual.widget import Widget
from textual.widgets import Static

from llama_tui.chat.footer import message_footer
from llama_tui.session.attachments import Attachment
from llama_tui.ui.widgets.turns import AssistantTurn, Notice, UserTurn

if TYPE_CHECKING:
    from textual.layout import DockArrangeResult

    from llama_tui.session.transcript import Message

__all__ = ["WELCOME", "AssistantTurn", "Notice", "Transcript", "UserTurn"]

WELCOME = (
    "Type a message and press Enter to send.\n"
    "Ctrl+J or Alt+Enter: new line · F2: settings · F1: help · /help: commands"
)

SCREENS_MOUNTED = 2  # a batch fills about this many screens (estimated before layout)
# ... but the first one only one screen: the first frame waits for it. The next batch
# comes right after that frame (the view is near the top of what is mounted).
FIRST_SCREENS = 1
MIN_BATCH = 4  # messages: even long ones come a few at a time
TURN_CHROME = 3  # lines a turn adds to its text: border top and bottom, margin


class Gap(Static):
    """Where messages not mounted yet sit: "N earlier messages ..."."""

    DEFAULT_CSS = """
    Gap {
        color: $text-muted;
        text-align: center;
        width: 100%;
        margin: 0 0 1 0;
    }
    """


class Transcript(VerticalScroll):
    """The conversation view; anchored so new text scrolls into view."""

    class TurnsMounted(message.Message):
        """Turns of saved messages were mounted (what decorates turns can do it now)."""

    def __init__(self, *children: Widget, **kwargs: Any) -> None:
        super().__init__(*children, **kwargs)
        self._messages: list[Message] = []  # the shown messages (user and assistant)
        self._lo = self._hi = 0  # _messages[_lo:_hi] are mounted, in order
        self._older: Gap | None = None  # above the window
        self._newer: Gap | None = None  # below it (only after a jump home)
        self._lock = asyncio.Lock()  # one change of the window at a time
        self._extending = False
        self._keep: tuple[Widget, int, float] | None = None  # see `arrange`

    def on_mount(self) -> None:
        # After the first frame: anchoring at mount holds the welcome text back to a second
        # frame (~50 ms later on 2 busy cores, while the model load starts).
        self.call_after_refresh(self.anchor)

    def show_welcome(self, show: bool) -> None:
        for w in self.query(".welcome"):
            w.display = show

    def welcome(self) -> Static:
        return Static(WELCOME, markup=False, classes="welcome")

    # -- saved messages ---------------------------------------------------------------------

    async def show_messages(self, messages: Sequence[Message]) -> None:
        """Show exactly `messages` (in order): the turns and notices shown before go.

        For a resumed session and for a branch switch. Returns once the last screenful is
        mounted; older messages are mounted when the user scrolls up to them."""
        async with self._lock:
            self._keep = None
            await self.query(".turn, .notice, Gap").remove()
            self._messages = [m for m in messages if m.role in ("user", "assistant")]
            n = len(self._messages)
            self._older, self._newer = Gap(markup=False), Gap(markup=False)
            await self.mount_all([self._older, self._newer])
            self._lo = self._hi = n
            await self._mount_range(self._fill(n, backwards=True, screens=FIRST_SCREENS), n)
            self._show_gaps()
            self._follow()
        self.call_after_refresh(self._maybe_extend)

    async def jump_home(self) -> None:
        """Ctrl+Home: the first messages, mounted if they are not."""
        async with self._lock:
            if self._lo > 0:
                await self._remount(0, self._fill(0, backwards=False))
        self.scroll_home(animate=False, immediate=True)

    async def jump_end(self) -> None:
        """Ctrl+End: the last messages (mounted if they are not), following new text."""
        await self._ensure_end()
        self._follow()

    async def reveal(self, message_id: str) -> Widget | None:
        """Mount the turn of `message_id` if it is not (and the ones around it), scroll it to
        the top of the view; None if no turn shows that message."""
        async with self._lock:
            index = self._index(message_id)
            if index is not None and not self._lo <= index < self._hi:
                start = max(0, index - 1)
                await self._remount(start, max(index + 1, self._fill(start, backwards=False)))
        turn = self._turn(message_id)
        if turn is not None:
            self.release_anchor()  # or new text would pull the view back to the bottom
            # After the turns just mounted are laid out: their heights decide where it is.
            self.call_after_refresh(
                self.scroll_to_widget, turn, top=True, animate=False, immediate=True
            )
        return turn

    @property
    def unmounted(self) -> int:
        """How many of the shown messages have no widget yet."""
        return len(self._messages) - (self._hi - self._lo)

    # -- turns added during the session --------------------------------------------------

    async def add_user(
        self, text: str, message_id: str = "", attachments: Sequence[Attachment] = ()
    ) -> UserTurn:
        await self._ensure_end()
        turn = UserTurn(text, message_id, attachments)
        await self.mount(turn)
        self._follow()
        return turn

    async def add_assistant(self, text: str = "", message_id: str = "") -> AssistantTurn:
        await self._ensure_end()
        # A shown message is never shown twice (continuing a reply that was not mounted).
        found = self.find_assistant(message_id) if message_id else None
        if found is not None:
            self._follow()
            return found
        turn = AssistantTurn(text, message_id)
        await self.mount(turn)
        self._follow()
        return turn

    async def add_message(self, m: Message) -> UserTurn | AssistantTurn:
        """A saved message (as `show_messages` shows them), at the end."""
        await self._ensure_end()
        turn = _turn_for(m)
        await self.mount(turn)
        _restore(turn, m)
        self._follow()
        return turn

    async def add_notice(self, text: str, *, title: str = "", variant: str = "info") -> Notice:
        await self._ensure_end()
        notice = Notice(text, title=title, variant=variant)
        await self.mount(notice)
        self._follow()
        return notice

    def find_assistant(self, message_id: str) -> AssistantTurn | None:
        turn = self._turn(message_id)
        return turn if isinstance(turn, AssistantTurn) else None

    async def remove_message(self, message_id: str) -> None:
        async with self._lock:
            index = self._index(message_id)
            if index is not None:
                del self._messages[index]
                if index < self._lo:
                    self._lo -= 1
                if index < self._hi:
                    self._hi -= 1
                self._show_gaps()
            for turn in list(self.query(".turn")):
                if getattr(turn, "message_id", None) == message_id:
                    await turn.remove()

    async def clear_all(self) -> None:
        async with self._lock:
            self._keep = None
            await self.query(".turn, .notice, Gap").remove()
            self._messages, self._lo, self._hi = [], 0, 0
            self._older = self._newer = None

    def _follow(self) -> None:
        # A new turn is the user's own action: jump to it even if they had scrolled up.
        self.anchor()

    # -- the window ------------------------------------------------------------------------

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        self._maybe_extend()

    def _maybe_extend(self) -> None:
        """Near the top (or the bottom) of the window with messages beyond it: mount more."""
        if self._extending or not self.is_mounted:
            return
        near = max(self.size.height, 1)
        if self._lo > 0 and self.scroll_y <= near:
            self._extending = True
            self.call_later(self._extend, True)
        elif self._hi < len(self._messages) and self.scroll_y >= self.max_scroll_y - near:
            self._extending = True
            self.call_later(self._extend, False)

    async def _extend(self, older: bool) -> None:
        try:
            async with self._lock:
                if older and self._lo > 0:
                    await self._mount_older()
                elif not older and self._hi < len(self._messages):
                    await self._mount_range(self._hi, self._fill(self._hi, backwards=False))
        finally:
            self._extending = False
        # Still near that edge (a short batch, or the user kept scrolling): more.
        self.call_after_refresh(self._maybe_extend)

    async def _mount_older(self) -> None:
        """The batch above the window, keeping the text in view where it is."""
        first = self._turn(self._messages[self._lo].id)
        if first is None:  # not laid out as expected: mount without keeping the place
            await self._mount_range(self._fill(self._lo, backwards=True), self._lo)
            return
        if not (self._anchored and not self._anchor_released):  # else the end is shown
            self._keep = (first, first.virtual_region.y, self.scroll_y)
        await self._mount_range(self._fill(self._lo, backwards=True), self._lo)

    def arrange(self, size: Size, optimal: bool = False) -> DockArrangeResult:
        """Textual's layout, then (after a batch was mounted above) the scroll offset moved
        by what was added, in the same pass: the text in view stays put, with no frame
        drawn in between. The same place where Textual applies its own anchor."""
        result = super().arrange(size, optimal)
        if self._keep is not None:
            widget, top, scroll_y = self._keep
            for placement in result.placements:
                if placement.widget is widget:
                    self._keep = None
                    y = scroll_y + placement.region.y - top
                    self.set_reactive(Widget.scroll_y, y)
                    self.set_reactive(Widget.scroll_target_y, y)
                    self.vertical_scrollbar.position = y
                    break
        return result

    async def _mount_range(self, start: int, end: int) -> None:
        """Mount _messages[start:end], next to the window (above it or below it)."""
        if start >= end:
            return
        messages = self._messages[start:end]
        pairs = [(_turn_for(m), m) for m in messages]
        widgets = [w for w, _ in pairs]
        if end == self._lo and self._older is not None:  # above the window
            await self.mount_all(widgets, after=self._older)
            self._lo = start
        else:  # below it (or the first batch)
            await self.mount_all(widgets, before=self._newer)
            if self._lo == self._hi:
                self._lo = start
            self._hi = end
        for widget, m in pairs:
            _restore(widget, m)
        self._show_gaps()
        self.post_message(self.TurnsMounted())

    async def _remount(self, start: int, end: int) -> None:
        """Replace the window with _messages[start:end]."""
        ids = {m.id for m in self._messages[self._lo : self._hi]}
        self._keep = None
        await self.remove_children(
            [w for w in self.query(".turn") if getattr(w, "message_id", None) in ids]
        )
        self._lo = self._hi = start
        await self._mount_range(start, end)

    async def _ensure_end(self) -> None:
        if self._hi < len(self._messages):
            async with self._lock:
                n = len(self._messages)
                if self._hi < n:
                    await self._remount(self._fill(n, backwards=True), n)

    def _fill(self, edge: int, *, backwards: bool, screens: int = SCREENS_MOUNTED) -> int:
        """The other end of a batch from `edge` that fills about `screens` screens."""
        size = self.size if self.size.area else self.app.size
        width = max(size.width - 8, 20)  # padding, borders and the scrollbar
        want = screens * max(size.height, 10)
        lines, i, count = 0, edge, 0
        n = len(self._messages)
        while (i > 0 if backwards else i < n) and (lines < want or count < MIN_BATCH):
            i += -1 if backwards else 1
            lines += _estimate_lines(self._messages[i if backwards else i - 1].content, width)
            count += 1
        return i

    def _show_gaps(self) -> None:
        older, newer = self._lo, len(self._messages) - self._hi
        if self._older is not None:
            self._older.update(
                f"{older:,} earlier message{'s' * (older != 1)}: scroll up "
                "to show them (Ctrl+Home: the first)"
            )
            self._older.display = older > 0
        if self._newer is not None:
            self._newer.update(
                f"{newer:,} later message{'s' * (newer != 1)}: scroll down "
                "to show them (Ctrl+End: the last)"
            )
            self._newer.display = newer > 0

    def _index(self, message_id: str) -> int | None:
        for i, m in enumerate(self._messages):
            if m.id == message_id:
                return i
        return None

    def _turn(self, message_id: str) -> Widget | None:
        for turn in self.query(".turn"):
            if getattr(turn, "message_id", None) == message_id:
                return turn
        return None


def _turn_for(m: Message) -> UserTurn | AssistantTurn:
    """The widget of a saved message (all its text goes through the sanitiser there)."""
    if m.role == "user":
        return UserTurn(m.content, m.id, m.attachments)
    return AssistantTurn(m.content, m.id)


def _restore(turn: Widget, m: Message) -> None:
    """What a saved reply shows besides its text, once its turn is mounted."""
    # Imported with the first reply shown (it brings the token logs), not before the first
    # paint.
    from llama_tui.ui import token_underline

    if isinstance(turn, AssistantTurn):
        turn.thinking.show_saved(m)
        footer, variant = message_footer(m)
        if footer:
            turn.set_footer(footer, variant)
        token_underline.show(turn, m)  # `/inspect underline N`


def _estimate_lines(text: str, width: int) -> int:
    """Lines a message takes before layout: its text wrapped at `width`, plus the border."""
    return TURN_CHROME + sum(
        max(1, math.ceil(len(line) / width)) for line in text.splitlines() or [""]
    )

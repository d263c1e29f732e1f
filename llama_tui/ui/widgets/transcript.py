"""The scrolling transcript: the container of the conversation's turns (`turns.py`).

Auto-scroll: the container is anchored (`VerticalScroll.anchor`), so it follows new text
until the user scrolls up, and resumes once they scroll back to the bottom.
"""

from __future__ import annotations

from collections.abc import Sequence

from textual.containers import VerticalScroll
from textual.widgets import Static

from llama_tui.session.attachments import Attachment
from llama_tui.ui.widgets.turns import AssistantTurn, Notice, UserTurn

__all__ = ["WELCOME", "AssistantTurn", "Notice", "Transcript", "UserTurn"]

WELCOME = (
    "Type a message and press Enter to send.\n"
    "Ctrl+J or Alt+Enter: new line · F2: settings · F1: help · /help: commands"
)


class Transcript(VerticalScroll):
    """The conversation view; anchored so new text scrolls into view."""

    def on_mount(self) -> None:
        self.anchor()

    def show_welcome(self, show: bool) -> None:
        for w in self.query(".welcome"):
            w.display = show

    def welcome(self) -> Static:
        return Static(WELCOME, markup=False, classes="welcome")

    async def add_user(self, text: str, message_id: str = "",
                       attachments: Sequence[Attachment] = ()) -> UserTurn:
        turn = UserTurn(text, message_id, attachments)
        await self.mount(turn)
        self._follow()
        return turn

    async def add_assistant(self, text: str = "", message_id: str = "") -> AssistantTurn:
        turn = AssistantTurn(text, message_id)
        await self.mount(turn)
        self._follow()
        return turn

    async def add_notice(self, text: str, *, title: str = "", variant: str = "info") -> Notice:
        notice = Notice(text, title=title, variant=variant)
        await self.mount(notice)
        self._follow()
        return notice

    def find_assistant(self, message_id: str) -> AssistantTurn | None:
        for turn in self.query(AssistantTurn):
            if turn.message_id == message_id:
                return turn
        return None

    async def remove_message(self, message_id: str) -> None:
        for turn in list(self.query(".turn")):
            if getattr(turn, "message_id", None) == message_id:
                await turn.remove()

    async def clear_all(self) -> None:
        await self.query(".turn, .notice").remove()

    def _follow(self) -> None:
        # A new turn is the user's own action: jump to it even if they had scrolled up.
        self.anchor()

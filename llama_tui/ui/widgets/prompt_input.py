"""The multi-line prompt input: Enter sends, Ctrl+J / Alt+Enter insert a newline.

A `TextArea` inserts a newline on Enter; we turn Enter into "send" and keep newlines on the
keys terminals can actually tell apart (Shift+Enter usually arrives as plain Enter; Alt+Enter
arrives as ESC CR, which `llama_tui.ui.terminal_input` names `alt+enter`). PgUp / PgDn are
left to the app, which scrolls the transcript with them.
Up / Down on the first / last line walk through earlier prompts, like a shell. Ctrl+E opens
`$EDITOR` on the current text (the app suspends itself while the editor runs).
Bracketed paste is sanitised (`clean`) and then inserted like TextArea does, newlines kept.
Editing keys (Backspace, arrows, ...) apply in the order they arrive, pastes included
(`KeyOrder`, for Textualize/textual#6605).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from textual import events
from textual.actions import SkipAction
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import TextArea

from llama_tui.text import clean, clean_paste
from llama_tui.ui.widgets.ordered_input import KeyOrder

NEWLINE_KEYS = frozenset({"ctrl+j", "alt+enter", "shift+enter"})


class PromptInput(KeyOrder, TextArea):
    """Where the user types. Posts `PromptInput.Submitted` on Enter."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "ctrl+e", "external_editor", "Editor", show=False, tooltip="Edit in $EDITOR"
        ),
        Binding("ctrl+j", "newline", "New line", show=False),
        Binding("pageup,pagedown", "pass_key", show=False),
    ]

    @dataclass
    class Submitted(Message):
        """The user pressed Enter; `text` is what they typed (may be a /command)."""

        input: PromptInput
        text: str

        @property
        def control(self) -> PromptInput:
            return self.input

    @dataclass
    class EditorRequested(Message):
        """Ctrl+E: the app runs $EDITOR (it must suspend itself, a widget cannot)."""

        input: PromptInput

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(
            "",
            id=id,
            soft_wrap=True,
            show_line_numbers=False,
            tab_behavior="focus",
            compact=True,
            placeholder="Message (Enter to send, Ctrl+J for a new line, /help)",
        )
        self.prompt_history: list[str] = []
        self._history_pos: int | None = None  # index into history while recalling
        self._draft = ""  # what was typed before recalling started

    async def _on_key(self, event: events.Key) -> None:
        if event.key == "enter":
            event.stop()
            event.prevent_default()
            self._submit()
            return
        if event.key in NEWLINE_KEYS:
            event.stop()
            event.prevent_default()
            self.action_newline()
            return
        if event.key == "up" and self.cursor_location[0] == 0 and self._recall(-1):
            event.stop()
            event.prevent_default()
            return
        if (
            event.key == "down"
            and self.cursor_location[0] == self.document.line_count - 1
            and self._recall(+1)
        ):
            event.stop()
            event.prevent_default()
            return
        await super()._on_key(event)

    async def _on_paste(self, event: events.Paste) -> None:
        """Insert a bracketed paste, sanitised.

        Text copied from a web page or a log can carry escape sequences and C1 controls;
        TextArea would draw them to the terminal as they are. Terminals and tmux send a
        paste's line ends as CR, which `clean_paste` keeps as new lines. `prevent_default`
        keeps TextArea's own handler from inserting the raw text as well.
        """
        event.prevent_default()
        event.stop()
        if self.read_only:
            return
        if result := self._replace_via_keyboard(clean_paste(event.text), *self.selection):
            self.move_cursor(result.end_location)
            self.focus()

    def action_newline(self) -> None:
        """Insert a newline at the cursor."""
        self.insert("\n")

    def action_pass_key(self) -> None:
        """PgUp / PgDn scroll the transcript (an app binding), not this input's cursor."""
        raise SkipAction()

    def action_external_editor(self) -> None:
        """Ask the app to open $EDITOR on the current text."""
        self.post_message(self.EditorRequested(self))

    def _submit(self) -> None:
        text = self.text
        if not text.strip():
            return
        # Clear now, not when the app handles the message: keys typed in between (a fast
        # typist, tmux send-keys) must land in the fresh input, not be wiped with the old.
        self.remember(text)
        self.clear()
        self.post_message(self.Submitted(self, text))

    def give_back(self, text: str) -> None:
        """The app refused `text` (busy, no model): put it back unless something new is typed."""
        if not self.text.strip():
            self.set_text(text)

    def remember(self, text: str) -> None:
        """Add a sent prompt to the recall history (no immediate duplicates)."""
        if not self.prompt_history or self.prompt_history[-1] != text:
            self.prompt_history.append(text)
        self._history_pos = None

    def set_text(self, text: str) -> None:
        """Replace the text and put the cursor at the end."""
        self.load_text(clean(text))
        self.move_cursor(self.document.end)

    def _recall(self, step: int) -> bool:
        """Move through prompt history; False when there is nowhere to go (normal cursor)."""
        if not self.prompt_history:
            return False
        if self._history_pos is None:
            if step > 0:
                return False
            self._draft = self.text
            pos = len(self.prompt_history) - 1
        else:
            pos = self._history_pos + step
        if pos < 0:
            return True  # at the oldest prompt: swallow the key, stay put
        if pos >= len(self.prompt_history):
            self._history_pos = None
            self.set_text(self._draft)
            return True
        self._history_pos = pos
        self.set_text(self.prompt_history[pos])
        return True

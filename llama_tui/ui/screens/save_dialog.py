"""Ctrl+S: where to save the conversation, prefilled with a full path the user can edit.

The prefill is `<save dir>/<date>-<title slug>.md`; `.json` instead saves JSON. Enter saves
(an existing file is confirmed by the caller), Esc cancels. The path is shown as plain
text: it holds the conversation's title, which came from untrusted input.
"""

from __future__ import annotations

from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Static

from llama_tui.text import clean
from llama_tui.ui.screens import DIALOG_CSS
from llama_tui.ui.widgets.ordered_input import OrderedInput


class SaveDialog(ModalScreen[str | None]):
    """Dismisses with the path typed (stripped; never empty), or None when cancelled."""

    CSS_PATH = DIALOG_CSS
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, default_path: str, folder: str) -> None:
        super().__init__(classes="dialog-screen")
        self.default_path = clean(default_path)
        self.folder = clean(folder)

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog picker") as box:
            box.border_title = "Save the conversation"
            box.styles.width = 100  # paths are long; max-width still keeps it on screen
            yield Static(f"Default folder: {self.folder}\nA relative path is taken inside it; "
                         ".md saves Markdown, .json JSON. Enter: save · Esc: cancel",
                         markup=False, classes="dialog-text")
            yield OrderedInput(self.default_path, id="save-path", select_on_focus=False)

    def on_mount(self) -> None:
        field = self.query_one("#save-path", Input)
        field.focus()
        self.call_after_refresh(self._show_end)

    def _show_end(self) -> None:
        # The file name is what one edits: scroll a long path to its end. The Input keeps
        # the start in view until the cursor moves, so move it there and back.
        field = self.query_one("#save-path", Input)
        field.cursor_position = 0
        field.cursor_position = len(field.value)

    @on(Input.Submitted, "#save-path")
    def _submitted(self, event: Input.Submitted) -> None:
        path = event.value.strip()
        if path:
            self.dismiss(path)
        else:
            self.notify("Type a file name, or press Esc to cancel.", severity="warning",
                        markup=False)

"""A yes/no dialog (quit, overwrite a file, open a link).

The question often holds untrusted text (a file path, a URL from model output), so it is
cleaned and shown with `markup=False`. Keyboard: y / Enter on "Yes", n / Esc for no.
"""

from __future__ import annotations

from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static

from llama_tui.text import clean
from llama_tui.ui.screens import DIALOG_CSS


class ConfirmScreen(ModalScreen[bool]):
    """Ask a question; dismisses with True (yes) or False."""

    CSS_PATH = DIALOG_CSS
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str, *, yes: str = "Yes", no: str = "No", kind: str = "") -> None:
        super().__init__(classes=f"dialog-screen {kind}".strip())
        self.question = question
        self.yes, self.no = yes, no
        self.kind = kind

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(clean(self.question), markup=False, classes="dialog-text")
            with Horizontal(classes="dialog-buttons"):
                yield Button(self.yes, id="yes", variant="primary", compact=True)
                yield Button(self.no, id="no", compact=True)

    def on_mount(self) -> None:
        self.query_one("#no" if self.kind == "-link" else "#yes", Button).focus()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, answer: bool) -> None:
        """Dismiss with the given answer."""
        self.dismiss(answer)

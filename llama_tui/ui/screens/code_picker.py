"""Choose a code block of the last reply to copy (OSC 52) or write to a file."""

from __future__ import annotations

from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from llama_tui.ui.code_blocks import CodeBlock
from llama_tui.ui.screens import DIALOG_CSS


class CodePickerScreen(ModalScreen[tuple[int, str] | None]):
    """Dismisses with (index, "copy" | "file"), or None."""

    CSS_PATH = DIALOG_CSS
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss(None)", "Cancel"),
        Binding("f", "to_file", "Write to file"),
    ]

    def __init__(self, blocks: list[CodeBlock]) -> None:
        super().__init__(classes="dialog-screen")
        self.blocks = blocks

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog picker") as box:
            box.border_title = "Copy a code block"
            yield Static("Enter: copy to clipboard · f: write to a file · Esc: cancel",
                         markup=False)
            # Titles come from model output: Option with plain Content-safe text.
            yield OptionList(
                *(Option(f"{i + 1}. {b.title}", id=str(i)) for i, b in enumerate(self.blocks)),
                id="blocks",
                markup=False,
            )

    def on_mount(self) -> None:
        self.query_one("#blocks", OptionList).focus()

    @on(OptionList.OptionSelected, "#blocks")
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        self.dismiss((int(event.option.id or 0), "copy"))

    def action_to_file(self) -> None:
        """Write the highlighted block to a file instead."""
        index = self.query_one("#blocks", OptionList).highlighted
        if index is not None:
            self.dismiss((index, "file"))

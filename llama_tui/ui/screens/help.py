"""The help screen: every key binding and slash command, in one table."""

from __future__ import annotations

from typing import ClassVar

from rich.console import Group
from rich.padding import Padding
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from llama_tui.ui.commands import help_lines
from llama_tui.ui.screens import DIALOG_CSS

KEYS: tuple[tuple[str, str], ...] = (
    ("Enter", "send the message"),
    ("Ctrl+J / Alt+Enter", "new line in the message"),
    ("Up / Down", "earlier prompts (on the first / last line)"),
    ("Ctrl+E", "edit the message in $EDITOR"),
    ("Esc", "stop the reply (keeps the partial text); close the panel"),
    ("Ctrl+C", "stop the reply; when idle, ask to quit"),
    ("Ctrl+Q", "quit (asks while a reply is generated)"),
    ("Ctrl+R", "retry the last reply"),
    ("Ctrl+G", "continue a stopped or cut-off reply"),
    ("Ctrl+T", "edit the last prompt (asks first: removes the last exchange)"),
    ("Ctrl+Y", "copy the last reply (OSC 52, tmux/screen aware)"),
    ("F3", "copy a code block, or write it to a file"),
    ("Ctrl+S", "save the conversation as Markdown"),
    ("F2 / Ctrl+O", "settings panel"),
    ("F4", "load another model"),
    ("F5", "saved sessions: type to search them, Enter opens at the match"),
    ("Ctrl+P", "command palette"),
    ("PgUp / PgDn", "scroll the transcript, also while typing (Ctrl+Home / Ctrl+End: ends)"),
    ("Tab / Shift+Tab", "move focus"),
    ("tmux / screen", "Ctrl+B / Ctrl+A are their prefixes: llama-tui uses neither"),
    ("Terminal keys", "if the terminal takes Alt+Enter or F1, use Ctrl+J or /help"),
    ("F1", "this help"),
)


def _table(rows: list[tuple[str, str]]) -> Table:
    """Two columns: a long help text wraps within its own column, never under the key."""
    table = Table.grid(padding=(0, 2), pad_edge=False)
    table.add_column(no_wrap=True)
    table.add_column(ratio=1)
    for key, text in rows:
        table.add_row(Text(key), Text(text))
    return table


def help_content() -> Group:
    """Keys, commands and two notes; plain `Text` throughout (no markup is parsed)."""
    commands = [(u, h) for u, _, h in help_lines()]
    return Group(
        Text("Keys\n"),
        Padding(_table(list(KEYS)), (0, 0, 0, 2)),
        Text("\nCommands (type them in the input; also in Ctrl+P)\n"),
        Padding(_table(commands), (0, 0, 0, 2)),
        Text(
            "\nSettings apply from the next reply and are remembered for the next launch.\n"
            "Every message is journaled as it happens; /save writes a copy you choose."
        ),
    )


class HelpScreen(ModalScreen[None]):
    """Keys and commands; Esc, q or F1 closes it."""

    CSS_PATH = DIALOG_CSS
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,f1", "dismiss", "Close")]

    def __init__(self) -> None:
        super().__init__(classes="dialog-screen")

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog help") as scroll:
            scroll.border_title = "llama-tui help"
            yield Static(help_content())

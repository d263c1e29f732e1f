"""`/branches`: the conversation's tree, one line per version of each fork.

Each line: indentation by depth, the version (`2/3`), a dot for the active path, the first
words, the date, the model that wrote it and the tokens generated down that branch. Enter
makes the branch active (the newest path below it); Esc closes. Message text is untrusted
and shown cleaned, as plain text.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from llama_tui.session.transcript import Message
from llama_tui.session.tree import BranchRow
from llama_tui.text import clean
from llama_tui.ui.screens import DIALOG_CSS

WORDS = 17  # characters of a message's start shown per line (one line in the dialog at 80 columns)
MODEL = 12  # characters of the model's name


def row_text(row: BranchRow, default_model: dict[str, Any], now: float | None = None) -> str:
    """One picker line (plain text): the model that wrote it (shortened), the day only when
    it is not today."""
    msg = row.message
    first = " ".join(clean(msg.content).split())
    if len(first) > WORDS:
        first = first[: WORDS - 1] + "…"
    who = "you" if msg.role == "user" else "bot"
    day = time.strftime("%b %d", time.localtime(now if now is not None else time.time()))
    when = time.strftime("%b %d %H:%M", time.localtime(msg.created))
    when = when.removeprefix(day + " ")
    mark = "●" if row.active else " "
    parts = [when, _model_name(msg, default_model)]
    if row.tokens:
        parts.append(f"{row.tokens} tok")
    return (f"{'  ' * row.depth}{mark} {row.index}/{row.count} {who}: {first or '(empty)'}"
            f" · {' · '.join(parts)}")


def _model_name(msg: Message, default_model: dict[str, Any]) -> str:
    """The model that wrote a reply (its replay record), else the conversation's; the last
    part of a repo id, shortened."""
    model = msg.replay.get("model") if isinstance(msg.replay, dict) else None
    name = model.get("name") or model.get("spec") if isinstance(model, dict) else None
    if not isinstance(name, str) or not name:
        name = default_model.get("name") or default_model.get("spec") or "?"
    short = clean(str(name).rsplit("/", 1)[-1])
    return short if len(short) <= MODEL else short[: MODEL - 1] + "…"


class BranchesScreen(ModalScreen[str | None]):
    """Dismisses with the id of the message whose branch to make active, or None."""

    CSS_PATH = DIALOG_CSS
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, rows: list[BranchRow], default_model: dict[str, Any]) -> None:
        super().__init__(classes="dialog-screen")
        self.rows = rows
        self.default_model = default_model

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog picker") as box:
            box.border_title = "Branches"
            yield Static("Enter: make a branch active · Esc: close · ● the active path",
                         markup=False)
            yield OptionList(
                *(Option(row_text(r, self.default_model), id=r.message.id) for r in self.rows),
                id="branches", markup=False)

    def on_mount(self) -> None:
        options = self.query_one("#branches", OptionList)
        options.focus()
        # Start on the deepest active version: the one most likely to be switched from.
        active = [i for i, r in enumerate(self.rows) if r.active and r.count > 1]
        if active:
            options.highlighted = active[-1]

    @on(OptionList.OptionSelected, "#branches")
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

"""The session browser: every journaled conversation, newest first; open, rename or delete.

Rows show date, model and title (by default the first prompt; in a terminal narrower
than 70 columns the model is left out, for the title); all of it is untrusted,
cleaned, plain text. Renaming asks for the new title in a small dialog (prefilled with the
current one) and records it in the session's journal: through the app's recorder for the
open session, else as an appended `title` record (`store.rename_session`). Deleting asks
first. Reading the journals happens in a thread worker so the dialog paints at once.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import ClassVar

from rich.cells import cell_len, set_cell_size
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, OptionList, Static
from textual.widgets.option_list import Option, OptionDoesNotExist

from llama_tui.session.store import TITLE_MAX
from llama_tui.text import clean
from llama_tui.ui.screens.confirm import ConfirmScreen
from llama_tui.ui.widgets.ordered_input import OrderedInput
from llama_tui.ui.widgets.status_bar import crop_cells

MODEL_COLUMN = 18  # cells for the model name in a row; longer names end in "…"
# Below this many terminal columns the model column is left out: the title needs the room.
MODEL_COLUMN_MIN_WIDTH = 70


class RenameScreen(ModalScreen[str | None]):
    """Ask for a session title; dismisses with the text typed (uncleaned), or None."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, title: str) -> None:
        super().__init__(classes="dialog-screen")
        self.current = title

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog picker") as box:
            box.border_title = "Rename session"
            yield Static("New title (Enter: rename · Esc: cancel):", markup=False)
            yield OrderedInput(value=clean(self.current), id="title", compact=True,
                        max_length=TITLE_MAX)

    def on_mount(self) -> None:
        self.query_one("#title", Input).focus()

    @on(Input.Submitted, "#title")
    def _submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)


class SessionsScreen(ModalScreen[str | None]):
    """Dismisses with the session id to open, or None.

    `rename_current(title)` renames the open session (`current_id`): its journal is being
    written by the app's recorder, which must record the title itself.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss(None)", "Close"),
        Binding("r", "rename", "Rename"),
        Binding("d,delete", "delete", "Delete"),
    ]

    def __init__(
        self,
        current_id: str = "",
        rename_current: Callable[[str], object] | None = None,
    ) -> None:
        super().__init__(classes="dialog-screen")
        self.current_id = current_id
        self.rename_current = rename_current
        self.titles: dict[str, str] = {}  # id -> title, for readable sessions
        self._keep: str | None = None  # the row to highlight again after a reload
        self._shown_with_model = True  # whether the rows were laid out with the model column

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog picker") as box:
            box.border_title = "Sessions"
            yield Static("Enter: open · r: rename · d: delete · Esc: close", markup=False)
            yield OptionList(id="sessions", markup=False)

    def on_mount(self) -> None:
        self.query_one("#sessions", OptionList).focus()
        self._load()

    def on_resize(self) -> None:
        if self._with_model() != self._shown_with_model:  # the rows are laid out for a width
            self._load()

    def _with_model(self) -> bool:
        return self.app.size.width >= MODEL_COLUMN_MIN_WIDTH

    @work(thread=True, exclusive=True, exit_on_error=False, group="sessions")
    def _load(self) -> None:
        from llama_tui.session.store import list_sessions

        sessions = list_sessions()
        with_model = self._shown_with_model = self._with_model()
        model_width = min(MODEL_COLUMN, max((cell_len(clean(s.model or "?")) for s in sessions
                                             if not s.error), default=1))
        rows = []
        titles = {}
        for s in sessions:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(s.modified))
            # A fixed-width mark column keeps the open session's row aligned with the others.
            mark = "* " if s.id == self.current_id else "  "
            if s.error:
                text = f"{mark}{when}  (unreadable: {clean(s.error)})"
            else:
                titles[s.id] = s.title or s.first_prompt
                model = set_cell_size(crop_cells(clean(s.model or "?"), model_width), model_width)
                title = clean(s.title or s.first_prompt or "(empty)")
                text = f"{mark}{when}  {model}  {title}" if with_model else f"{mark}{when}  {title}"
            rows.append((s.id, text[:200]))
        self.app.call_from_thread(self._show, rows, titles)  # once, not per token

    def _show(self, rows: list[tuple[str, str]], titles: dict[str, str]) -> None:
        self.titles = titles
        options = self.query_one("#sessions", OptionList)
        options.clear_options()
        if not rows:
            options.add_option(Option("No saved sessions yet.", disabled=True))
        for sid, text in rows:
            options.add_option(Option(text, id=sid))
        if self._keep is not None:
            with contextlib.suppress(OptionDoesNotExist):  # gone meanwhile: keep the default
                options.highlighted = options.get_option_index(self._keep)
            self._keep = None
        if options.highlighted is None and rows:
            options.highlighted = 0  # Enter / r / d act on the newest at once

    def _highlighted_id(self) -> str | None:
        options = self.query_one("#sessions", OptionList)
        if options.highlighted is None:
            return None
        return options.get_option_at_index(options.highlighted).id or None

    @on(OptionList.OptionSelected, "#sessions")
    def _open(self, event: OptionList.OptionSelected) -> None:
        if event.option.id:
            self.dismiss(event.option.id)

    def action_rename(self) -> None:
        """Rename the highlighted session: ask for the title, record it, refresh the list."""
        sid = self._highlighted_id()
        if sid is None:
            return
        if sid not in self.titles:
            self.app.notify("That session cannot be read; it can only be deleted.",
                            severity="warning", markup=False)
            return

        def answer(typed: str | None) -> None:
            if typed is None:
                return
            from llama_tui.session.store import SessionLoadError, clean_title, rename_session

            title = clean_title(typed)
            if not title:
                self.app.notify("A title cannot be empty; nothing was changed.",
                                severity="warning", markup=False)
                return
            if title == self.titles.get(sid):
                return
            try:
                if sid == self.current_id and self.rename_current is not None:
                    self.rename_current(title)  # its recorder writes the journal
                else:
                    rename_session(sid, title)
            except SessionLoadError as e:
                self.app.notify(clean(f"Could not rename: {e.reason}."), severity="error",
                                markup=False)
            except (OSError, ValueError) as e:
                self.app.notify(clean(f"Could not rename: {e}"), severity="error", markup=False)
            self._keep = sid
            self._load()

        self.app.push_screen(RenameScreen(self.titles[sid]), answer)

    def action_delete(self) -> None:
        """Delete the highlighted session after asking."""
        sid = self._highlighted_id()
        if sid is None:
            return
        if sid == self.current_id:
            self.app.notify("That is the open session; /clear first.", markup=False)
            return

        def answer(yes: bool | None) -> None:
            if not yes:
                return
            from llama_tui.session.store import SessionLoadError, delete_session

            try:
                delete_session(sid)
            except SessionLoadError as e:  # deleted meanwhile, elsewhere
                self.app.notify(clean(f"Could not delete: {e.reason}."), severity="error",
                                markup=False)
            except OSError as e:
                self.app.notify(clean(f"Could not delete: {e}"), severity="error", markup=False)
            self._load()

        if sid in self.titles:
            title = crop_cells(clean(self.titles[sid]) or "(empty)", 60)
            question = f"Delete the session “{title}”? This cannot be undone."
        else:
            question = f"Delete the unreadable session {sid}? This cannot be undone."
        self.app.push_screen(ConfirmScreen(question, yes="Delete", no="Keep"), answer)

"""The session browser: every journaled conversation, newest first; open or delete.

Rows show date, model and first prompt (all untrusted, cleaned, plain text). Deleting asks
first. Reading the journals happens in a thread worker so the dialog paints at once.
"""

from __future__ import annotations

import time
from typing import ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from llama_tui.text import clean
from llama_tui.ui.screens.confirm import ConfirmScreen


class SessionsScreen(ModalScreen[str | None]):
    """Dismisses with the session id to open, or None."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss(None)", "Close"),
        Binding("d,delete", "delete", "Delete"),
    ]

    def __init__(self, current_id: str = "") -> None:
        super().__init__(classes="dialog-screen")
        self.current_id = current_id

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog picker") as box:
            box.border_title = "Sessions"
            yield Static("Enter: open · d: delete · Esc: close", markup=False)
            yield OptionList(id="sessions", markup=False)

    def on_mount(self) -> None:
        self.query_one("#sessions", OptionList).focus()
        self._load()

    @work(thread=True, exclusive=True, exit_on_error=False, group="sessions")
    def _load(self) -> None:
        from llama_tui.session.store import list_sessions

        rows = []
        for s in list_sessions():
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(s.modified))
            if s.error:
                text = f"{when}  (unreadable: {s.error})"
            else:
                mark = "* " if s.id == self.current_id else ""
                text = f"{mark}{when}  {s.model or '?'}  {s.first_prompt or s.title or '(empty)'}"
            rows.append((s.id, clean(text)[:200]))
        self.app.call_from_thread(self._show, rows)  # once, not per token

    def _show(self, rows: list[tuple[str, str]]) -> None:
        options = self.query_one("#sessions", OptionList)
        options.clear_options()
        if not rows:
            options.add_option(Option("No saved sessions yet.", disabled=True))
        for sid, text in rows:
            options.add_option(Option(text, id=sid))

    @on(OptionList.OptionSelected, "#sessions")
    def _open(self, event: OptionList.OptionSelected) -> None:
        if event.option.id:
            self.dismiss(event.option.id)

    def action_delete(self) -> None:
        """Delete the highlighted session after asking."""
        options = self.query_one("#sessions", OptionList)
        if options.highlighted is None:
            return
        sid = options.get_option_at_index(options.highlighted).id
        if not sid:
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
            except (OSError, SessionLoadError) as e:
                self.app.notify(clean(f"Could not delete: {e}"), severity="error", markup=False)
            self._load()

        self.app.push_screen(ConfirmScreen(f"Delete session {sid}? This cannot be undone.",
                                           yes="Delete", no="Keep"), answer)

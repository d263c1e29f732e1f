"""The session browser: every journaled conversation, newest first; search, open, rename or
delete.

Rows show date, model and title (by default the first prompt; in a terminal narrower
than 70 columns the model is left out, for the title); all of it is untrusted, cleaned,
plain text. The search field on top (focused when the browser opens) filters as you type
by title, model, date and the text of every message (`session.search`: the rules;
`session.search_index`: the index in the data directory); a hit shows its matching line
under the row, and Enter opens the session scrolled to that message (`session_hits`: the
rows, and `reveal_match`, which checks the hit against the journal just read). Searches
run in a thread worker, a short debounce after the last key; a newer one cancels the one
running, whose results are never shown. Up / Down / PgUp / PgDn move through the list from
the search field; Tab moves into the list, where `r` renames and `d` deletes.

Renaming asks for the new title in a small dialog (prefilled with the current one) and
records it in the session's journal: through the app's recorder for the open session, else
as an appended `title` record (`store.rename_session`). Deleting asks first.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.screen import ModalScreen
from textual.timer import Timer
from textual.widgets import Input, OptionList, Static
from textual.widgets.option_list import Option, OptionDoesNotExist
from textual.worker import Worker, get_current_worker

from llama_tui.session.search import Hit, terms_of
from llama_tui.session.store import TITLE_MAX
from llama_tui.text import clean
from llama_tui.ui.screens import DIALOG_CSS
from llama_tui.ui.screens.confirm import ConfirmScreen
from llama_tui.ui.screens.session_hits import (
    MODEL_COLUMN_MIN_WIDTH,
    Opened,
    hit_rows,
    reveal_match,
)
from llama_tui.ui.widgets.ordered_input import OrderedInput
from llama_tui.ui.widgets.status_bar import crop_cells

if TYPE_CHECKING:
    from llama_tui.session.search_index import SearchIndex

__all__ = ["Opened", "RenameScreen", "SessionsScreen", "reveal_match"]

DEBOUNCE_S = 0.08  # a search starts this long after the last key (fast typing: one search)
HIT_LIMIT = 50  # rows shown for a query (more is for refining it; an empty one lists all)
HINT = "Enter: open · Tab: list (r rename, d delete) · Esc"


class RenameScreen(ModalScreen[str | None]):
    """Ask for a session title; dismisses with the text typed (uncleaned), or None."""

    CSS_PATH = DIALOG_CSS
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, title: str) -> None:
        super().__init__(classes="dialog-screen")
        self.current = title

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog picker") as box:
            box.border_title = "Rename session"
            yield Static("New title (Enter: rename · Esc: cancel):", markup=False)
            yield OrderedInput(
                value=clean(self.current), id="title", compact=True, max_length=TITLE_MAX
            )

    def on_mount(self) -> None:
        self.query_one("#title", Input).focus()

    @on(Input.Submitted, "#title")
    def _submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)


class SessionsScreen(ModalScreen[Opened | None]):
    """Dismisses with the session to open (`Opened`), or None.

    `rename_current(title)` renames the open session (`current_id`): its journal is being
    written by the app's recorder, which must record the title itself.
    """

    CSS_PATH = DIALOG_CSS
    # `.picker Input` (dialogs.tcss) puts the field one line down: the label goes with it.
    DEFAULT_CSS = """
    #search-row { height: auto; }
    #search-label { width: auto; margin: 1 1 0 0; color: $text-muted; }
    #search { width: 1fr; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Close"),
        Binding("r", "rename", "Rename"),
        Binding("d,delete", "delete", "Delete"),
        # From the search field (the list, when focused, handles these itself).
        Binding("down", "move('cursor_down')", show=False),
        Binding("up", "move('cursor_up')", show=False),
        Binding("pagedown", "move('page_down')", show=False),
        Binding("pageup", "move('page_up')", show=False),
    ]

    def __init__(
        self,
        current_id: str = "",
        rename_current: Callable[[str], object] | None = None,
        index: SearchIndex | None = None,
    ) -> None:
        super().__init__(classes="dialog-screen")
        self.current_id = current_id
        self.rename_current = rename_current
        self.titles: dict[str, str] = {}  # id -> title, for readable sessions
        self.hits: dict[str, Hit] = {}  # id -> what the search shown found
        self.query_text = ""  # the search typed (being searched, or shown)
        self.shown_query: str | None = None  # the search whose results the list shows
        self._keep: str | None = None  # the row to highlight again after a reload
        self._shown_with_model = True  # whether the rows were laid out with the model column
        self._index = index  # made in the first worker (opening it touches the disk)
        self._index_lock = threading.Lock()  # one worker at a time uses the index
        self._fresh = False  # the index was refreshed since the browser opened
        self._debounce: Timer | None = None
        self._closed = False  # unmounted: the last worker closes the index

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog picker") as box:
            box.border_title = "Sessions"
            with Horizontal(id="search-row"):
                yield Static("Search:", id="search-label", markup=False)
                yield OrderedInput(
                    id="search", compact=True, placeholder="title, model, date or any message"
                )
            yield Static(HINT, id="sessions-status", markup=False)
            yield OptionList(id="sessions", markup=False)

    def on_mount(self) -> None:
        self.query_one("#search", Input).focus()
        self._search("")

    def on_unmount(self) -> None:
        if self._debounce is not None:
            self._debounce.stop()
        self._closed = True
        self.workers.cancel_group(self, "session-search")
        if self._index_lock.acquire(blocking=False):  # else the worker running closes it
            try:
                self._close_index()
            finally:
                self._index_lock.release()

    def _close_index(self) -> None:
        if self._index is not None:
            self._index.close()
            self._index = None

    def on_resize(self) -> None:
        if self._with_model() != self._shown_with_model:  # the rows are laid out for a width
            self._reload()

    def _with_model(self) -> bool:
        return self.app.size.width >= MODEL_COLUMN_MIN_WIDTH

    def _reload(self) -> None:
        """Search again (the journals changed, or the width did)."""
        self._fresh = False
        self._search(self.query_text)

    @on(Input.Changed, "#search")
    def _typed(self, event: Input.Changed) -> None:
        self.query_text = event.value
        if self._debounce is not None:
            self._debounce.stop()
        self._debounce = self.set_timer(DEBOUNCE_S, lambda: self._search(self.query_text))

    @on(Input.Submitted, "#search")
    def _submitted(self) -> None:
        self._open_highlighted()

    def action_move(self, how: str) -> None:
        options = self.query_one("#sessions", OptionList)
        getattr(options, f"action_{how}")()

    def action_close(self) -> None:
        """Esc: clear a search first, then close."""
        search = self.query_one("#search", Input)
        if search.value:
            search.value = ""
            search.focus()
        else:
            self.dismiss(None)

    @work(thread=True, exclusive=True, exit_on_error=False, group="session-search")
    def _search(self, query: str) -> None:
        """Refresh the index (once per opening), then search. A newer search cancels this
        one (`exclusive`): it gives up, unshown, and a refresh it was doing goes on in the
        newer one from the last batch committed."""
        from llama_tui.session.search_index import SearchIndex, SearchInterrupted

        worker = get_current_worker()

        def progress(done: int, total: int) -> None:
            # A first build reads the newest journals first: those can be searched already.
            if worker.is_cancelled:
                raise SearchInterrupted
            if done < total:
                self._publish(query, worker, f"Indexing sessions… {done}/{total}")

        with self._index_lock:
            if worker.is_cancelled:
                return
            if self._index is None:
                self._index = SearchIndex()
            try:
                if not self._fresh:
                    self._index.refresh(progress=progress)
                    self._fresh = True
                self._publish(query, worker)
            except SearchInterrupted:
                return
            except (sqlite3.Error, OSError) as e:
                self.app.call_from_thread(self._status, f"Search failed: {clean(str(e))}")
                return
            finally:
                if self._closed:
                    self._close_index()

    def _publish(self, query: str, worker: Worker[None], status: str | None = None) -> None:
        """Search (in the worker, holding the index) and show the results: once per search,
        not per row."""
        assert self._index is not None
        limit = HIT_LIMIT if terms_of(query) else None
        hits = self._index.search(query, limit, cancelled=lambda: worker.is_cancelled)
        with_model = self._shown_with_model = self._with_model()
        rows = hit_rows(hits, query, self.current_id, with_model, self.app.size.width)
        self.app.call_from_thread(self._show, query, rows, hits, status)

    def _status(self, text: str) -> None:
        with contextlib.suppress(NoMatches):
            self.query_one("#sessions-status", Static).update(text)

    def _show(
        self, query: str, rows: list[tuple[str, Text]], hits: list[Hit], status: str | None
    ) -> None:
        if query != self.query_text:
            return  # typed on meanwhile: a newer search is coming
        try:
            options = self.query_one("#sessions", OptionList)
        except NoMatches:  # closed meanwhile
            return
        if self._keep is None and query == self.shown_query:
            self._keep = self._highlighted_id()  # the same search again (more indexed)
        self.hits = {h.id: h for h in hits}
        self.shown_query = query
        self.titles = {h.id: h.title or h.first_prompt for h in hits if not h.error}
        options.clear_options()
        if not rows:
            empty = "No saved sessions yet." if not terms_of(query) else "No session matches."
            options.add_option(Option(empty, disabled=True))
        options.add_options(Option(text, id=sid) for sid, text in rows)
        if self._keep is not None:
            with contextlib.suppress(OptionDoesNotExist):  # gone meanwhile: keep the default
                options.highlighted = options.get_option_index(self._keep)
            self._keep = None
        if options.highlighted is None and rows:
            options.highlighted = 0  # Enter / r / d act on the newest at once
        found = f"{len(rows)} session{'s' if len(rows) != 1 else ''}"
        if terms_of(query) and len(rows) >= HIT_LIMIT:
            found = f"the newest {HIT_LIMIT} matches"
        self._status(status or f"{found} · {HINT}")

    def _highlighted_id(self) -> str | None:
        options = self.query_one("#sessions", OptionList)
        if options.highlighted is None:
            return None
        return options.get_option_at_index(options.highlighted).id or None

    def _open_highlighted(self) -> None:
        sid = self._highlighted_id()
        if sid is not None:
            self._open_id(sid)

    def _open_id(self, sid: str) -> None:
        hit = self.hits.get(sid)
        if hit is not None and hit.line:
            self.dismiss(Opened(sid, self.query_text, hit.message_id))
        else:
            self.dismiss(Opened(sid))

    @on(OptionList.OptionSelected, "#sessions")
    def _open(self, event: OptionList.OptionSelected) -> None:
        if event.option.id:
            self._open_id(event.option.id)

    def action_rename(self) -> None:
        """Rename the highlighted session: ask for the title, record it, refresh the list."""
        sid = self._highlighted_id()
        if sid is None:
            return
        if sid not in self.titles:
            self.app.notify(
                "That session cannot be read; it can only be deleted.",
                severity="warning",
                markup=False,
            )
            return

        def answer(typed: str | None) -> None:
            if typed is None:
                return
            from llama_tui.session.store import SessionLoadError, clean_title, rename_session

            title = clean_title(typed)
            if not title:
                self.app.notify(
                    "A title cannot be empty; nothing was changed.",
                    severity="warning",
                    markup=False,
                )
                return
            if title == self.titles.get(sid):
                return
            try:
                if sid == self.current_id and self.rename_current is not None:
                    self.rename_current(title)  # its recorder writes the journal
                else:
                    rename_session(sid, title)
            except SessionLoadError as e:
                self.app.notify(
                    clean(f"Could not rename: {e.reason}."), severity="error", markup=False
                )
            except (OSError, ValueError) as e:
                self.app.notify(clean(f"Could not rename: {e}"), severity="error", markup=False)
            self._keep = sid
            self._reload()

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
                self.app.notify(
                    clean(f"Could not delete: {e.reason}."), severity="error", markup=False
                )
            except OSError as e:
                self.app.notify(clean(f"Could not delete: {e}"), severity="error", markup=False)
            self._reload()

        if sid in self.titles:
            title = crop_cells(clean(self.titles[sid]) or "(empty)", 60)
            question = f"Delete the session “{title}”? This cannot be undone."
        else:
            question = f"Delete the unreadable session {sid}? This cannot be undone."
        self.app.push_screen(ConfirmScreen(question, yes="Delete", no="Keep"), answer)

"""The session browser (F5 / `/sessions`): open, rename, delete with confirmation."""

from __future__ import annotations

import json

import pytest
from textual.pilot import Pilot
from textual.widgets import Input, OptionList

from llama_tui import locations
from llama_tui.session.store import load_journal
from llama_tui.session.transcript import Conversation
from llama_tui.ui.app import LlamaTuiApp
from llama_tui.ui.screens.confirm import ConfirmScreen
from llama_tui.ui.screens.sessions import RenameScreen, SessionsScreen
from tests.ui.fakes import FakeBackend
from tests.ui.helpers import make_app, notes, ready, saved_session, shown_text, until

pytestmark = pytest.mark.asyncio

TOKEN = "hf_" + "A1b2C3d4" * 5


def journal(conv: Conversation) -> Conversation:
    return load_journal(locations.sessions_dir() / f"{conv.id}.jsonl")


def records(conv: Conversation) -> list[dict[str, object]]:
    path = locations.sessions_dir() / f"{conv.id}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def option_list(app: LlamaTuiApp) -> OptionList:
    return app.screen.query_one("#sessions", OptionList)


def rows(app: LlamaTuiApp) -> dict[str, str]:
    """Session id -> row text of the browser on screen."""
    options = option_list(app)
    out = {}
    for i in range(options.option_count):
        option = options.get_option_at_index(i)
        if option.id:
            out[option.id] = str(option.prompt)
    return out


async def open_browser(pilot: Pilot[int], app: LlamaTuiApp, count: int) -> None:
    """F5, wait until the list shows `count` sessions, then Tab from the search field into
    the list (where r and d act)."""
    await pilot.press("f5")
    await until(pilot, lambda: isinstance(app.screen, SessionsScreen))
    await until(pilot, lambda: len(rows(app)) == count)
    await pilot.press("tab")
    await until(pilot, lambda: option_list(app).has_focus)


def highlight(app: LlamaTuiApp, session_id: str) -> None:
    options = option_list(app)
    options.highlighted = options.get_option_index(session_id)


async def test_rename_a_saved_session() -> None:
    older = saved_session("Plan a trip to Lisbon", "Day one: Alfama.")
    other = saved_session("Explain monads", "A monoid in the category of endofunctors.")
    app = make_app(FakeBackend())
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        await open_browser(pilot, app, 2)
        assert "Plan a trip to Lisbon" in rows(app)[older.id]

        highlight(app, older.id)
        await pilot.press("r")
        await until(pilot, lambda: isinstance(app.screen, RenameScreen))
        box = app.screen.query_one("#title", Input)
        assert box.value == "Plan a trip to Lisbon"  # prefilled with the current title
        # Pasted junk: escape sequences, a newline, a secret.
        box.value = f"Lisbon \x1b[2J\x1b]52;c;SGk=\x07trip\n  notes {TOKEN}"
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, SessionsScreen))
        await until(pilot, lambda: "Lisbon trip notes" in rows(app).get(older.id, ""))

        # The list refreshed with the new title, on the same row, and nothing else changed.
        assert option_list(app).highlighted == option_list(app).get_option_index(older.id)
        assert "Explain monads" in rows(app)[other.id]
        saved = journal(older)
        assert saved.title == "Lisbon trip notes hf_***"
        assert "\x1b" not in saved.title
        assert [m.content for m in saved.messages] == ["Plan a trip to Lisbon", "Day one: Alfama."]
        last = records(older)[-1]
        assert last["type"] == "title" and last["session"] == older.id  # appended, not rewritten
        assert journal(other).title == "Explain monads"

        # Esc and an empty title change nothing.
        before = records(older)
        await pilot.press("r")
        await until(pilot, lambda: isinstance(app.screen, RenameScreen))
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, SessionsScreen))
        await pilot.press("r")
        await until(pilot, lambda: isinstance(app.screen, RenameScreen))
        app.screen.query_one("#title", Input).value = " \x1b[0m "
        await pilot.press("enter")
        await until(pilot, lambda: any("cannot be empty" in n for n in notes(app)))
        assert records(older) == before


async def test_rename_the_open_session_goes_through_its_recorder() -> None:
    conv = saved_session("What is the capital of France?", "Paris.")
    app = make_app(FakeBackend(), resume=conv.id)
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        await open_browser(pilot, app, 1)
        assert rows(app)[conv.id].startswith("* ")  # marked as the open one
        await pilot.press("r")
        await until(pilot, lambda: isinstance(app.screen, RenameScreen))
        app.screen.query_one("#title", Input).value = ""
        await pilot.press(*"Capitals", "enter")  # typed
        await until(pilot, lambda: "Capitals" in rows(app).get(conv.id, ""))
        assert app.chat_state.conversation.title == "Capitals"
        assert journal(conv).title == "Capitals"
        assert records(conv)[-1]["type"] == "title"


async def test_delete_asks_first() -> None:
    keep = saved_session("Keep me", "ok")
    doomed = saved_session("Delete me", "ok")
    path = locations.sessions_dir() / f"{doomed.id}.jsonl"
    app = make_app(FakeBackend(), resume=keep.id)
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        await open_browser(pilot, app, 2)

        # The open session cannot be deleted from under the app.
        highlight(app, keep.id)
        await pilot.press("d")
        await until(pilot, lambda: any("open session" in n for n in notes(app)))
        assert isinstance(app.screen, SessionsScreen)

        # "n" keeps it.
        highlight(app, doomed.id)
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("n")
        await until(pilot, lambda: isinstance(app.screen, SessionsScreen))
        assert path.exists() and doomed.id in rows(app)

        # "y" deletes it, and the list refreshes.
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await until(pilot, lambda: doomed.id not in rows(app))
        assert not path.exists()
        assert list(rows(app)) == [keep.id]


async def test_open_a_saved_session() -> None:
    first = saved_session("Tell me about owls", "Owls are nocturnal birds.")
    saved_session("Something else", "ok")
    app = make_app(FakeBackend())
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        await open_browser(pilot, app, 2)
        highlight(app, first.id)
        await pilot.press("enter")
        await until(pilot, lambda: app.chat_state.conversation.id == first.id)
        await until(pilot, lambda: "Owls are nocturnal birds." in shown_text(app))
        assert not isinstance(app.screen, SessionsScreen)
        assert [m.content for m in app.chat_state.conversation.messages] == [
            "Tell me about owls", "Owls are nocturnal birds."]


# -- search ------------------------------------------------------------------------------------


def long_session(word_at: int, turns: int = 30) -> Conversation:
    """A session of `turns` exchanges; prompt number `word_at` holds the word "axolotl"."""
    from llama_tui.session.recorder import SessionRecorder

    conv = Conversation()
    rec = SessionRecorder(conv)
    for i in range(turns):
        prompt = f"question {i} about the axolotl" if i == word_at else f"question {i}"
        rec.user_message(conv.add("user", prompt))
        rec.assistant_finished(conv.add("assistant", f"answer {i}\n\nmore of answer {i}"))
    rec.close()
    return conv


def visible_in_transcript(app: LlamaTuiApp, message_id: str) -> bool:
    transcript = app.chat.transcript
    for turn in transcript.query(".turn"):
        if getattr(turn, "message_id", None) == message_id:
            return transcript.region.overlaps(turn.region)
    return False


async def test_typing_filters_and_enter_opens_the_match_scrolled_to_it() -> None:
    target = long_session(word_at=4)
    saved_session("Something about cats", "Cats sleep.")
    saved_session("Another axolotl?", "No, a newt.")  # matches too, newer
    app = make_app(FakeBackend())
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        await pilot.press("f5")
        await until(pilot, lambda: isinstance(app.screen, SessionsScreen) and len(rows(app)) == 3)
        assert app.screen.query_one("#search", Input).has_focus  # type at once
        await pilot.press(*"AXOLOTL")
        await until(pilot, lambda: len(rows(app)) == 2)
        shown = rows(app)
        assert "question 4 about the axolotl" in shown[target.id]  # the matching line
        await pilot.press("down")  # from the search field, through the list
        await until(pilot, lambda: option_list(app).highlighted == 1)
        highlight(app, target.id)
        await pilot.press("enter")
        await until(pilot, lambda: app.chat_state.conversation.id == target.id)
        match_id = target.messages[8].id
        await until(pilot, lambda: visible_in_transcript(app, match_id))
        assert not visible_in_transcript(app, target.messages[-1].id)  # not at the bottom
        await pilot.pause(0.3)
        assert visible_in_transcript(app, match_id)  # and it stays there


async def test_no_match_says_so_and_esc_clears_before_closing() -> None:
    saved_session("Plan a trip", "ok")
    app = make_app(FakeBackend())
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await pilot.press("f5")
        await until(pilot, lambda: isinstance(app.screen, SessionsScreen) and len(rows(app)) == 1)
        await pilot.press(*"zzqx")
        await until(pilot, lambda: len(rows(app)) == 0)
        assert "No session matches." in str(option_list(app).get_option_at_index(0).prompt)
        await pilot.press("escape")  # clears the search
        await until(pilot, lambda: len(rows(app)) == 1)
        assert isinstance(app.screen, SessionsScreen)
        await pilot.press("escape")  # closes
        await until(pilot, lambda: not isinstance(app.screen, SessionsScreen))


async def test_a_hit_the_journal_no_longer_holds_opens_at_the_end_and_says_so() -> None:
    conv = long_session(word_at=2, turns=4)
    app = make_app(FakeBackend())
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        await pilot.press("f5")
        await until(pilot, lambda: isinstance(app.screen, SessionsScreen) and len(rows(app)) == 1)
        await pilot.press(*"axolotl")
        await until(pilot, lambda: "axolotl" in rows(app).get(conv.id, ""))
        # Meanwhile another program rewrites the journal without the word.
        path = locations.sessions_dir() / f"{conv.id}.jsonl"
        path.write_bytes(path.read_bytes().replace(b"axolotl", b"salamander"))
        await pilot.press("enter")
        await until(pilot, lambda: app.chat_state.conversation.id == conv.id)
        await until(pilot, lambda: any("no longer contains" in n for n in notes(app)))


async def test_a_match_in_an_earlier_version_shows_that_version() -> None:
    from llama_tui.session import tree
    from llama_tui.session.recorder import SessionRecorder

    conv = Conversation()
    rec = SessionRecorder(conv)
    rec.user_message(conv.add("user", "Tell me a fact"))
    old = conv.add("assistant", "The okapi is a relative of the giraffe.")
    rec.assistant_finished(old)
    tree.branch_off(conv, 1)  # a retry: the first reply becomes an earlier version
    rec.assistant_finished(conv.add("assistant", "Honey never spoils."))
    rec.close()
    app = make_app(FakeBackend())
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        await pilot.press("f5")
        await until(pilot, lambda: isinstance(app.screen, SessionsScreen) and len(rows(app)) == 1)
        await pilot.press(*"okapi")
        await until(pilot, lambda: "okapi" in rows(app).get(conv.id, ""))
        await pilot.press("enter")
        await until(pilot, lambda: app.chat_state.conversation.id == conv.id)
        await until(pilot, lambda: "okapi" in shown_text(app))
        assert [m.id for m in app.chat_state.conversation.messages][-1] == old.id
        assert any("another version" in n for n in notes(app))


async def test_a_newer_search_cancels_the_one_running(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from llama_tui.session.search_index import SearchIndex, SearchInterrupted

    plural = saved_session("owls at night", "ok")
    saved_session("an owl pellet", "ok")
    real_search = SearchIndex.search
    started, gave_up = threading.Event(), threading.Event()

    def slow(self: SearchIndex, query: str, limit: int | None = None,
             cancelled: object = None) -> object:
        if query == "owl":  # this one takes long: the user types on meanwhile
            started.set()
            for _ in range(500):
                if callable(cancelled) and cancelled():
                    gave_up.set()
                    raise SearchInterrupted
                threading.Event().wait(0.01)
        return real_search(self, query, limit, cancelled)  # type: ignore[arg-type]

    monkeypatch.setattr(SearchIndex, "search", slow)
    app = make_app(FakeBackend())
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        await pilot.press("f5")
        await until(pilot, lambda: isinstance(app.screen, SessionsScreen) and len(rows(app)) == 2)
        screen = app.screen
        assert isinstance(screen, SessionsScreen)
        await pilot.press(*"owl")
        await until(pilot, started.is_set)
        await pilot.press("s")
        await until(pilot, lambda: screen.shown_query == "owls")
        assert gave_up.is_set()  # the stale search stopped, its results never shown
        assert list(rows(app)) == [plural.id]


async def test_a_first_index_build_shows_the_newest_sessions_as_it_goes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import os
    import threading
    import time

    from textual.widgets import Static

    import llama_tui.session.search_index as search_index

    convs = [saved_session(f"prompt {i}", "ok") for i in range(6)]
    for age, conv in enumerate(reversed(convs)):  # convs[-1] newest
        t = time.time() - 100 * age
        os.utime(locations.sessions_dir() / f"{conv.id}.jsonl", (t, t))
    monkeypatch.setattr(search_index, "BATCH", 2)
    monkeypatch.setattr(search_index, "FIRST_BATCH", 2)
    gate = threading.Event()
    real_add = search_index.SearchIndex._add

    def add(self: search_index.SearchIndex, path: object, st: object) -> None:
        if path != locations.sessions_dir() / f"{convs[-1].id}.jsonl" and \
                path != locations.sessions_dir() / f"{convs[-2].id}.jsonl":
            gate.wait(10)  # the older ones take long to read
        real_add(self, path, st)  # type: ignore[arg-type]

    monkeypatch.setattr(search_index.SearchIndex, "_add", add)
    app = make_app(FakeBackend())
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        await pilot.press("f5")
        await until(pilot, lambda: isinstance(app.screen, SessionsScreen) and len(rows(app)) == 2)
        status = app.screen.query_one("#sessions-status", Static)
        assert "Indexing sessions… 2/6" in str(status.render())
        assert list(rows(app)) == [convs[-1].id, convs[-2].id]  # the newest, already
        gate.set()
        await until(pilot, lambda: len(rows(app)) == 6)
        assert "6 sessions" in str(status.render())

"""Terminal input: what real terminals send (parser), pastes, and the keys that survive tmux.

The parser tests feed `InputParser` the exact text a terminal (or tmux) writes; the Pilot
tests check the app's side: edit-last asks first, PgUp scrolls the transcript while the
prompt has focus, a paste keeps its CR line ends, and Textual's own quit action asks during
a reply. tests/e2e/test_real_terminal.py runs the same keys through a real tmux client.
"""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st
from textual import events
from textual.drivers.linux_driver import LinuxDriver
from textual.message import Message

from llama_tui.text import PasteCleaner, clean, clean_paste, has_controls
from llama_tui.ui.screens.confirm import ConfirmScreen
from llama_tui.ui.terminal_input import InputDriver, InputParser, input_driver
from tests.ui.fakes import FakeBackend
from tests.ui.helpers import make_app, ready, reply_done, send, shown_text, until


def parse(*chunks: str) -> list[tuple[str, str]]:
    """(kind, key or pasted text) for each event `InputParser` makes of `chunks`."""
    parser = InputParser()
    out: list[Message] = []
    for chunk in chunks:
        out += parser.feed(chunk)
    out += parser.feed("")
    return [("paste", e.text) if isinstance(e, events.Paste) else
            ("key", e.key) if isinstance(e, events.Key) else (type(e).__name__, "")
            for e in out]


# -- the parser --------------------------------------------------------------------------


def test_esc_cr_is_alt_enter_not_enter() -> None:
    # tmux and most terminals send Alt+Enter as ESC CR; stock Textual 8 reports "enter".
    assert parse("a\x1b\rb") == [("key", "a"), ("key", "alt+enter"), ("key", "b")]
    assert parse("\r") == [("key", "enter")]
    assert parse("\x1b") == [("key", "escape")]  # a lone Esc still stops a reply


def test_paste_with_cr_line_ends_keeps_its_lines() -> None:
    assert parse("\x1b[200~alpha\rbeta\r\ngamma\x1b[201~") == [("paste", "alpha\nbeta\ngamma")]


def test_escape_sequence_in_a_paste_is_dropped_in_place() -> None:
    # Stock Textual emits "[31mcolored..." as key presses before the paste: reordered.
    got = parse("x\x1b[200~plain \x1b[31mcolored\x1b[0m text\x1b[201~y")
    assert got == [("key", "x"), ("paste", "plain colored text"), ("key", "y")]


def test_bel_in_a_paste_is_never_a_key() -> None:
    # After an ESC in the paste, stock Textual turns a BEL into a Ctrl+G key (continue).
    for text in ("ring\x07bell", "\x1b[1mring\x07bell", "\x1b]0;title\x07bell"):
        got = parse(f"\x1b[200~{text}\x1b[201~")
        assert got == [("paste", clean(text))], text
        assert ("key", "ctrl+g") not in got


def test_markers_split_across_reads() -> None:
    assert parse("\x1b[20", "0~al\r", "\nbe\x1b", "[201", "~z") == [
        ("paste", "al\nbe"), ("key", "z")]
    assert parse("\x1b[200~a\x1b", "[3", "1mb\x1b[201~") == [("paste", "ab")]


@given(st.text(alphabet="ab\r\n\x07\x1b[]31m;~\\", max_size=40), st.data())
def test_paste_cleaner_any_split(text: str, data: st.DataObject) -> None:
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=4)))
    pieces = [text[i:j] for i, j in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    c = PasteCleaner()
    joined = "".join(c.feed(p) for p in pieces) + c.flush()
    assert joined == clean_paste(text)
    assert not has_controls(joined) and "\r" not in joined
    assert joined.count("\n") <= text.count("\n") + text.count("\r")


def test_the_app_reads_keys_with_the_mended_parser() -> None:
    assert issubclass(InputDriver, LinuxDriver)
    assert input_driver(LinuxDriver) is InputDriver
    assert make_app().get_driver_class() is InputDriver


# -- the app -----------------------------------------------------------------------------

pilot_test = pytest.mark.asyncio


@pilot_test
async def test_paste_event_with_cr_keeps_lines() -> None:
    app = make_app(FakeBackend())
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        app.chat.prompt.post_message(events.Paste("one\rtwo\r\nthree\x1b[31m!"))
        await until(pilot, lambda: app.chat.prompt.text)
        assert app.chat.prompt.text == "one\ntwo\nthree!"


@pilot_test
async def test_edit_last_is_ctrl_t_and_asks_first() -> None:
    app = make_app(FakeBackend(replies=[["a1"], ["a2"]]))
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        for prompt in ("q1", "q2 with typo"):
            await send(pilot, prompt)
            await reply_done(pilot)
        await pilot.press("ctrl+b")  # tmux's prefix: not ours any more
        assert isinstance(app.screen, type(app.screen_stack[0])) and len(app.screen_stack) == 1
        await pilot.press("ctrl+t")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")  # keep: nothing removed
        assert len(app.chat_state.conversation.messages) == 4 and app.chat.prompt.text == ""
        app.chat.prompt.load_text("a draft")
        await pilot.press("ctrl+t")
        await pilot.press("y")
        await until(pilot, lambda: len(app.chat_state.conversation.messages) == 2)
        await pilot.pause()
        assert app.chat.prompt.text == "q2 with typo"
        assert "q2 with typo" not in shown_text(app)
        assert app.chat.prompt.prompt_history[-1] == "a draft"  # Up brings the draft back


@pilot_test
async def test_pgup_scrolls_the_transcript_while_typing() -> None:
    app = make_app(FakeBackend(replies=[["line\n\n" * 30]]))
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await send(pilot, "long please")
        await reply_done(pilot)
        t = app.chat.transcript
        await until(pilot, lambda: t.max_scroll_y > 10 and t.scroll_y == t.max_scroll_y)
        app.chat.prompt.load_text("typing\nmore")
        assert app.chat.prompt.has_focus
        bottom = t.scroll_y
        await pilot.press("pageup")
        await until(pilot, lambda: t.scroll_y < bottom)
        assert app.chat.prompt.has_focus and app.chat.prompt.text == "typing\nmore"
        await pilot.press("ctrl+home")
        await until(pilot, lambda: t.scroll_y == 0)
        await pilot.press("pagedown")
        await until(pilot, lambda: t.scroll_y > 0)
        await pilot.press("ctrl+end")
        await until(pilot, lambda: t.scroll_y == t.max_scroll_y)


@pilot_test
async def test_textual_quit_action_asks_during_a_reply() -> None:
    backend = FakeBackend(replies=[["one ", "two ", "three "]], hold_after=1)
    app = make_app(backend)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await send(pilot, "go")
        assert await asyncio.to_thread(backend.held.wait, 10)
        await app.run_action("quit")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen) and app.is_running
        await pilot.press("n")
        await pilot.press("escape")
        await reply_done(pilot)

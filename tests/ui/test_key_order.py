"""Keys and pastes that arrive in one read are applied in order (Textualize/textual#6605).

Each test hands the app a burst the way the real driver does: `InputParser` turns the bytes
of one read into events and all of them are queued before the app handles any (Pilot's
`press` would wait between keys and hide the bug). Stock Textual 8 runs Backspace, Delete
and the arrows only after the characters that followed them.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from textual.pilot import Pilot
from textual.widgets import Input, TextArea

from llama_tui.ui.terminal_input import InputParser
from tests.ui.fakes import FakeBackend
from tests.ui.helpers import make_app, ready, until

pytestmark = pytest.mark.asyncio

BS, DEL, LEFT, HOME = "\x7f", "\x1b[3~", "\x1b[D", "\x1b[H"


def paste(text: str) -> str:
    return f"\x1b[200~{text}\x1b[201~"


def burst(pilot: Pilot[int], data: str) -> None:
    """Queue every event of one terminal read at once, as the driver's input thread does."""
    driver = pilot.app._driver
    assert driver is not None
    for event in InputParser().feed(data):
        driver.process_message(event)


async def settles_at(pilot: Pilot[int], get: Callable[[], str], expected: str) -> None:
    """`get()` reaches `expected` and stays there once everything queued is handled."""
    try:
        await until(pilot, lambda: get() == expected)
    finally:  # on a timeout too: the assertion shows the text it got
        await pilot.pause()
        assert get() == expected


@pytest.mark.parametrize(("data", "expected"), [
    ("abc" + BS + "X", "abX"),
    ("ab" + BS + paste("Z"), "aZ"),
    ("draft" + BS * 5 + paste("pasted text"), "pasted text"),
    ("abc" + LEFT + "X", "abXc"),
    ("abc" + LEFT * 2 + DEL + "X", "aXc"),
    ("bc" + HOME + "a", "abc"),
])
async def test_prompt_input_applies_a_burst_in_order(data: str, expected: str) -> None:
    app = make_app(FakeBackend())
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        prompt = app.chat.prompt
        assert prompt.has_focus
        burst(pilot, data)
        await settles_at(pilot, lambda: prompt.text, expected)


async def test_backspace_then_paste_after_earlier_typing() -> None:
    # The walk's case: "ab" already typed, then Backspace and a paste in one read.
    app = make_app(FakeBackend())
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        prompt = app.chat.prompt
        burst(pilot, "ab")
        await settles_at(pilot, lambda: prompt.text, "ab")
        burst(pilot, BS + paste("Z"))
        await settles_at(pilot, lambda: prompt.text, "aZ")


async def test_settings_panel_fields_apply_a_burst_in_order() -> None:
    app = make_app(FakeBackend())
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await pilot.press("f2")
        panel = app.chat.panel
        field = panel.query_one("#sp-temperature", Input)
        await until(pilot, lambda: app.focused is field)
        field.value = "0.2"
        field.cursor_position = len(field.value)
        burst(pilot, BS + "5")
        await settles_at(pilot, lambda: field.value, "0.5")
        burst(pilot, "8" + BS + "9")
        await settles_at(pilot, lambda: field.value, "0.59")

        system = panel.query_one("#sp-system", TextArea)
        system.focus()
        await until(pilot, lambda: app.focused is system)
        burst(pilot, "abc" + BS + "X" + LEFT + "Y")
        await settles_at(pilot, lambda: system.text, "abYX")


async def test_dialog_fields_apply_a_burst_in_order() -> None:
    # The model picker's field; the save dialog and the session title use the same class.
    app = make_app(FakeBackend())
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await pilot.press("f4")
        field = app.screen.query_one("#spec", Input)
        await until(pilot, lambda: app.focused is field)
        field.value = "spec"
        field.cursor_position = len(field.value)
        burst(pilot, "abc" + BS + "X" + LEFT * 2 + DEL)
        await settles_at(pilot, lambda: field.value, "specaX")

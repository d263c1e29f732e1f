"""End to end: keys and pastes sent in one write reach the text fields in order.

A terminal (or tmux, or a laggy SSH link) hands the app a Backspace or an arrow in the same
read as the text around it. Stock Textual 8 applies those editing keys after the characters
that follow them (Textualize/textual#6605); `llama_tui.ui.widgets.ordered_input` keeps the
order. Each test ends with a key typed on its own: once that one shows, everything sent
before it has been handled, so the text seen is the settled one.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.helpers import E2E_MARKS
from tests.e2e.terminal_rig import KEYS, PASTE_END, PASTE_START, TerminalRig, running_app
from tests.e2e.test_real_terminal import UI_TIMEOUT, prompt_box

pytestmark = E2E_MARKS

BS = KEYS["backspace"]


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[TerminalRig]:
    """The demo model in a real-terminal rig, bracketed paste switched on by the app."""
    with running_app(tmp_path, "--model", "demo") as (rig, _home):
        rig.until("bracketed paste mode", rig.bracketed_paste_on, 20)
        yield rig


def settled_prompt(rig: TerminalRig, expected: str) -> None:
    """The prompt shows `expected` once a key typed afterwards has landed after it."""
    rig.type("!")
    screen = rig.wait_for(lambda s: prompt_box(s).endswith("!"), UI_TIMEOUT)
    assert prompt_box(screen) == expected + "!"


def test_backspace_in_a_burst_applies_in_place(rig: TerminalRig) -> None:
    rig.write(b"abc" + BS + b"X")
    settled_prompt(rig, "abX")


def test_left_arrow_in_a_burst_applies_in_place(rig: TerminalRig) -> None:
    rig.write(b"abc" + KEYS["left"] + b"X" + KEYS["end"])
    settled_prompt(rig, "abXc")


def test_backspace_then_paste_in_one_write(rig: TerminalRig) -> None:
    rig.type("ab")
    rig.wait_for(lambda s: prompt_box(s) == "ab", UI_TIMEOUT)
    rig.write(BS + PASTE_START + b"Z" + PASTE_END)
    settled_prompt(rig, "aZ")


def test_backspaces_before_a_paste_do_not_eat_it(rig: TerminalRig) -> None:
    rig.write(b"draft" + BS * 5 + PASTE_START + b"line one\rline two end" + PASTE_END)
    settled_prompt(rig, "line one\nline two end")


def temperature(screen: str) -> str:
    """The settings panel's Temperature field as drawn."""
    line = next(ln for ln in screen.splitlines() if "│ Temperature " in ln)
    return line.split("│ Temperature ", 1)[1].strip(" │")


def test_settings_field_applies_a_burst_in_order(rig: TerminalRig) -> None:
    rig.key("f2")  # opens the panel on Temperature, its text selected
    value = temperature(rig.wait_for(lambda s: "│ Temperature " in s, UI_TIMEOUT))
    assert value
    rig.write(KEYS["end"] + BS + b"5")  # End drops the selection: replace the last digit
    rig.type("!")
    screen = rig.wait_for(lambda s: temperature(s).endswith("!"), UI_TIMEOUT)
    assert temperature(screen) == value[:-1] + "5!"

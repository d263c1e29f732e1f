"""End to end through a real terminal: the bytes a terminal sends, parsed by tmux and the app.

Each test plays the terminal in `terminal_rig.TerminalRig`: llama-tui on the demo model in a
default-config tmux (prefix Ctrl+B), with a real tmux client attached on a pty the test
writes to. What the model was sent is read back from the session's journal.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from llama_tui.session.journal import parse_journal
from llama_tui.session.transcript import Message
from tests.e2e.helpers import E2E_MARKS, REPLY_TIMEOUT, exited, ready
from tests.e2e.terminal_rig import TerminalRig, running_app

pytestmark = E2E_MARKS

REPLY_FOOTER = " tokens · "  # "20 tokens · 27.7 tok/s": under a finished reply
YOU = "╭─ you"  # the top of a user turn
UI_TIMEOUT = 30.0  # generous: the app may share two cores with a busy machine


@pytest.fixture
def app(tmp_path: Path) -> Iterator[tuple[TerminalRig, Path]]:
    """The demo model, short replies, in a real-terminal rig; and its LLAMA_TUI_HOME."""
    with running_app(tmp_path, "--model", "demo", "--max-new-tokens", "24", "--seed", "1") as (
            rig, home):
        yield rig, home


def journal(home: Path) -> list[Message]:
    """The conversation's messages, from its journal (none before the first prompt)."""
    journals = sorted((home / "data" / "sessions").glob("*.jsonl"), key=lambda p: p.stat().st_mtime)
    data = journals[-1].read_bytes() if journals else b""
    if not data:  # not created yet, or created and not yet written
        return []
    conversation, _ = parse_journal(data, journals[-1])
    return conversation.messages


def messages(home: Path) -> list[tuple[str, str]]:
    """(role, content) of each message the model has been sent or has written."""
    return [(m.role, m.content) for m in journal(home)]


def send_and_wait(rig: TerminalRig, home: Path) -> str:
    """Enter; the screen once the reply is journaled as finished and the app is idle."""
    count = len(journal(home))

    def finished() -> bool:
        msgs = journal(home)
        return len(msgs) >= count + 2 and msgs[-1].role == "assistant" \
            and msgs[-1].status != "streaming"

    rig.key("enter")
    rig.until("the reply", finished, REPLY_TIMEOUT)
    return rig.wait_for(lambda s: REPLY_FOOTER in s and ready(s), UI_TIMEOUT)


def prompt_box(screen: str) -> str:
    """The input's text as drawn: the lines of the box above the status bar."""
    lines = screen.splitlines()
    bottom = max(i for i, ln in enumerate(lines) if ln.startswith("╰"))
    top = max(i for i, ln in enumerate(lines[:bottom]) if ln.startswith("╭"))
    return "\n".join(ln.strip("│ ") for ln in lines[top + 1:bottom])


def test_smoke_prompt_reply_quit(app: tuple[TerminalRig, Path]) -> None:
    rig, home = app
    rig.type("Say hello.")
    screen = send_and_wait(rig, home)
    assert "Say hello." in screen
    assert b"Say hello." in rig.outer_bytes()  # the client drew the pane on its terminal
    pid = rig.pane_pid()
    rig.key("ctrl+q")
    rig.until("the app to exit", lambda: rig.pane_dead() or exited(pid), 20)


def test_alt_enter_adds_a_line(app: tuple[TerminalRig, Path]) -> None:
    rig, home = app
    rig.type("first line")
    rig.key("alt+enter")  # ESC CR
    rig.type("second line")
    rig.wait_for(lambda s: prompt_box(s) == "first line\nsecond line", UI_TIMEOUT)
    screen = send_and_wait(rig, home)
    assert "│ first line" in screen and "│ second line" in screen
    assert messages(home)[0] == ("user", "first line\nsecond line")
    assert len(messages(home)) == 2  # one prompt, one reply


def test_bracketed_paste_with_cr_keeps_lines(app: tuple[TerminalRig, Path]) -> None:
    rig, home = app
    rig.paste("alpha\nbeta\ngamma")  # sent as alpha CR beta CR gamma, in ESC[200~ ESC[201~
    rig.wait_for(lambda s: prompt_box(s) == "alpha\nbeta\ngamma", UI_TIMEOUT)
    send_and_wait(rig, home)
    assert messages(home)[0] == ("user", "alpha\nbeta\ngamma")


def test_tmux_paste_buffer_keeps_lines(app: tuple[TerminalRig, Path]) -> None:
    rig, home = app
    rig.paste_buffer("one\ntwo\nthree")  # tmux turns LF into CR
    rig.wait_for(lambda s: prompt_box(s) == "one\ntwo\nthree", UI_TIMEOUT)
    send_and_wait(rig, home)
    assert messages(home)[0] == ("user", "one\ntwo\nthree")


def test_paste_with_escape_sequence_keeps_order(app: tuple[TerminalRig, Path]) -> None:
    rig, home = app
    rig.paste("plain \x1b[31mcolored\x1b[0m text")
    rig.type("!")  # typed after the paste: must land after it
    rig.wait_for(lambda s: prompt_box(s) == "plain colored text!", UI_TIMEOUT)
    send_and_wait(rig, home)
    assert messages(home)[0] == ("user", "plain colored text!")


def test_paste_with_bel_does_not_continue(app: tuple[TerminalRig, Path]) -> None:
    rig, home = app
    rig.type("Count from one to fifty.")
    send_and_wait(rig, home)  # 24 tokens at most: cut by the limit, so Ctrl+G could continue it
    first_reply = messages(home)[1]
    rig.paste("\x1b[1mbold\x07bell\x1b[0m")  # a BEL is Ctrl+G's byte
    rig.type("Z")
    rig.wait_for(lambda s: prompt_box(s) == "boldbellZ", UI_TIMEOUT)
    send_and_wait(rig, home)
    assert messages(home)[:3] == [messages(home)[0], first_reply, ("user", "boldbellZ")]


def test_ctrl_b_is_tmux_and_ctrl_t_edits_after_asking(app: tuple[TerminalRig, Path]) -> None:
    rig, home = app
    rig.type("Say hello.")
    send_and_wait(rig, home)
    # Ctrl+B is tmux's prefix; prefix Ctrl+B sends a Ctrl+B to the app, which ignores it.
    rig.key("ctrl+b")
    rig.until("tmux's prefix", lambda: rig.run("display", "-p", "#{client_prefix}").stdout
              .strip() == "1", UI_TIMEOUT)
    rig.key("ctrl+b")
    rig.type("x")
    screen = rig.wait_for(lambda s: prompt_box(s) == "x", UI_TIMEOUT)
    assert "│ Say hello." in screen and len(messages(home)) == 2
    # Ctrl+T reaches the app through tmux and asks before removing anything.
    rig.key("ctrl+t")
    rig.wait_for("Edit the last prompt?", UI_TIMEOUT)
    rig.type("n")
    screen = rig.wait_for(lambda s: "Edit the last prompt?" not in s, UI_TIMEOUT)
    assert "│ Say hello." in screen and len(messages(home)) == 2
    rig.key("ctrl+t")
    rig.wait_for("Edit the last prompt?", UI_TIMEOUT)
    rig.type("y")
    screen = rig.wait_for(lambda s: prompt_box(s) == "Say hello.", UI_TIMEOUT)
    assert YOU not in screen  # the exchange is gone from the transcript
    assert messages(home) == []


def test_pgup_from_the_input_scrolls_the_transcript(app: tuple[TerminalRig, Path]) -> None:
    rig, home = app
    rig.write(b"\n".join(b"row %d" % i for i in range(1, 41)))  # Ctrl+J: new lines
    send_and_wait(rig, home)
    rig.type("draft")  # the input has focus, with text in it
    bottom = rig.wait_for(lambda s: prompt_box(s) == "draft", UI_TIMEOUT)
    assert "row 1 " not in bottom and REPLY_FOOTER in bottom
    rig.key("pgup")
    moved = rig.wait_for(lambda s: s.splitlines()[:5] != bottom.splitlines()[:5], UI_TIMEOUT)
    assert REPLY_FOOTER not in moved and prompt_box(moved) == "draft"
    rig.key("ctrl+home")
    rig.wait_for(lambda s: "│ row 1 " in s, UI_TIMEOUT)
    rig.key("ctrl+end")
    back = rig.wait_for(lambda s: REPLY_FOOTER in s, UI_TIMEOUT)
    assert prompt_box(back) == "draft"

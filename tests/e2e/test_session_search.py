"""Finding an old conversation through a real terminal: F5, type a word, Enter.

The installed llama-tui on the demo model in a default-config tmux (`terminal_rig`), over one
LLAMA_TUI_HOME: a first launch has two conversations, one of them with a distinctive word,
and quits; a second launch opens the browser with F5, types the word, and Enter opens that
conversation. `llama-tui --sessions WORD` finds the same one headless.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from llama_tui.session.journal import parse_journal
from llama_tui.session.transcript import Conversation
from tests.e2e.helpers import (
    E2E_MARKS,
    LOAD_TIMEOUT,
    REPLY_TIMEOUT,
    app_command,
    e2e_home,
    exited,
    llama_tui_command,
    ready,
)
from tests.e2e.terminal_rig import TerminalRig

pytestmark = E2E_MARKS

WORD = "Zanzibarite"  # in no reply the demo model would write by itself
UI_TIMEOUT = 30.0


@contextlib.contextmanager
def launch(home: Path) -> Iterator[TerminalRig]:
    rig = TerminalRig(
        app_command(home, "--model", "demo", "--max-new-tokens", "12"), width=100, height=30
    )
    try:
        rig.start()
        rig.wait("the model to load", ready, LOAD_TIMEOUT)
        yield rig
    finally:
        rig.close()


def sessions(home: Path) -> dict[str, Conversation]:
    out = {}
    for path in (home / "data" / "sessions").glob("*.jsonl"):
        with contextlib.suppress(Exception):
            out[path.stem] = parse_journal(path.read_bytes(), path)[0]
    return out


def chat(rig: TerminalRig, home: Path, prompt: str) -> None:
    """Send `prompt` and wait until some session's journal has its finished reply."""
    rig.type(prompt)
    rig.key("enter")

    def answered() -> bool:
        for conv in sessions(home).values():
            msgs = conv.messages
            if len(msgs) >= 2 and msgs[-2].content == prompt and msgs[-1].stats is not None:
                return True
        return False

    rig.until("the reply", answered, REPLY_TIMEOUT)
    rig.wait_for(ready, UI_TIMEOUT)


def quit_app(rig: TerminalRig) -> None:
    pid = rig.pane_pid()
    rig.key("ctrl+q")
    rig.until("the app to exit", lambda: rig.pane_dead() or exited(pid), 30)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return e2e_home(tmp_path)


def test_f5_search_opens_the_session_with_the_word(home: Path) -> None:
    with launch(home) as rig:
        chat(rig, home, f"What is {WORD}? Answer briefly.")
        chat(rig, home, "Thank you.")
        rig.type("/clear")
        rig.key("enter")
        rig.wait_for("New conversation", UI_TIMEOUT)
        chat(rig, home, "Name a colour.")
        quit_app(rig)
    found = [
        sid for sid, conv in sessions(home).items() if any(WORD in m.content for m in conv.messages)
    ]
    assert len(found) == 1 and len(sessions(home)) == 2
    target = found[0]

    with launch(home) as rig:
        rig.key("f5")
        rig.wait_for("Search:", UI_TIMEOUT)
        rig.wait_for("2 sessions", UI_TIMEOUT)
        rig.type(WORD.lower())
        screen = rig.wait_for("1 session ·", UI_TIMEOUT)  # filtered as typed
        assert f"What is {WORD}?" in screen
        rig.key("enter")
        # The browser closed and the match is in view (scrolled to: the top of the view).
        screen = rig.wait_for(
            lambda text: "Search:" not in text and f"What is {WORD}? Answer briefly." in text,
            UI_TIMEOUT,
        )
        assert "Name a colour." not in screen  # not the other session
        # What was opened is that session: the next message goes into its journal.
        chat(rig, home, "One more question.")
        assert [m.content for m in sessions(home)[target].messages][-2] == "One more question."
        quit_app(rig)

    # Headless, the same search finds the same session.
    done = subprocess.run(
        [*llama_tui_command(), "--sessions", WORD],
        env={"LLAMA_TUI_HOME": str(home), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    (line,) = done.stdout.splitlines()
    assert line.startswith(target + "\t") and line.endswith(f"What is {WORD}? Answer briefly.")

"""End to end: the installed `llama-tui` on the bundled demo model, driven in tmux at 80x24.

Ask a question and watch the reply stream, stop a long reply with Esc, change the
temperature in the settings panel, `/save` to a file, quit; assert on `capture-pane` and on
the saved file. Runs on a private tmux server (`-L`), so the user's tmux is never touched.

LLAMA_TUI_HOME is a temporary folder, except that its `cache/` links to the real llama-tui
cache (see `helpers.py`: the demo GGUF is converted once). `E2E_CAPTURE_DUMP=FILE` writes
every distinct screen seen (form-feed separated) for a human to look at.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.helpers import (
    E2E_MARKS,
    LOAD_TIMEOUT,
    REPLY_TIMEOUT,
    Tmux,
    app_command,
    e2e_home,
    exited,
    status_line,
)

pytestmark = E2E_MARKS


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[tuple[Tmux, Path]]:
    home = e2e_home(tmp_path)
    # Short first replies keep the test quick; the long reply raises the limit with /set.
    t = Tmux.start(app_command(home, "--model", "demo", "--max-new-tokens", "64", "--seed", "1"))
    try:
        yield t, home
    finally:
        t.close()


def test_chat_stop_settings_save_quit(tmux: tuple[Tmux, Path], tmp_path: Path) -> None:
    t, home = tmux
    # Paints at once, then loads the model in the background.
    t.wait("first paint", lambda s: "Type a message" in s or "loading" in s, 30)
    t.wait("the model to load", lambda s: status_line(s).lstrip().startswith("ready"),
           LOAD_TIMEOUT)

    # Ask a question: the reply streams (seen mid-way), then stats show.
    t.text("What is the capital of France?")
    t.keys("Enter")
    t.wait("generating", lambda s: "generating" in status_line(s), 30)
    t.wait("the reply", lambda s: "tok/s" in s
           and status_line(s).lstrip().startswith("ready"), REPLY_TIMEOUT)
    streamed = [s for s in t.snapshots if "generating" in status_line(s)]
    assert streamed, "never saw the reply while it was generated"
    screen = t.capture()
    assert "What is the capital of France?" in screen
    assert "assistant" in screen

    # A long reply, stopped with Esc mid-stream.
    t.text("/set max_new_tokens 1000")
    t.keys("Enter")
    t.wait("the setting", lambda s: "Applies from the next reply" in s, 10)
    t.text("Write a very long story about a dragon who learns to cook, in ten chapters.")
    t.keys("Enter")
    t.wait("a long reply to start", lambda s: "generating" in status_line(s), 30)
    time.sleep(1.5)  # let some text stream (a real terminal; nothing to wait on)
    t.keys("Escape")
    screen = t.wait("the stopped marker", lambda s: "■ stopped" in s, 30)
    assert "stopped" in status_line(screen)

    # Temperature in the settings panel (F2 focuses it; typing replaces the value).
    t.keys("F2")
    t.wait("the settings panel", lambda s: "Settings" in s and "Temperature" in s, 10)
    t.text("0.3")
    t.wait("the new value", lambda s: any("Temperature" in ln and "0.3" in ln
                                          for ln in s.splitlines()), 10)
    t.keys("F2")
    t.wait("the panel to close", lambda s: "Temperature" not in s, 10)
    remembered = home / "config" / "remembered.json"
    assert json.loads(remembered.read_text())["fields"]["temperature"]["value"] == 0.3

    # Save, then quit.
    target = tmp_path / "chat.md"
    t.text(f"/save {target}")
    t.keys("Enter")
    deadline = time.monotonic() + 20
    while not target.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    saved = target.read_text()
    assert "What is the capital of France?" in saved
    assert "dragon who learns to cook" in saved
    assert "stopped" in saved.lower()
    assert "SmolLM2" in saved
    pid = t.run("display", "-p", "-t", t.session, "#{pane_pid}").stdout.strip()
    t.keys("C-q")
    deadline = time.monotonic() + 20
    while t.pane_status() is None and not exited(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    # tmux sometimes leaves the exited app a zombie for a while before marking the pane
    # dead; either way the process is gone, and when tmux knows the status it must be 0.
    assert t.pane_status() in (0, None) and (t.pane_status() == 0 or exited(pid)), (
        t.diagnose(home))

"""Copy and save end to end: the installed llama-tui in a real tmux with a real client.

What reaches the user's clipboard is what tmux sends to the outer terminal (the rig reads
those bytes); what tmux keeps is its paste buffer (`show-buffer`). Each tmux configuration
users commonly have gets a test: the default (`-f /dev/null`), `set-clipboard on`, an outer
terminal tmux cannot set the clipboard of (its `Ms` capability removed), and that terminal
with `allow-passthrough on`. Also: Ctrl+S's dialog saves into the default folder, and a
headless `--resume --prompt` turn shows up in the next TUI `--resume`.
"""

from __future__ import annotations

import base64
import contextlib
import re
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from llama_tui.session.journal import SessionLoadError, parse_journal
from llama_tui.session.transcript import Message
from llama_tui.text import clean
from tests.e2e.helpers import (
    E2E_MARKS,
    LOAD_TIMEOUT,
    REPLY_TIMEOUT,
    app_command,
    e2e_home,
    llama_tui_command,
    ready,
)
from tests.e2e.terminal_rig import TerminalRig

pytestmark = E2E_MARKS

DEMO = ("--model", "demo", "--max-new-tokens", "12", "--seed", "1", "--greedy")
OSC52 = re.compile(rb"\x1b\]52;[a-z]*;([A-Za-z0-9+/=]*)(?:\x07|\x1b\\)")
NO_MS = ("terminal-overrides", "xterm*:Ms@")  # an outer terminal tmux cannot set clipboards of


@contextlib.contextmanager
def tmux_app(tmp_path: Path, *args: str, options: Sequence[tuple[str, str]] = (),
             home: Path | None = None) -> Iterator[tuple[TerminalRig, Path]]:
    """llama-tui in a rig, knowing it runs inside tmux (`app_command` hides $TMUX from the
    app; copying must see it, as it does in a user's tmux)."""
    home = home or e2e_home(tmp_path)
    command = app_command(home, *args).replace(" -u TMUX ", " ", 1)
    rig = TerminalRig(command, width=100, height=30, options=options)
    try:
        rig.start()
        rig.wait("the model to load", ready, LOAD_TIMEOUT)
        yield rig, home
    finally:
        rig.close()


def journal(home: Path) -> list[Message]:
    """The latest session's messages ([] until its journal has a record)."""
    files = sorted((home / "data" / "sessions").glob("*.jsonl"), key=lambda p: p.stat().st_mtime)
    try:
        return parse_journal(files[-1].read_bytes(), files[-1])[0].messages if files else []
    except SessionLoadError:  # created, first record not written yet
        return []


def chat(rig: TerminalRig, home: Path, prompt: str) -> str:
    """Send `prompt`; the finished reply's text as journaled."""
    count = len(journal(home))
    rig.type(prompt)
    rig.key("enter")

    def finished() -> bool:
        msgs = journal(home)
        # A reply still streaming reads back as "interrupted" (what a crash would leave).
        return len(msgs) >= count + 2 and msgs[-1].role == "assistant" \
            and not msgs[-1].interrupted

    rig.until("the reply", finished, REPLY_TIMEOUT)
    rig.wait_for(ready, 30)
    reply = journal(home)[-1]
    assert reply.role == "assistant" and reply.content.strip()
    return reply.content


def toasts(screen: str) -> str:
    """The text of the toasts on the screen, one string: a toast's lines start after its
    "▌" edge and wrap mid-sentence, so they are rejoined here."""
    parts = [ln.rsplit("\u258c", 1)[1] for ln in screen.splitlines() if "\u258c" in ln]
    return " ".join(re.sub(r"[\u2500-\u259f]", " ", " ".join(parts)).split())


def copied(rig: TerminalRig, since: int) -> list[str]:
    """The texts of OSC 52 sequences tmux sent to the outer terminal after byte `since`."""
    return [base64.b64decode(m).decode() for m in OSC52.findall(rig.outer_bytes()[since:])]


def copy_reply(rig: TerminalRig) -> int:
    """Press Ctrl+Y; the outer-terminal offset before it."""
    before = len(rig.outer_bytes())
    rig.key("ctrl+y")
    return before


def test_default_tmux_buffer_and_outer_clipboard(tmp_path: Path) -> None:
    with tmux_app(tmp_path, *DEMO) as (rig, home):
        reply = clean(chat(rig, home, "What is the capital of France?"))
        before = copy_reply(rig)
        rig.until("the copy in a tmux buffer", lambda: rig.show_buffer() == reply, 20)
        rig.wait_outer(OSC52, 20)
        assert copied(rig, before) == [reply]
        screen = rig.wait_for(lambda s: "through tmux" in toasts(s), 20)
        assert "to your clipboard through tmux" in toasts(screen)


def test_set_clipboard_on(tmp_path: Path) -> None:
    with tmux_app(tmp_path, *DEMO, options=[("set-clipboard", "on")]) as (rig, home):
        reply = clean(chat(rig, home, "Hello"))
        before = copy_reply(rig)
        rig.until("the copy in a tmux buffer", lambda: rig.show_buffer() == reply, 20)
        rig.wait_outer(OSC52, 20)
        assert copied(rig, before) == [reply]


def test_terminal_without_clipboard_names_the_option(tmp_path: Path) -> None:
    with tmux_app(tmp_path, *DEMO, options=[NO_MS]) as (rig, home):
        reply = clean(chat(rig, home, "Hello"))
        before = copy_reply(rig)
        rig.until("the copy in a tmux buffer", lambda: rig.show_buffer() == reply, 20)
        screen = rig.wait_for(lambda s: "terminal-features" in toasts(s), 20)
        text = toasts(screen)
        assert "tmux paste buffer" in text and "allow-passthrough on" in text
        assert "set -as terminal-features ',xterm-256color:clipboard'" in text
        assert copied(rig, before) == []  # nothing reached the outer terminal


def test_allow_passthrough_reaches_the_outer_terminal(tmp_path: Path) -> None:
    options = [NO_MS, ("allow-passthrough", "on")]
    with tmux_app(tmp_path, *DEMO, options=options) as (rig, home):
        reply = clean(chat(rig, home, "Hello"))
        before = copy_reply(rig)
        rig.wait_outer(OSC52, 20)
        assert copied(rig, before) == [reply]
        assert rig.show_buffer() == reply  # and tmux keeps it too
        rig.wait_for(lambda s: "passthrough" in toasts(s), 20)


def test_ctrl_s_dialog_saves_into_the_default_folder(tmp_path: Path) -> None:
    with tmux_app(tmp_path, *DEMO) as (rig, home):
        reply = chat(rig, home, "What is the capital of France?")
        rig.key("ctrl+s")
        name = f"{time.strftime('%Y-%m-%d')}-what-is-the-capital-of-france.md"
        expected = home / "saved" / name
        # The input shows the end of the path (the name); the folder is written above it.
        screen = rig.wait_for(lambda s: "Save the conversation" in s and name in s, 20)
        assert "Default folder:" in screen
        rig.key("enter")
        rig.until("the file", expected.exists, 20)
        assert clean(reply).strip()[:20] in expected.read_text()
        # A long path wraps anywhere: compare without spaces.
        rig.wait_for(lambda s: f"Savedto{expected}" in toasts(s).replace(" ", ""), 20)


def test_headless_resume_turn_shows_in_the_next_tui_resume(tmp_path: Path) -> None:
    home = e2e_home(tmp_path)
    with tmux_app(tmp_path, *DEMO, home=home) as (rig, _):
        chat(rig, home, "Name a colour.")
        rig.key("ctrl+q")
        rig.until("the app to quit", rig.pane_dead, 30)
    env = {"LLAMA_TUI_HOME": str(home), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([*llama_tui_command(), *DEMO, "--resume", "--prompt", "And then?"],
                          capture_output=True, text=True, env=env, timeout=REPLY_TIMEOUT * 2)
    assert done.returncode == 0, done.stderr
    assert len(list((home / "data" / "sessions").glob("*.jsonl"))) == 1
    assert [m.content for m in journal(home)][2] == "And then?"
    with tmux_app(tmp_path, *DEMO, "--resume", home=home) as (rig, _):
        answer = clean(done.stdout).split()[0]
        screen = rig.wait_for(lambda s: "And then?" in s and "4 messages" in s, 30)
        assert "Name a colour." in screen and answer in screen.split("And then?")[1]


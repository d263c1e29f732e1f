"""Settings across launches, through a real terminal: what a launch remembers for the next.

Each test starts the installed llama-tui on the demo model several times over one
LLAMA_TUI_HOME (`terminal_rig.TerminalRig`: default-config tmux, a real client on a pty),
quits it with Ctrl+Q, edits config.toml in between as a user would, and checks the settings
in use on the screen (`/set` lists them), in the session journal and in remembered.json.
"""

from __future__ import annotations

import contextlib
import json
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
    ready,
)
from tests.e2e.terminal_rig import TerminalRig

pytestmark = E2E_MARKS

LISTED = "Change one with /set KEY VALUE"  # the last line of the /set listing


@contextlib.contextmanager
def launch(home: Path, *args: str) -> Iterator[TerminalRig]:
    """llama-tui with `args` over `home`, loaded and ready; killed afterwards if still up."""
    rig = TerminalRig(app_command(home, "--model", "demo", *args), width=110, height=40)
    try:
        rig.start()
        rig.wait("the model to load", ready, LOAD_TIMEOUT)
        yield rig
    finally:
        rig.close()


def command(rig: TerminalRig, text: str, shows: str) -> str:
    """Type a command, Enter, and wait until the screen shows `shows`."""
    rig.type(text)
    rig.key("enter")
    return rig.wait_for(shows, 30)


def quit_app(rig: TerminalRig) -> None:
    pid = rig.pane_pid()
    rig.key("ctrl+q")
    try:
        rig.until("the app to exit", lambda: rig.pane_dead() or exited(pid), 30)
    except AssertionError as e:
        raise AssertionError(f"{e}; screen:\n{rig.screen()}") from None
    assert rig.pane_status() in (0, None)


def conversation(home: Path) -> Conversation:
    """The latest session, as its journal records it."""
    journals = sorted((home / "data" / "sessions").glob("*.jsonl"),
                      key=lambda p: p.stat().st_mtime)
    conv, _ = parse_journal(journals[-1].read_bytes(), journals[-1])
    return conv


def reply(rig: TerminalRig, home: Path, prompt: str) -> Conversation:
    """Send `prompt`; the conversation once the reply is journaled as finished."""
    rig.type(prompt)
    rig.key("enter")

    def finished() -> bool:
        with contextlib.suppress(IndexError, OSError):
            msgs = conversation(home).messages
            # The stats arrive with the end of the reply.
            return len(msgs) >= 2 and msgs[-1].role == "assistant" \
                and msgs[-1].stats is not None
        return False

    rig.until("the reply", finished, REPLY_TIMEOUT)
    rig.wait_for(ready, 30)
    return conversation(home)


def remembered(home: Path) -> dict[str, dict[str, object]]:
    data = json.loads((home / "config" / "remembered.json").read_text(encoding="utf-8"))
    fields: dict[str, dict[str, object]] = data["fields"]
    return fields


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return e2e_home(tmp_path)


def test_config_edit_after_a_set_takes_effect_and_the_set_stays(home: Path) -> None:
    with launch(home) as rig:
        command(rig, "/set temperature 0.3", "Applies from the next reply")
        quit_app(rig)
    assert remembered(home) == {"temperature": {"value": 0.3}}
    (home / "config" / "config.toml").write_text(
        'system_prompt = "Answer in one word."\n[generation]\nmax_new_tokens = 30\n')
    with launch(home) as rig:
        screen = command(rig, "/set", LISTED)
        assert "temperature = 0.3  (yours)" in screen
        assert "max_new_tokens = 30" in screen
        assert "system_prompt = 'Answer in one word.'" in screen
        conv = reply(rig, home, "Name a colour.")
        quit_app(rig)
    assert conv.system_prompt == "Answer in one word."
    assert (conv.settings["temperature"], conv.settings["max_new_tokens"]) == (0.3, 30)
    stats = conv.messages[-1].stats or {}
    assert 0 < int(stats["generated_tokens"]) <= 30


def test_flag_prompt_and_resumed_session_are_not_remembered(home: Path) -> None:
    with launch(home, "--system", "Flag prompt.", "--max-new-tokens", "8") as rig:
        conv = reply(rig, home, "Hello.")
        assert conv.system_prompt == "Flag prompt."
        quit_app(rig)
    with launch(home, "--resume") as rig:
        rig.wait_for("Resumed session", 30)
        command(rig, "/set top_p 0.9", "Applies from the next reply")
        quit_app(rig)
    assert remembered(home) == {"top_p": {"value": 0.9}}
    with launch(home) as rig:
        screen = command(rig, "/set", LISTED)
        assert "system_prompt = ''" in screen and "Flag prompt." not in screen
        assert "top_p = 0.9  (yours)" in screen
        assert "max_new_tokens = 8" not in screen
        quit_app(rig)


def test_two_instances_at_once_keep_each_others_change(home: Path) -> None:
    with launch(home) as first, launch(home) as second:
        command(first, "/set temperature 0.3", "Applies from the next reply")
        command(second, "/set top_p 0.8", "Applies from the next reply")
        quit_app(first)  # writes temperature
        quit_app(second)  # writes top_p, keeping temperature
    assert remembered(home) == {"temperature": {"value": 0.3}, "top_p": {"value": 0.8}}
    with launch(home) as rig:
        screen = command(rig, "/set", LISTED)
        assert "temperature = 0.3  (yours)" in screen and "top_p = 0.8  (yours)" in screen
        quit_app(rig)

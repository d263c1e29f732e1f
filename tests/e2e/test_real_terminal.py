"""End to end through a real terminal: the bytes a terminal sends, parsed by tmux and the app.

Each test plays the terminal in `terminal_rig.TerminalRig`: llama-tui on the demo model in a
default-config tmux, with a real tmux client attached on a pty the test writes to.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.helpers import E2E_MARKS, REPLY_TIMEOUT, exited, ready
from tests.e2e.terminal_rig import TerminalRig, running_app

pytestmark = E2E_MARKS


@pytest.fixture
def demo_rig(tmp_path: Path) -> Iterator[TerminalRig]:
    """The demo model, short replies, in a real-terminal rig."""
    with running_app(tmp_path, "--model", "demo", "--max-new-tokens", "24", "--seed", "1") as (
            rig, _home):
        yield rig


def test_smoke_prompt_reply_quit(demo_rig: TerminalRig) -> None:
    rig = demo_rig
    rig.type("Say hello.")
    rig.key("enter")
    rig.wait_for(lambda s: "tok/s" in s and ready(s), REPLY_TIMEOUT)
    assert "Say hello." in rig.screen()
    pid = rig.pane_pid()
    rig.key("ctrl+q")
    rig.until("the app to exit", lambda: rig.pane_dead() or exited(pid), 20)
    assert b"Say hello." in rig.outer_bytes()  # the client drew the pane on its terminal

"""A 60-column real terminal (tmux, default config): every footer key and the help's columns.

At 60 columns the footer used to lose "f1 Help" off its right end and the help's long lines
wrapped to the dialog's left edge. Played through `terminal_rig`: F1 is the bytes an xterm
sends, parsed by tmux and the app.
"""

from __future__ import annotations

from pathlib import Path

from tests.e2e.helpers import E2E_MARKS
from tests.e2e.terminal_rig import running_app

pytestmark = E2E_MARKS


def test_60_columns_footer_and_help(tmp_path: Path) -> None:
    with running_app(tmp_path, "--model", "demo", width=60, height=24) as (rig, _home):
        lines = rig.screen().splitlines()
        footer = lines[-1]
        assert "f1 Help" in footer and "f2 Settings" in footer, footer
        status = lines[-2]
        assert status.lstrip().startswith("ready") and "cpu" in status, status
        rig.key("f1")
        screen = rig.wait_for("llama-tui help")
        # The wrapped half of "earlier prompts (on the first / last line)" sits under its
        # column, never at the dialog's left edge.
        help_column = next(line.index("earlier prompts") for line in screen.splitlines()
                           if "earlier prompts" in line)
        wrapped = [line for line in screen.splitlines() if "last line)" in line]
        if wrapped:  # it fits on one line when the dialog is wide enough
            assert wrapped[0].index("last line)") >= help_column, screen
        rig.key("escape")
        rig.wait_for(lambda s: "llama-tui help" not in s)

"""SVG snapshot at 60x24: every footer key through F1 Help, the status bar cut by cells."""

from __future__ import annotations

from typing import Any

from textual.pilot import Pilot

from tests.ui.fakes import FakeBackend
from tests.ui.helpers import make_app, ready, reply_done, send


def test_60_columns_snapshot(snap_compare: Any) -> None:
    async def run_before(pilot: Pilot[int]) -> None:
        await ready(pilot)
        await send(pilot, "Say hello.")
        await reply_done(pilot)
        for widget in pilot.app.query("TextArea, Input"):
            widget.cursor_blink = False  # type: ignore[attr-defined]
        await pilot.pause()

    app = make_app(FakeBackend(replies=[["Hello! How can I help you today?"]]))
    assert snap_compare(app, run_before=run_before, terminal_size=(60, 24))

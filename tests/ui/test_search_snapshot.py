"""SVG snapshot of the F5 session browser at 80x24 with search results (fixed dates and
time zone, fake backend). Regenerate with `--snapshot-update` after an intended change."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
from textual.pilot import Pilot

from llama_tui import locations
from llama_tui.session.recorder import SessionRecorder
from llama_tui.session.transcript import Conversation
from llama_tui.ui.screens.sessions import SessionsScreen
from tests.ui.fakes import FakeBackend
from tests.ui.helpers import make_app, ready, until
from tests.ui.test_snapshots import SIZE, steady

SESSIONS = [
    # (prompt, reply, model, days before the fixed "now")
    (
        "Plan a three-day trip to Lisbon",
        "Day one: Alfama and the castle.",
        "Llama-3.1-8B-Instruct",
        9,
    ),
    (
        "Why do owls hunt at night?",
        "Their eyes gather light; the prey is out.",
        "SmolLM2-135M-Instruct",
        6,
    ),
    (
        "Explain the KV cache",
        "Keys and values of earlier tokens are kept,\nso each new token "
        "only attends to the cache instead of recomputing the whole prompt.",
        "SmolLM2-135M-Instruct",
        3,
    ),
    (
        "Write a haiku about the cache",
        "Warm lines in memory / the cache remembers for us.",
        "Qwen2.5-0.5B-Instruct",
        1,
    ),
]
NOW = 1_795_000_000.0  # a fixed moment, so the dates in the rows never change


@pytest.fixture(autouse=True)
def _utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def write_sessions() -> None:
    for prompt, reply, model, days in SESSIONS:
        conv = Conversation(created=NOW - days * 86400)
        rec = SessionRecorder(conv)
        rec.model_changed({"name": model})
        rec.user_message(conv.add("user", prompt))
        rec.assistant_finished(conv.add("assistant", reply))
        rec.close()
        when = NOW - days * 86400 + 3600
        os.utime(locations.sessions_dir() / f"{conv.id}.jsonl", (when, when))


def test_search_screen_with_results(snap_compare: Any) -> None:
    write_sessions()

    async def run_before(pilot: Pilot[int]) -> None:
        app: Any = pilot.app
        await ready(pilot)
        await pilot.press("f5")
        await until(
            pilot,
            lambda: (
                isinstance(app.screen, SessionsScreen) and len(app.screen.hits) == len(SESSIONS)
            ),
        )
        await pilot.press(*"cache")
        await until(pilot, lambda: len(app.screen.hits) == 2 and app.screen.query_text == "cache")
        await steady(pilot)

    assert snap_compare(make_app(FakeBackend()), run_before=run_before, terminal_size=SIZE)

"""The status bar says "optimising" while the backend compiles in the background."""

from __future__ import annotations

import pytest

from tests.ui.fakes import FakeBackend
from tests.ui.helpers import make_app, ready, reply_done, screen_text, send, until


@pytest.mark.asyncio
async def test_status_bar_shows_optimising() -> None:
    backend = FakeBackend(replies=[["Hello"]])
    app = make_app(backend)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        assert not app.status.facts.optimising
        assert "optimising" not in screen_text(app)
        backend.optimising = True  # the engine started compiling
        await until(pilot, lambda: app.status.facts.optimising)
        await pilot.pause()
        assert "ready · optimising" in screen_text(app).splitlines()[-2]
        await send(pilot, "Hi")  # replies are served meanwhile
        await reply_done(pilot)
        assert app.chat_state.conversation.messages[-1].content == "Hello"
        backend.optimising = False  # compiled: the flag goes away
        await until(pilot, lambda: not app.status.facts.optimising)
        await pilot.pause()
        assert "optimising" not in screen_text(app)

"""The shortest path through the app: load, send, see the reply."""

from __future__ import annotations

import pytest

from tests.ui.fakes import FakeBackend
from tests.ui.helpers import make_app, ready, reply_done, screen_text, send, shown_text


@pytest.mark.asyncio
async def test_send_and_reply() -> None:
    backend = FakeBackend(replies=[["Hello", " there", "!"]])
    app = make_app(backend)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        assert app.state == "ready"
        await send(pilot, "Hi")
        await reply_done(pilot)
        msgs = app.chat_state.conversation.messages
        assert [m.role for m in msgs] == ["user", "assistant"]
        assert msgs[1].content == "Hello there!"
        assert msgs[1].status == "complete"
        assert "Hello there!" in shown_text(app)
        assert "ready" in screen_text(app).splitlines()[-2]

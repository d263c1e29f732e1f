"""Assisted decoding as the user sees it: the app on the real engine (tiny Llama), a greedy
reply to a long message (prompt lookup under `prompt_lookup = auto`), then a short one
(unassisted). The footer and the status bar name the assistance and its tokens per step."""

from __future__ import annotations

from pathlib import Path

import pytest

from llama_tui.core.params import GenerationParams
from llama_tui.engine.local.assisted import AUTO_MIN_CHARS
from tests.ui.helpers import ready, real_app, reply_done, screen_text, send, shown_text, until

pytestmark = pytest.mark.asyncio

GREEDY = GenerationParams(do_sample=False, max_new_tokens=16, temperature=0.0, logprobs=0)
LINE = "def hello():\n    return 'world'\n"


async def test_footer_and_status_bar_show_prompt_lookup(tiny_model_dir: Path) -> None:
    app = real_app(tiny_model_dir, GREEDY)
    async with app.run_test(size=(120, 30)) as pilot:
        await ready(pilot)
        assert app.state == "ready", app.model.load_error
        await send(pilot, LINE * (AUTO_MIN_CHARS // len(LINE) + 1))
        await reply_done(pilot)
        reply = app.chat_state.conversation.messages[-1]
        assert reply.stats and reply.stats["assisted"] == "prompt lookup"
        await until(pilot, lambda: "prompt lookup" in app.status.facts.assisted)
        assert "tok/step" in app.status.facts.assisted
        await until(pilot, lambda: "prompt lookup" in shown_text(app))
        assert "prompt lookup" in screen_text(app)  # the status bar, on screen

        await send(pilot, "Hello")  # short, and the cache has the prefix: unassisted
        await reply_done(pilot)
        reply = app.chat_state.conversation.messages[-1]
        assert reply.stats and not reply.stats.get("assisted")
        await until(pilot, lambda: app.status.facts.assisted == "")

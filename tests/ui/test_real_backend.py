"""The app on the real engine: LocalBackend with the tiny random Llama (no network).

Load, send, stream, stop mid-reply, stats in the status bar. A forward pre-hook on the model
blocks generation at a known step so the stop happens mid-stream, without sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from pathlib import Path
from typing import Any

import pytest

from llama_tui.core.params import GenerationParams
from tests.ui.helpers import ready, real_app, reply_done, reply_text, send, until

pytestmark = pytest.mark.asyncio

GREEDY = GenerationParams(do_sample=False, max_new_tokens=12, temperature=0.0)


async def test_load_send_stream_and_stats(tiny_model_dir: Path) -> None:
    app = real_app(tiny_model_dir, GREEDY)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        assert app.state == "ready", app.model.load_error
        assert app.status.facts.context_max and app.status.facts.device.startswith("cpu")
        await send(pilot, "Hello there")
        await reply_done(pilot)
        reply = app.chat_state.conversation.messages[-1]
        assert reply.role == "assistant" and reply.status == "complete"
        assert reply.content
        assert reply.stats and reply.stats["generated_tokens"] > 0
        await until(pilot, lambda: app.status.facts.tokens_per_s is not None
                    and app.status.facts.context_used)
        assert app.status.facts.ttft_s is not None


async def test_stop_mid_stream_keeps_partial(tiny_model_dir: Path) -> None:
    params = GREEDY.with_changes(max_new_tokens=200)
    app = real_app(tiny_model_dir, params)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        model = app.model.backend._model  # engine internals, for a deterministic mid-stream point
        # From step 6 on, each forward pass waits for a permit: the test lets the model on one
        # step at a time until some text is on screen (the random model's first tokens may be
        # an unfinished UTF-8 character, which is held back), then presses Esc mid-stream.
        steps = {"n": 0}
        permits = threading.Semaphore(0)
        waiting = threading.Event()
        finished = threading.Event()

        def pre(_module: Any, _args: Any) -> None:
            steps["n"] += 1
            if steps["n"] >= 6 and not finished.is_set():
                waiting.set()
                permits.acquire(timeout=60)  # the bound only keeps a failure from hanging

        handle = model.register_forward_pre_hook(pre)
        try:
            await send(pilot, "Count to one hundred")
            for _ in range(150):
                assert await asyncio.to_thread(waiting.wait, 30)
                waiting.clear()
                with contextlib.suppress(AssertionError):
                    await until(pilot, lambda: reply_text(app), timeout=2)
                if reply_text(app):
                    break
                permits.release()  # one more step
            assert reply_text(app)
            await pilot.press("escape")
            finished.set()
            permits.release()
            await app.workers.wait_for_complete()
        finally:
            finished.set()
            permits.release()
            handle.remove()
        reply = app.chat_state.conversation.messages[-1]
        assert reply.status == "stopped" and reply.content
        assert app.state == "stopped"
        # The engine ended and the next reply works.
        await send(pilot, "again")
        await reply_done(pilot)
        assert app.chat_state.conversation.messages[-1].status == "complete"

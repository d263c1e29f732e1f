"""Pilot tests of one turn: streaming, stop, Ctrl+C, refusals, retry / edit / continue."""

from __future__ import annotations

import asyncio

import pytest

from llama_tui.core.backend import StopReason
from llama_tui.ui.screens.confirm import ConfirmScreen
from llama_tui.ui.widgets.turns import AssistantTurn
from tests.ui.fakes import FakeBackend
from tests.ui.helpers import make_app, ready, reply_done, reply_text, send, shown_text, until

pytestmark = pytest.mark.asyncio

LONG = ["one ", "two ", "three ", "four ", "five ", "six "]


async def held(pilot, backend: FakeBackend) -> None:  # type: ignore[no-untyped-def]
    """Wait until the fake reply is blocked mid-stream and its chunks are shown."""
    assert await asyncio.to_thread(backend.held.wait, 10)
    app = pilot.app
    await until(pilot, lambda: reply_text(app))
    await pilot.pause()


async def test_escape_stops_and_keeps_partial_text() -> None:
    backend = FakeBackend(replies=[LONG, ["after"]], hold_after=2)
    app = make_app(backend)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await send(pilot, "count")
        await held(pilot, backend)
        assert app.state == "generating"
        assert app.status.facts.state == "generating"
        await pilot.press("escape")
        reply = app.chat_state.conversation.messages[-1]
        assert reply.status == "stopped"
        assert reply.content == "one two "
        assert app.state == "stopped"
        assert "■ stopped" in shown_text(app)
        # The engine saw the cancel event and ended; the next prompt works normally.
        await app.workers.wait_for_complete()
        assert not backend.running.is_set()
        backend.hold_after = None
        await send(pilot, "again")
        await reply_done(pilot)
        assert app.chat_state.conversation.messages[-1].content == "after"
        assert app.chat_state.conversation.messages[1].content == "one two "  # partial kept


async def test_ctrl_c_stops_generation_then_asks_before_quitting() -> None:
    backend = FakeBackend(replies=[LONG], hold_after=1)
    app = make_app(backend)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await send(pilot, "go")
        await held(pilot, backend)
        await pilot.press("ctrl+c")
        assert app.chat_state.conversation.messages[-1].status == "stopped"
        assert app.is_running
        await pilot.press("ctrl+c")  # idle now: asks
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        assert not isinstance(app.screen, ConfirmScreen)
        assert app.is_running
        await pilot.press("ctrl+c")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("ctrl+c")  # twice in a row quits
        await pilot.pause()
        assert not app.is_running


async def test_ctrl_q_asks_only_while_generating() -> None:
    backend = FakeBackend(replies=[LONG], hold_after=1)
    app = make_app(backend)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await send(pilot, "go")
        await held(pilot, backend)
        await pilot.press("ctrl+q")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await until(pilot, lambda: not app.is_running)
    assert app.chat_state.conversation.messages[-1].status == "stopped"


async def test_submit_while_generating_is_refused_and_text_kept() -> None:
    backend = FakeBackend(replies=[LONG], hold_after=1)
    app = make_app(backend)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await send(pilot, "first")
        await held(pilot, backend)
        await send(pilot, "second")
        assert app.chat.prompt.text == "second"
        messages = app.chat_state.conversation.messages
        assert [m.content for m in messages if m.role == "user"] == ["first"]
        assert len(backend.calls) == 1
        backend.release()
        await reply_done(pilot)
        assert app.chat_state.conversation.messages[-1].content == "".join(LONG)


async def test_retry_replaces_the_last_reply() -> None:
    backend = FakeBackend(replies=[["first answer"], ["second answer"]])
    app = make_app(backend)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await send(pilot, "question")
        await reply_done(pilot)
        await pilot.press("ctrl+r")
        await reply_done(pilot)
        contents = [m.content for m in app.chat_state.conversation.messages]
        assert contents == ["question", "second answer"]
        assert backend.calls[0].history == backend.calls[1].history
        assert len(app.chat.transcript.query(AssistantTurn)) == 1
        await send(pilot, "/retry")
        await reply_done(pilot)
        assert len(app.chat_state.conversation.messages) == 2


async def test_edit_last_prompt_puts_it_back() -> None:
    backend = FakeBackend(replies=[["a1"], ["a2"]])
    app = make_app(backend)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await send(pilot, "q1")
        await reply_done(pilot)
        await send(pilot, "q2 with typo")
        await reply_done(pilot)
        await pilot.press("ctrl+t", "y")  # Ctrl+T asks first (tests/ui/test_keys.py)
        await until(pilot, lambda: app.chat.prompt.text == "q2 with typo")
        assert [m.content for m in app.chat_state.conversation.messages] == ["q1", "a1"]
        assert "q2 with typo" not in shown_text(app)


async def test_continue_extends_a_stopped_reply() -> None:
    backend = FakeBackend(replies=[LONG, [" and more"]], hold_after=2)
    app = make_app(backend)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await send(pilot, "count")
        await held(pilot, backend)
        await pilot.press("escape")
        await app.workers.wait_for_complete()
        backend.hold_after = None
        await pilot.press("ctrl+g")
        await reply_done(pilot)
        history = backend.calls[-1].history
        assert history[-1].role == "assistant" and history[-1].content == "one two "
        reply = app.chat_state.conversation.messages[-1]
        assert reply.content == "one two  and more"
        assert reply.status == "complete"
        assert len(app.chat_state.conversation.messages) == 2


async def test_length_limit_offers_continue() -> None:
    backend = FakeBackend(replies=[["cut"]], stop_reason=StopReason.LENGTH)
    app = make_app(backend)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await send(pilot, "long please")
        await reply_done(pilot)
        assert "cut off at the length limit" in shown_text(app)
        backend.stop_reason = StopReason.EOS
        await send(pilot, "/continue")
        await reply_done(pilot)
        assert backend.calls[-1].history[-1].content == "cut"


async def test_generation_error_is_shown_and_next_prompt_works() -> None:
    from tests.ui.fakes import FakeGenerationError

    backend = FakeBackend(replies=[["partial"], ["fine"]],
                          stream_error=FakeGenerationError("Out of memory [/INST]", "Try less"))
    app = make_app(backend)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await send(pilot, "boom")
        await reply_done(pilot)
        reply = app.chat_state.conversation.messages[-1]
        assert reply.status == "error" and reply.content == "partial"
        assert "Out of memory [/INST]" in shown_text(app)
        assert app.state == "error"
        backend.stream_error = None
        await send(pilot, "again")
        await reply_done(pilot)
        assert app.chat_state.conversation.messages[-1].content == "fine"
        assert app.state == "ready"


async def test_history_recall_with_up_and_down() -> None:
    app = make_app(FakeBackend())
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        for text in ("alpha", "beta"):
            await send(pilot, text)
            await reply_done(pilot)
        await pilot.press(*"dra")
        await pilot.press("up")
        assert app.chat.prompt.text == "beta"
        await pilot.press("up")
        assert app.chat.prompt.text == "alpha"
        await pilot.press("down", "down")
        assert app.chat.prompt.text == "dra"


async def test_newline_keys_and_enter_sends() -> None:
    backend = FakeBackend()
    app = make_app(backend)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await pilot.press("a", "ctrl+j", "b")
        assert app.chat.prompt.text == "a\nb"
        await pilot.press("enter")
        await reply_done(pilot)
        assert app.chat_state.conversation.messages[0].content == "a\nb"


async def test_prompt_sent_while_loading_is_queued() -> None:
    import threading

    gate = threading.Event()
    backend = FakeBackend(load_gate=gate, replies=[["queued reply"]])
    app = make_app(backend)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert app.state == "loading"
        assert app.status.facts.state == "loading"
        await send(pilot, "early bird")
        assert app.chat.replies.queued
        assert "still loading" in shown_text(app)
        gate.set()
        await until(pilot, lambda: len(app.chat_state.conversation.messages) == 2)
        await reply_done(pilot)
        assert app.chat_state.conversation.messages[-1].content == "queued reply"


async def test_journal_has_the_prompt_before_generation_starts() -> None:
    backend = FakeBackend(replies=[LONG], hold_after=0)
    app = make_app(backend)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await send(pilot, "remember me")
        assert await asyncio.to_thread(backend.held.wait, 10)
        assert app.chat_state.recorder is not None
        assert "remember me" in app.chat_state.recorder.path.read_text()
        await pilot.press("escape")
    from llama_tui.session.store import load_conversation

    conv = load_conversation(app.chat_state.conversation.id)
    assert [m.content for m in conv.messages][:1] == ["remember me"]
    assert conv.messages[-1].status == "stopped"


async def test_retry_is_journaled() -> None:
    backend = FakeBackend(replies=[["old"], ["new"]])
    app = make_app(backend)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await send(pilot, "q")
        await reply_done(pilot)
        await pilot.press("ctrl+r")
        await reply_done(pilot)
    from llama_tui.session.store import load_conversation

    conv = load_conversation(app.chat_state.conversation.id)
    assert [m.content for m in conv.messages] == ["q", "new"]

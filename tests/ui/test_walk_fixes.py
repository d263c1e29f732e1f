"""What a newcomer's walk through the app in a real terminal found, one test per finding."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import pytest

from llama_tui.chat.footer import message_footer
from llama_tui.core.backend import StopReason
from llama_tui.session.recorder import SessionRecorder
from llama_tui.session.transcript import Conversation
from llama_tui.ui.reply_runner import ENDED_ON_ITS_OWN
from llama_tui.ui.screens.confirm import ConfirmScreen
from llama_tui.ui.screens.sessions import SessionsScreen
from tests.ui.fakes import FAKE_INFO, FakeBackend, FakeFactory
from tests.ui.helpers import (
    make_app,
    notes,
    ready,
    reply_done,
    screen_text,
    send,
    shown_text,
    until,
)

pytestmark = pytest.mark.asyncio


async def test_slash_edit_asks_first_like_ctrl_t() -> None:
    app = make_app(FakeBackend(replies=[["a1"], ["a2"]]))
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        for prompt in ("q1", "q2 with typo"):
            await send(pilot, prompt)
            await reply_done(pilot)
        await send(pilot, "/edit")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        assert len(app.chat_state.conversation.messages) == 4  # nothing removed yet
        await pilot.press("n")  # keep
        await pilot.pause()
        assert len(app.chat_state.conversation.messages) == 4
        await send(pilot, "/edit")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await until(pilot, lambda: app.chat.prompt.text == "q2 with typo")
        assert [m.content for m in app.chat_state.conversation.messages] == ["q1", "a1"]


@pytest.mark.parametrize("reason", [StopReason.EOS, StopReason.STOP_STRING])
async def test_continue_refuses_a_reply_that_ended_on_its_own(reason: StopReason) -> None:
    backend = FakeBackend(replies=[["The ", "end."]], stop_reason=reason)
    app = make_app(backend)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await send(pilot, "tell me")
        await reply_done(pilot)
        before = shown_text(app)
        for how in ("ctrl+g", "/continue"):
            if how == "ctrl+g":
                await pilot.press("ctrl+g")
            else:
                await send(pilot, how)
            await reply_done(pilot)
            assert len(backend.calls) == 1  # nothing was generated
            await until(pilot, lambda: ENDED_ON_ITS_OWN in notes(app))
            app.clear_notifications()
        assert shown_text(app) == before  # the footer's figures are the reply's own
        assert app.chat_state.conversation.messages[-1].content == "The end."


async def test_footer_after_continue_counts_the_whole_reply() -> None:
    backend = FakeBackend(replies=[["one ", "two ", "three "], ["four ", "five"]],
                          stop_reason=StopReason.LENGTH)
    app = make_app(backend)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await send(pilot, "count")
        await reply_done(pilot)
        assert "3 tokens" in shown_text(app)
        backend.stop_reason = StopReason.EOS
        await pilot.press("ctrl+g")
        await reply_done(pilot)
        reply = app.chat_state.conversation.messages[-1]
        assert reply.content == "one two three four five"
        # The whole reply's count; the speed is said to be the last part's.
        assert "5 tokens · 42.0 tok/s for the last 2" in shown_text(app)
        assert "2 tokens" not in shown_text(app)
        assert reply.stats is not None and reply.stats["generated_tokens"] == 5
        # Shown again from the journal (a resumed session), it reads the same.
        assert message_footer(reply)[0].startswith("5 tokens · 42.0 tok/s for the last 2")


async def test_a_dialog_that_opens_clears_the_toasts(tmp_path: Path) -> None:
    existing = tmp_path / "x.json"
    existing.write_text("{}")
    app = make_app(FakeBackend(replies=[["a1"]]))
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await ready(pilot)
        await send(pilot, "q1")
        await reply_done(pilot)
        for i in range(4):
            app.say(f"Saved to somewhere/long/path/number/{i}.md", timeout=30)
        await until(pilot, lambda: len(notes(app)) == 4 and len(app.chat.query("Toast")) == 4)
        assert "Saved to" in screen_text(app)  # shown, as in a real terminal
        await send(pilot, f"/save {existing}")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.pause()
        assert notes(app) == []
        # The chat screen beneath draws its own toasts under the dialog's backdrop.
        assert not app.chat.query("Toast")
        shown = screen_text(app)
        assert "already exists. Replace it?" in shown.replace("\n", " ")
        assert "Replace" in shown and "Keep it" in shown and "Saved to" not in shown


async def test_the_loading_toast_goes_when_the_load_ends() -> None:
    gate = threading.Event()
    other = FakeBackend(load_gate=gate, info_template=dataclasses.replace(
        FAKE_INFO, name="Other-Model", spec="other"))
    app = make_app(factory=FakeFactory(fake=FakeBackend(), other=other))
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await ready(pilot)
        app.model.start_load("other")
        await until(pilot, lambda: "Loading other" in screen_text(app))
        gate.set()
        await until(pilot, lambda: "Now using Other-Model" in shown_text(app))
        await pilot.pause()
        assert not any(n.startswith("Loading") for n in notes(app))
        assert "Loading other" not in screen_text(app)


async def test_greedy_box_is_empty_when_greedy_is_off() -> None:
    app = make_app(FakeBackend())
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await pilot.press("f2")
        await until(pilot, lambda: "Greedy" in screen_text(app))
        line = next(x for x in screen_text(app).splitlines() if "Greedy" in x)
        assert "▐ ▌ Greedy: off (sampling)" in line, line
        assert app.chat_state.params.do_sample  # greedy is off
        app.chat.panel.query_one("#sp-greedy").value = True  # type: ignore[attr-defined]
        await until(pilot, lambda: not app.chat_state.params.do_sample)
        await pilot.pause()
        line = next(x for x in screen_text(app).splitlines() if "Greedy" in x)
        assert "▐X▌ Greedy: on" in line, line


async def test_session_titles_get_the_room_at_60_columns() -> None:
    title = "from the walk in tmux, at 60"
    conv = Conversation()
    conv.model = dataclasses.asdict(dataclasses.replace(
        FAKE_INFO, name="Llama-3.2-1B-Instruct-Q4"))
    rec = SessionRecorder(conv)
    rec.user_message(conv.add("user", title))
    rec.assistant_finished(conv.add("assistant", "ok"))
    rec.close()
    app = make_app(FakeBackend())
    async with app.run_test(size=(60, 24)) as pilot:
        await ready(pilot)
        await pilot.press("f5")
        await until(pilot, lambda: isinstance(app.screen, SessionsScreen))
        await until(pilot, lambda: "from the" in screen_text(app))
        shown = screen_text(app)
        assert title in shown, shown
        assert "Llama-3.2" not in shown
        await pilot.resize_terminal(100, 24)  # wide enough again: the model comes back
        await until(pilot, lambda: "Llama-3.2" in screen_text(app))
        assert "from the walk" in screen_text(app)

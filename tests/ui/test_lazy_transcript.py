"""A long resumed session is mounted lazily (`ui/widgets/transcript.py`): the last screenful
at once, older turns as the user scrolls up or presses Ctrl+Home; copy, F3, retry and
continue work on it as on a short one. No timing asserts: `benchmarks/resume_long.py`
measures the speed."""

from __future__ import annotations

from pathlib import Path

import pytest

from llama_tui.session.transcript import Conversation
from llama_tui.ui.app import LlamaTuiApp
from llama_tui.ui.screens.code_picker import CodePickerScreen
from llama_tui.ui.widgets.transcript import Gap
from tests.ui.fakes import FakeBackend
from tests.ui.helpers import make_app, ready, reply_done, shown_text, until

pytestmark = pytest.mark.asyncio

SIZE = (100, 30)


def long_session(turns: int, *, last_reply: str = "") -> Conversation:
    """A journaled session of `turns` exchanges (2 * turns messages)."""
    from llama_tui.session.recorder import SessionRecorder

    conv = Conversation()
    rec = SessionRecorder(conv)
    for i in range(turns):
        rec.user_message(conv.add("user", f"question {i}"))
        reply = last_reply if i == turns - 1 and last_reply else f"answer {i}\n\nmore of {i}"
        rec.assistant_finished(conv.add("assistant", reply))
    rec.close()
    return conv


def mounted_ids(app: LlamaTuiApp) -> list[str]:
    return [str(getattr(t, "message_id", "")) for t in app.chat.transcript.query(".turn")]


def visible(app: LlamaTuiApp, message_id: str) -> bool:
    transcript = app.chat.transcript
    for turn in transcript.query(".turn"):
        if getattr(turn, "message_id", None) == message_id:
            return transcript.region.overlaps(turn.region)
    return False


def gap_texts(app: LlamaTuiApp) -> list[str]:
    return [str(g.render()) for g in app.chat.transcript.query(Gap) if g.display]


async def test_a_long_session_shows_its_last_turn_and_mounts_only_a_window() -> None:
    conv = long_session(300)
    app = make_app(FakeBackend(), resume=conv.id)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        ids = [m.id for m in conv.messages]
        await until(pilot, lambda: visible(app, ids[-1]))
        mounted = mounted_ids(app)
        assert 4 <= len(mounted) < 100  # a window, not 600 turns
        assert mounted == ids[-len(mounted) :]  # the last ones, in order
        assert any("earlier messages: scroll up" in g for g in gap_texts(app))
        assert "Resumed session" in shown_text(app)


async def test_scrolling_up_mounts_older_turns_in_order_and_keeps_the_place() -> None:
    conv = long_session(40)
    ids = [m.id for m in conv.messages]
    app = make_app(FakeBackend(), resume=conv.id)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        transcript = app.chat.transcript
        await until(pilot, lambda: visible(app, ids[-1]))
        first = len(mounted_ids(app))
        while transcript.unmounted:
            before = mounted_ids(app)
            top = before[0]
            await pilot.press("pageup")
            await pilot.pause()
            if transcript.unmounted and mounted_ids(app) != before:
                # Mounted above: the turn that was first is still on screen or just below
                # what PgUp scrolled to, never pushed far down by the new batch.
                assert mounted_ids(app)[-len(before) :] == before
                assert transcript.scroll_y > 0 or visible(app, top)
        assert mounted_ids(app) == ids  # every turn, in the conversation's order
        assert len(mounted_ids(app)) > first
        await pilot.press("ctrl+home")
        await until(pilot, lambda: visible(app, ids[0]))
        assert not gap_texts(app)


async def test_ctrl_home_shows_the_first_turns_and_ctrl_end_the_last() -> None:
    conv = long_session(300)
    ids = [m.id for m in conv.messages]
    app = make_app(FakeBackend(), resume=conv.id)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("ctrl+home")
        await until(pilot, lambda: visible(app, ids[0]))
        mounted = mounted_ids(app)
        assert mounted[:4] == ids[:4] and len(mounted) < 100
        assert any("later messages: scroll down" in g for g in gap_texts(app))
        for _ in range(3):  # scrolling down from the top mounts the next ones below
            await pilot.press("pagedown")
            await pilot.pause()
        assert mounted_ids(app)[: len(mounted)] == mounted
        await pilot.press("ctrl+end")
        await until(pilot, lambda: visible(app, ids[-1]))
        assert mounted_ids(app) == ids[-len(mounted_ids(app)) :]


async def test_copy_f3_retry_and_a_new_prompt_work_on_a_lazily_mounted_session() -> None:
    reply = "Here:\n\n```python\nprint('hi')\n```\n"
    conv = long_session(300, last_reply=reply)
    ids = [m.id for m in conv.messages]
    app = make_app(FakeBackend(replies=[["A fresh ", "answer."]]), resume=conv.id)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("ctrl+home")  # the last reply is not mounted now
        await until(pilot, lambda: visible(app, ids[0]))
        assert ids[-1] not in mounted_ids(app)
        await pilot.press("ctrl+y")
        await until(pilot, lambda: app.clipboard == reply)
        await pilot.press("f3")
        await until(pilot, lambda: isinstance(app.screen, CodePickerScreen))
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, CodePickerScreen))
        await pilot.press("ctrl+r")  # retry the last reply: the view goes back to the end
        await reply_done(pilot)
        assert "A fresh answer." in app.chat_state.conversation.messages[-1].content
        last = app.chat_state.conversation.messages[-1].id
        await until(pilot, lambda: visible(app, last))
        shown = mounted_ids(app)
        assert len(shown) == len(set(shown))  # nothing shown twice
        assert shown[-1] == last


async def test_turns_mounted_later_show_their_version_in_the_header(tmp_path: Path) -> None:
    from llama_tui.session.export import save_conversation
    from llama_tui.session.transcript import Message

    conv = Conversation()
    for i in range(150):
        conv.add("user", f"question {i}")
        conv.add("assistant", f"answer {i}")
    first_prompt, first_reply = conv.messages[0], conv.messages[1]
    # Another version of the first reply (a retry made it): its header says which of 2.
    conv.branches.append(Message("assistant", "an older answer", parent=first_prompt.id))
    path = save_conversation(conv, tmp_path / "long.json")
    app = make_app(FakeBackend(), resume=str(path))
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        assert first_reply.id not in mounted_ids(app)
        await pilot.press("ctrl+home")  # mounted now, after the resume's headers were set
        await until(pilot, lambda: visible(app, first_reply.id))
        turn = app.chat.transcript.find_assistant(first_reply.id)
        assert turn is not None
        await until(pilot, lambda: str(turn.border_title).endswith("/2"))

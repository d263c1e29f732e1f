"""Thinking in the TUI: folded, shown and hidden (F6, /think, remembered), the live count,
Esc during a thought, saved sessions, and the whole path on a real remote backend.

The fake backend here has a `ThinkFormat` in its model info, so its scripted chunks go
through the chat core's real splitter, as any backend's do. Snapshots (80x24) are of a
resumed session: their figures come from the journal, not a clock.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from llama_tui.config.remembered import read_remembered, remembered_settings_file
from llama_tui.config.settings import LoadedSettings, Settings, load_settings
from llama_tui.core.backend import GenerationStats, StopReason
from llama_tui.core.params import GenerationParams
from llama_tui.core.thinking import ThinkFormat
from llama_tui.session.journal import journal_path, load_journal
from llama_tui.session.recorder import SessionRecorder
from llama_tui.session.transcript import Conversation
from llama_tui.ui.app import LlamaTuiApp, create_app
from llama_tui.ui.widgets.thinking import ThinkingBlock
from tests.engine.remote_server import ScriptedServer
from tests.engine.thinking_models import reasoning_script, sent_messages
from tests.ui.fakes import FAKE_INFO, FakeBackend
from tests.ui.helpers import make_app, ready, reply_done, screen_text, send, until
from tests.ui.test_snapshots import SIZE, steady

THINKER = dataclasses.replace(FAKE_INFO, thinking=ThinkFormat())
SCRIPT = ["<think>", "\nThe user", " wants a number.", "\n</think>", "\n\nIt is **42**."]


def _blocks(app: LlamaTuiApp) -> list[ThinkingBlock]:
    return list(app.chat.transcript.query(ThinkingBlock))


def _text_shown(block: ThinkingBlock) -> bool:
    return bool(block.display) and bool(block.query_one(".thinking-text").display)


@pytest.mark.asyncio
async def test_a_thought_is_folded_and_f6_cycles_show_hide_fold() -> None:
    app = make_app(FakeBackend(replies=[SCRIPT], info_template=THINKER))
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "The answer?")
        await reply_done(pilot)
        msg = app.chat_state.conversation.messages[-1]
        assert msg.thinking == "\nThe user wants a number.\n"
        assert msg.content == "\n\nIt is **42**."
        block = _blocks(app)[0]
        assert block.summary.startswith("thought for 4 tokens, ")  # the markers count
        screen = screen_text(app)
        assert "<think>" not in screen and "thought for 4 tokens" in screen
        assert "wants a number" not in screen  # folded: one line
        assert "5 tokens (4 thinking, 1 answer)" in screen  # the footer splits them

        await pilot.press("f6")
        assert app.chat.has_class("-think-show") and _text_shown(block)
        assert "The user wants a number." in screen_text(app)
        await pilot.press("f6")
        assert app.chat.has_class("-think-hide") and not block.display
        assert "thought for" not in screen_text(app) and "42" in screen_text(app)
        await pilot.press("f6")
        assert not app.chat.has_class("-think-hide") and block.display
        assert not _text_shown(block)


@pytest.mark.asyncio
async def test_think_command_and_the_choice_is_remembered() -> None:
    app = make_app(FakeBackend(replies=[SCRIPT], info_template=THINKER))
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "/think show")
        await pilot.pause()
        assert app.chat.has_class("-think-show")
        await send(pilot, "/think sideways")
        await until(pilot, lambda: "unknown view 'sideways'" in screen_text(app))
        assert app.chat.has_class("-think-show")  # unchanged
    found = read_remembered(remembered_settings_file(), {}, [])
    assert found.live["thinking"].value == "show"
    # The next launch starts with it (config.toml < remembered < environment < flags).
    loaded = load_settings({})
    assert loaded.settings.thinking == "show"
    assert load_settings({}, environ={"LLAMA_TUI_THINKING": "hide"}).settings.thinking == "hide"
    again = create_app(loaded, backend_factory=lambda s: FakeBackend(info_template=THINKER))
    async with again.run_test(size=SIZE) as pilot:
        await ready(pilot)
        assert again.chat.has_class("-think-show")


@pytest.mark.asyncio
async def test_live_count_then_esc_keeps_what_was_thought() -> None:
    script = ["<think>", "first", " second", " third", "</think>", "never shown"]
    backend = FakeBackend(replies=[script], info_template=THINKER, hold_after=4)
    app = make_app(backend)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "Think hard")
        await until(pilot, backend.held.is_set)
        block = _blocks(app)[0]
        await until(pilot, lambda: "4 tokens" in block.summary)
        assert block.summary.startswith("thinking… 4 tokens, ")  # counting up live
        assert "first second third" not in screen_text(app)  # folded
        await pilot.press("f6")  # shown while it streams: what came meanwhile is there
        await until(pilot, lambda: "first second third" in screen_text(app))
        await pilot.press("escape")
        await until(pilot, lambda: not app.generating)
        msg = app.chat_state.conversation.messages[-1]
        assert msg.status == "stopped" and msg.thinking == "first second third"
        assert msg.content == ""
        assert block.summary.startswith("thought for 4 tokens, ")
        assert "first second third" in screen_text(app)
    conv = load_journal(journal_path(app.chat_state.conversation.id))
    assert conv.messages[-1].thinking == "first second third"


def _thought_session() -> Conversation:
    """A finished exchange with a thought, in the journal, with fixed figures."""
    conv = Conversation()
    rec = SessionRecorder(conv)
    rec.user_message(conv.add("user", "What is 6 times 7?"))
    reply = conv.add("assistant", "\n\n6 times 7 is **42**.", status="streaming")
    rec.assistant_started(reply)
    reply.thinking = "\nSix sevens: 7 + 7 = 14, three of those is 42.\nCheck: 42 / 6 = 7. Good.\n"
    reply.status = "complete"
    reply.stats = GenerationStats(
        prompt_tokens=20,
        generated_tokens=57,
        ttft_s=0.12,
        decode_tokens_per_s=31.0,
        total_s=1.9,
        stop_reason=StopReason.EOS,
        thinking_tokens=45,
        thinking_s=1.5,
    ).to_dict()
    rec.assistant_finished(reply)
    rec.close()
    return conv


def test_snapshot_folded_thought(snap_compare: Any) -> None:
    conv = _thought_session()

    async def run_before(pilot: Pilot[int]) -> None:
        await ready(pilot)
        await steady(pilot)

    app = make_app(FakeBackend(info_template=THINKER), resume=conv.id)
    assert snap_compare(app, run_before=run_before, terminal_size=SIZE)


def test_snapshot_expanded_thought(snap_compare: Any) -> None:
    conv = _thought_session()

    async def run_before(pilot: Pilot[int]) -> None:
        await ready(pilot)
        await pilot.press("f6")
        await steady(pilot)

    app = make_app(FakeBackend(info_template=THINKER), resume=conv.id)
    assert snap_compare(app, run_before=run_before, terminal_size=SIZE)


@pytest.mark.asyncio
async def test_resumed_thought_shows_its_saved_figures() -> None:
    conv = _thought_session()
    app = make_app(FakeBackend(info_template=THINKER), resume=conv.id)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        assert _blocks(app)[0].summary == "thought for 45 tokens, 1.5 s"
        assert "57 tokens (45 thinking, 12 answer)" in screen_text(app)


@pytest.mark.asyncio
async def test_remote_server_reasoning_through_the_tui(tmp_path: Path) -> None:
    """The user's path on a real backend: a loopback server streams `reasoning_content`,
    the remote backend and the chat core split it, the screen folds it."""
    script = reasoning_script(["Let me", " add", " them."], ["Two and two", " is four."])
    with ScriptedServer(script) as srv:
        settings = Settings(server=srv.url, params=GenerationParams(max_new_tokens=32))
        app = create_app(LoadedSettings(settings=settings))
        async with app.run_test(size=SIZE) as pilot:
            await ready(pilot)
            await send(pilot, "2+2?")
            await reply_done(pilot)
            msg = app.chat_state.conversation.messages[-1]
            assert msg.thinking == "Let me add them." and msg.content == "Two and two is four."
            assert _blocks(app)[0].summary.startswith("thought for 3 tokens, ")
            shown = screen_text(app)
            assert "Two and two is four." in shown and "Let me" not in shown
            assert "<think>" not in shown
            await send(pilot, "And 3+3?")
            await reply_done(pilot)
        sent = sent_messages(srv)
    assert sent[1][1] == {"role": "assistant", "content": "Two and two is four."}


@pytest.mark.asyncio
async def test_ctrl_g_goes_on_with_a_stopped_thought() -> None:
    first = ["<think>", "first", " second", "never"]
    backend = FakeBackend(
        replies=[first, [" third", "</think>", "Done."]], info_template=THINKER, hold_after=3
    )
    app = make_app(backend)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "Think")
        await until(pilot, backend.held.is_set)
        await pilot.press("escape")
        await until(pilot, lambda: not app.generating)
        msg = app.chat_state.conversation.messages[-1]
        assert msg.thinking == "first second" and msg.content == ""
        backend.hold_after = None
        await pilot.press("ctrl+g")
        await reply_done(pilot)
        # The same reply went on inside its thought, which the model got back unfinished.
        assert app.chat_state.conversation.messages[-1] is msg
        assert msg.thinking == "first second third" and msg.content == "Done."
        assert backend.calls[-1].history[-1].reasoning == "first second"
        assert _blocks(app)[0].summary.startswith("thought for ")


@pytest.mark.asyncio
async def test_the_view_follows_the_remembering_rules_of_the_panel() -> None:
    """Going back to config.toml's view forgets the remembered one; an edit of config.toml
    after /think wins (and says so), as for the panel's settings."""
    config = remembered_settings_file().parent / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text('thinking = "hide"\n')
    loaded = load_settings({})
    assert loaded.settings.thinking == "hide"
    app = create_app(loaded, backend_factory=lambda s: FakeBackend(info_template=THINKER))
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        assert app.chat.has_class("-think-hide")
        await send(pilot, "/think show")
        await pilot.pause()
        found = read_remembered(remembered_settings_file(), {"thinking": "hide"}, [])
        assert found.live["thinking"].value == "show"
        await send(pilot, "/think hide")  # config.toml's own: nothing left to remember
        await pilot.pause()
        fields = json.loads(remembered_settings_file().read_text())["fields"]
        assert "thinking" not in fields
        await send(pilot, "/think show")
        await pilot.pause()
    config.write_text('thinking = "fold"\n')  # edited after /think show: the file wins
    again = load_settings({})
    assert again.settings.thinking == "fold"
    assert any("config.toml's thinking is now 'fold'" in n and "/think" in n for n in again.notes)

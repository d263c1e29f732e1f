"""Branches in the app on the real engine (tiny random Llama): retry keeps versions, keys and
commands switch them, the next reply reuses the KV cache of the shared prefix, forks."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.pilot import Pilot

from llama_tui.core.params import GenerationParams
from llama_tui.session import tree
from llama_tui.ui.app import LlamaTuiApp
from llama_tui.ui.screens.branches import BranchesScreen
from llama_tui.ui.widgets.turns import AssistantTurn, UserTurn
from tests.ui.helpers import ready, real_app, reply_done, send, until

pytestmark = pytest.mark.asyncio

SAMPLED = GenerationParams(do_sample=True, temperature=1.0, max_new_tokens=6)


def _titles(app: LlamaTuiApp) -> list[str]:
    return [str(t.border_title) for t in app.chat.transcript.query(".turn")
            if isinstance(t, (UserTurn, AssistantTurn))]


def _path(app: LlamaTuiApp) -> list[str]:
    return [m.content for m in app.chat_state.conversation.messages]


async def _ask(pilot: Pilot[int], text: str) -> None:
    """Send `text` and wait until its reply is finished."""
    await send(pilot, text)
    await reply_done(pilot)


async def _retry(pilot: object, app: LlamaTuiApp) -> None:
    await pilot.press("ctrl+r")  # type: ignore[attr-defined]
    await reply_done(pilot)  # type: ignore[arg-type]


async def test_retry_keeps_versions_and_keys_switch_them(tiny_model_dir: Path) -> None:
    app = real_app(tiny_model_dir, SAMPLED)
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        await _ask(pilot, "Tell me something")
        await _retry(pilot, app)
        await _retry(pilot, app)
        conv = app.chat_state.conversation
        versions = [m.content for m in tree.siblings(conv, conv.messages[-1])]
        assert len(versions) == 3
        assert _titles(app) == ["you", "assistant · 3/3"]
        await pilot.press("alt+left")
        await until(pilot, lambda: _titles(app) == ["you", "assistant · 2/3"])
        assert _path(app)[-1] == versions[1]
        shown = app.chat.transcript.query(AssistantTurn).last()
        assert shown.message_id == conv.messages[-1].id
        await send(pilot, "/branch next")
        await until(pilot, lambda: _titles(app) == ["you", "assistant · 3/3"])
        await send(pilot, "/branch next")  # already the last: says so, changes nothing
        await pilot.pause()
        assert _path(app)[-1] == versions[2]


async def test_next_reply_after_a_switch_reuses_the_shared_prefix(tiny_model_dir: Path) -> None:
    # Sampled: greedy replies on the generate path may go to prompt-lookup decoding, which
    # starts from an empty cache (`engine.local.assisted`).
    app = real_app(tiny_model_dir, SAMPLED)
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        await _ask(pilot, "A long first question about many things " * 4)
        await _ask(pilot, "second")
        await pilot.press("ctrl+t", "y")  # edit the second prompt: it becomes a branch
        await until(pilot, lambda: len(app.chat_state.conversation.messages) == 2)
        app.chat.prompt.load_text("second, edited")
        await pilot.press("enter")
        await reply_done(pilot)
        await pilot.press("alt+left")  # back to the first version of the second prompt
        await until(pilot, lambda: _path(app)[2] == "second")
        await _ask(pilot, "third")
        stats = app.chat_state.conversation.messages[-1].stats
        assert stats is not None
        # Everything before "second"'s exchange was in the cache from the earlier turns.
        first_exchange = app.chat_state.conversation.messages[1].stats
        assert first_exchange is not None
        assert stats["reused_prompt_tokens"] >= first_exchange["prompt_tokens"]
        assert stats["reused_prompt_tokens"] < stats["prompt_tokens"]


async def test_branches_picker_makes_a_branch_active(tiny_model_dir: Path) -> None:
    app = real_app(tiny_model_dir, SAMPLED)
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        await _ask(pilot, "Hi")
        await _retry(pilot, app)
        conv = app.chat_state.conversation
        first = tree.siblings(conv, conv.messages[-1])[0]
        await send(pilot, "/branches")
        await until(pilot, lambda: isinstance(app.screen, BranchesScreen))
        app.screen.query_one("OptionList").highlighted = 1  # type: ignore[attr-defined]
        await pilot.press("enter")
        await until(pilot, lambda: conv.messages[-1] is first)
        assert _titles(app) == ["you", "assistant · 1/2"]


async def test_fork_and_continue_starts_a_new_version_from_a_prefix(
        tiny_model_dir: Path) -> None:
    app = real_app(tiny_model_dir, GenerationParams(do_sample=False, max_new_tokens=5))
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        await _ask(pilot, "Hi")
        conv = app.chat_state.conversation
        original = conv.messages[-1]
        original_text = original.content
        await app.chat.fork_and_continue(original.id, "Forced")
        await reply_done(pilot)
        new = conv.messages[-1]
        assert new is not original and new.content.startswith("Forced")
        assert len(new.content) > len("Forced")
        assert original.content == original_text and original in conv.branches
        assert _titles(app) == ["you", "assistant · 2/2"]
        assert new.replay is not None and new.replay["prefix_chars"] == len("Forced")


async def test_edit_reply_then_ctrl_g_continues_from_the_edited_text(
        tiny_model_dir: Path) -> None:
    app = real_app(tiny_model_dir, GenerationParams(do_sample=False, max_new_tokens=4))
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        await _ask(pilot, "Hi")
        conv = app.chat_state.conversation
        original = conv.messages[-1]
        await send(pilot, "/edit reply")
        await until(pilot, lambda: app.chat.branches.editing == original.id)
        assert app.chat.prompt.text.strip()  # the reply, as the input shows it
        app.chat.prompt.load_text("My own start")
        await pilot.press("ctrl+g")
        await reply_done(pilot)
        assert conv.messages[-1].content.startswith("My own start")
        assert conv.messages[-1] is not original and original in conv.branches


async def test_switching_at_the_start_of_a_long_session_shows_the_new_path(
        tiny_model_dir: Path) -> None:
    """A fork near the top of a long session: the switch shows the other version's path
    lazily (its last turn on screen, the older ones as the user scrolls)."""
    from llama_tui.session.transcript import Conversation

    app = real_app(tiny_model_dir, SAMPLED)
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        await _ask(pilot, "first")
        await _retry(pilot, app)
        conv: Conversation = app.chat_state.conversation
        for i in range(30):  # a long conversation below version 2 of the first reply
            conv.add("user", f"question {i}")
            conv.add("assistant", f"answer {i}")
        await app.chat.branches.show_switch([m.id for m in conv.messages[:2]])
        await pilot.press("alt+left")
        await until(pilot, lambda: len(conv.messages) == 2)
        assert _titles(app) == ["you", "assistant · 1/2"]
        await pilot.press("alt+right")  # back: 62 messages, shown from the end
        await until(pilot, lambda: len(conv.messages) == 62)
        last = app.chat.transcript.query(AssistantTurn).last()
        await until(pilot, lambda: app.chat.transcript.query(AssistantTurn).last().message_id
                    == conv.messages[-1].id)
        assert last is not None

"""`/read` in the app: pending files above the input, their cost in the context meter, chips
in the sent turn, what the model got, refusals as notices, `/read --clear`, and a resumed
session showing the chips again. Plus the 80x24 snapshot of a message with two files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from llama_tui.session.store import load_conversation
from llama_tui.ui.widgets.attachments import PendingFiles
from llama_tui.ui.widgets.turns import UserTurn
from tests.ui.fakes import FakeBackend
from tests.ui.helpers import make_app, ready, reply_done, screen_text, send, shown_text, until
from tests.ui.test_snapshots import SIZE, steady

NOTES = "Meeting moved to Thursday.\nBring the budget sheet.\n"
CODE = "def double(x):\n    return 2 * x\n"


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """notes.txt and double.py in the working directory (relative paths start there)."""
    (tmp_path / "notes.txt").write_text(NOTES)
    (tmp_path / "double.py").write_text(CODE)
    (tmp_path / "blob.bin").write_bytes(b"\x00\x01\x02")
    monkeypatch.chdir(tmp_path)
    return tmp_path


async def _read(pilot: Pilot[int], arg: str) -> None:
    await send(pilot, f"/read {arg}")
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


@pytest.mark.asyncio
async def test_read_shows_pending_then_chips_and_the_model_gets_the_blocks(files: Path) -> None:
    backend = FakeBackend(replies=[["Thursday."]])
    app = make_app(backend)
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        await _read(pilot, "notes.txt *.py")
        pending = app.chat.query_one(PendingFiles)
        assert pending.display and [a.name for a in app.chat.attachments.files] == [
            "notes.txt",
            "double.py",
        ]
        text = screen_text(app)
        assert "Attached to your next message" in text and "notes.txt · 51 B" in text
        cost = sum(a.tokens or 0 for a in app.chat.attachments.files)
        assert cost > 0 and f"+{cost}/" in text  # the context meter shows the cost first

        await send(pilot, "When is the meeting?")
        await reply_done(pilot)
        assert not pending.display and app.chat.attachments.files == []
        assert app.status.facts.context_pending == 0
        turn = app.chat.transcript.query(UserTurn).last()
        body = str(turn.render())
        assert "file notes.txt · 51 B" in body and "file double.py" in body
        assert body.endswith("When is the meeting?") and "Bring the budget" not in body
        sent = backend.calls[0].history[-1].content
        assert sent.startswith("File notes.txt:\n```\n" + NOTES + "```\n\nFile double.py:")
        assert sent.endswith("When is the meeting?")

        # The journal kept the files' text: a resumed session shows the chips again.
        conv = load_conversation(app.chat_state.conversation.id)
        assert [a.content for a in conv.messages[0].attachments] == [NOTES, CODE]

        # Editing that prompt again puts its files back above the input.
        app.chat.attachments.restore(conv.messages[0].attachments)
        await pilot.pause()
        assert pending.display and app.status.facts.context_pending == cost


@pytest.mark.asyncio
async def test_refusals_are_notices_and_the_rest_is_attached(files: Path) -> None:
    app = make_app(FakeBackend())
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        await _read(pilot, "blob.bin missing.txt notes.txt .")
        shown = shown_text(app)
        assert "blob.bin looks binary" in shown and "missing.txt does not exist" in shown
        assert ". is a folder" in shown
        assert [a.name for a in app.chat.attachments.files] == ["notes.txt"]
        await _read(pilot, "/dev/zero")
        assert "not a regular file" in shown_text(app)

        await _read(pilot, "")
        assert "Attached to your next message:\nnotes.txt" in shown_text(app)
        await _read(pilot, "--clear")
        assert app.chat.attachments.files == [] and not app.chat.query_one(PendingFiles).display
        assert app.status.facts.context_pending == 0


@pytest.mark.asyncio
async def test_files_that_cannot_fit_the_context_are_refused(files: Path) -> None:
    (files / "big.txt").write_text("word " * 5000)  # 5000 tokens for the fake's counter
    app = make_app(FakeBackend())
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        await _read(pilot, "big.txt notes.txt")
        assert "big.txt would take 50" in shown_text(app)  # the fake's context is 2048
        assert [a.name for a in app.chat.attachments.files] == ["notes.txt"]


@pytest.mark.asyncio
async def test_resumed_session_shows_the_chips(files: Path) -> None:
    app = make_app(FakeBackend(replies=[["ok"]]))
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        await _read(pilot, "notes.txt")
        await send(pilot, "Summarise.")
        await reply_done(pilot)
        session = app.chat_state.conversation.id
    again = make_app(FakeBackend(), resume=session)
    async with again.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        await until(pilot, lambda: len(again.chat.transcript.query(UserTurn)) == 1)
        assert "file notes.txt · 51 B" in str(again.chat.transcript.query_one(UserTurn).render())


def test_message_with_two_attached_files(snap_compare: Any, files: Path) -> None:
    async def run_before(pilot: Pilot[int]) -> None:
        await ready(pilot)
        await steady(pilot)
        await _read(pilot, "notes.txt double.py")
        await send(pilot, "When is the meeting, and what does double do?")
        await reply_done(pilot)
        await steady(pilot)

    app = make_app(FakeBackend(replies=[["Thursday; it doubles x."]]))
    assert snap_compare(app, run_before=run_before, terminal_size=SIZE)


def test_two_files_waiting_above_the_input(snap_compare: Any, files: Path) -> None:
    async def run_before(pilot: Pilot[int]) -> None:
        await ready(pilot)
        await _read(pilot, "notes.txt double.py")
        await steady(pilot)

    assert snap_compare(make_app(FakeBackend()), run_before=run_before, terminal_size=SIZE)

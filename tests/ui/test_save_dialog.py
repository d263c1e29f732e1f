"""Ctrl+S's save dialog, the save directory, /copy's arguments and file names, and Ctrl+G on
a reply stopped before its first word."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from textual.widgets import Input

from llama_tui import locations
from llama_tui.ui.screens.confirm import ConfirmScreen
from llama_tui.ui.screens.save_dialog import SaveDialog
from tests.ui.fakes import FakeBackend
from tests.ui.helpers import make_app, notes, ready, reply_done, send, until

pytestmark = pytest.mark.asyncio
TODAY = time.strftime("%Y-%m-%d")


async def _chat(pilot: object, prompt: str = "What is the capital of France?") -> None:
    await ready(pilot)  # type: ignore[arg-type]
    await send(pilot, prompt)  # type: ignore[arg-type]
    await reply_done(pilot)  # type: ignore[arg-type]


def _path_field(app: object) -> Input:
    screen = app.screen  # type: ignore[attr-defined]
    assert isinstance(screen, SaveDialog)
    return screen.query_one("#save-path", Input)


async def test_ctrl_s_prefills_dated_slug_in_save_dir_and_enter_saves() -> None:
    app = make_app(FakeBackend(replies=[["Paris."]]))
    async with app.run_test(size=(100, 30)) as pilot:
        await _chat(pilot)
        await pilot.press("ctrl+s")
        await until(pilot, lambda: isinstance(app.screen, SaveDialog))
        expected = locations.save_dir() / f"{TODAY}-what-is-the-capital-of-france.md"
        assert _path_field(app).value == str(expected)
        assert not Path.cwd().joinpath(expected.name).exists()
        await pilot.press("enter")
        await until(pilot, expected.exists)
        saved = expected.read_text()
        assert "## Assistant\n\nParis." in saved
        versions = next(ln for ln in saved.splitlines() if ln.startswith("- **Versions:**"))
        assert all(f"{d} " in versions for d in ("llama-tui", "transformers", "torch", "textual"))
        await until(pilot, lambda: f"Saved to {expected}" in notes(app))
        # The next Ctrl+S proposes a name that does not exist yet.
        await pilot.press("ctrl+s")
        await until(pilot, lambda: isinstance(app.screen, SaveDialog))
        assert _path_field(app).value == str(expected.with_name(expected.stem + "-2.md"))


async def test_escape_cancels_and_writes_nothing() -> None:
    app = make_app(FakeBackend(replies=[["Paris."]]))
    async with app.run_test(size=(100, 30)) as pilot:
        await _chat(pilot)
        await pilot.press("ctrl+s")
        await until(pilot, lambda: isinstance(app.screen, SaveDialog))
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, SaveDialog))
        await pilot.pause()
        assert not locations.save_dir().exists() or not any(locations.save_dir().iterdir())
        assert not any("Saved" in n for n in notes(app))


async def test_existing_file_asks_before_replacing(tmp_path: Path) -> None:
    target = tmp_path / "chat.md"
    target.write_text("keep me")
    app = make_app(FakeBackend(replies=[["Paris."]]))
    async with app.run_test(size=(100, 30)) as pilot:
        await _chat(pilot)
        await pilot.press("ctrl+s")
        await until(pilot, lambda: isinstance(app.screen, SaveDialog))
        _path_field(app).value = str(target)
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        assert str(target) in app.screen.question  # type: ignore[attr-defined]
        await pilot.press("n")
        await pilot.pause()
        assert target.read_text() == "keep me"
        await pilot.press("ctrl+s")
        await until(pilot, lambda: isinstance(app.screen, SaveDialog))
        _path_field(app).value = str(target)
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await until(pilot, lambda: "Paris." in target.read_text())


async def test_save_relative_path_lands_in_save_dir_not_cwd() -> None:
    app = make_app(FakeBackend(replies=[["Paris."]]))
    async with app.run_test(size=(100, 30)) as pilot:
        await _chat(pilot)
        await send(pilot, "/save notes/paris.md")
        expected = locations.save_dir() / "notes" / "paris.md"
        await until(pilot, expected.exists)
        assert not (Path.cwd() / "notes" / "paris.md").exists()
        await until(pilot, lambda: f"Saved to {expected}" in notes(app))


async def test_copy_refuses_unknown_arguments_with_usage() -> None:
    app = make_app(FakeBackend(replies=[["Paris."]]))
    async with app.run_test(size=(100, 30)) as pilot:
        await _chat(pilot)
        await send(pilot, "/copy abc")
        await pilot.pause()
        note = next(n for n in notes(app) if "/copy does not understand 'abc'" in n)
        assert "Usage: /copy [N] [file]" in note
        assert app.clipboard_writes == []


async def test_copy_file_names_code_blocks_by_language() -> None:
    reply = "Do this:\n\n1. Save:\n\n   ```python\n   print('hi')\n   ```\n"
    app = make_app(FakeBackend(replies=[[reply]]))
    async with app.run_test(size=(100, 30)) as pilot:
        await _chat(pilot, "Python hello")
        await send(pilot, "/copy 1 file")
        await until(pilot, lambda: any(n.startswith("Wrote code block 1 to ") for n in notes(app)))
        note = next(n for n in notes(app) if n.startswith("Wrote code block 1 to "))
        path = Path(note.removeprefix("Wrote code block 1 to "))
        assert path == locations.save_dir() / f"{TODAY}-python-hello-code-1.py"
        assert path.read_text() == "print('hi')\n"  # no list indentation
        await send(pilot, "/copy file")
        await until(pilot, lambda: any(n.startswith("Wrote the last reply") for n in notes(app)))
        reply_note = next(n for n in notes(app) if n.startswith("Wrote the last reply"))
        assert re.search(rf"/{TODAY}-python-hello-reply\.md$", reply_note)


async def test_continue_on_a_reply_stopped_before_its_first_word() -> None:
    backend = FakeBackend(replies=[["never shown"], ["Second try."]], hold_after=0)
    app = make_app(backend)
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        await send(pilot, "hello")
        await until(pilot, backend.held.is_set)
        await pilot.press("escape")
        await until(pilot, lambda: not app.generating)
        last = app.chat_state.conversation.messages[-1]
        assert (last.role, last.content, last.status) == ("assistant", "", "stopped")
        backend.release()
        await pilot.press("ctrl+g")
        await reply_done(pilot)
        assert not any("not a reply" in n for n in notes(app))
        assert [(m.role, m.content) for m in app.chat_state.conversation.messages] == [
            ("user", "hello"), ("assistant", "Second try.")]

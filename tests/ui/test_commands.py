"""Slash commands, the palette, save, copy and links."""

from __future__ import annotations

from pathlib import Path

import pytest

from llama_tui.core.params import GenerationParams
from llama_tui.ui.commands import parse_command
from llama_tui.ui.screens.confirm import ConfirmScreen
from llama_tui.ui.screens.help import HelpScreen
from tests.ui.fakes import FakeBackend
from tests.ui.helpers import make_app, notes, ready, reply_done, send, shown_text, until

pytestmark = pytest.mark.asyncio


async def test_parse_command() -> None:
    assert parse_command("/set top_p 0.9") == ("set", "top_p 0.9")
    assert parse_command("  /HELP ") == ("help", "")
    assert parse_command("//not a command") is None
    assert parse_command("hello /x") is None


async def test_unknown_command_is_not_sent() -> None:
    backend = FakeBackend()
    app = make_app(backend)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await send(pilot, "/sav")
        text = shown_text(app)
        assert "Unknown command /sav" in text and "Did you mean /save?" in text
        assert "/help" in text
        assert backend.calls == [] and app.chat_state.conversation.messages == []
        await send(pilot, "//etc is a path")
        await reply_done(pilot)
        assert app.chat_state.conversation.messages[0].content == "/etc is a path"


async def test_help_screen_and_palette() -> None:
    app = make_app(FakeBackend())
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await send(pilot, "/help")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)
        await pilot.press("f1")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        # The same actions from the command palette.
        await pilot.press("ctrl+p")
        await pilot.press(*"settings panel")
        await until(pilot, lambda: "settings" in str(app.screen.query("CommandList").first()
                                                     .get_option_at_index(0).prompt).lower()
                    if app.screen.query("CommandList") and
                    app.screen.query("CommandList").first().option_count else False)
        await pilot.press("enter")
        await until(pilot, lambda: app.chat.show_settings)


async def test_set_and_system_commands() -> None:
    backend = FakeBackend()
    app = make_app(backend)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await send(pilot, "/set temperature 0.25")
        assert app.chat_state.params.temperature == 0.25
        await send(pilot, "/set top_p 1.5")
        assert app.chat_state.params.top_p == 0.9  # unchanged (fake default)
        assert "top_p must be in (0, 1]" in shown_text(app)
        await send(pilot, "/set greedy on")
        assert app.chat_state.params.do_sample is False
        await send(pilot, "/set nonsense 1")
        assert "unknown setting" in shown_text(app)
        await send(pilot, "/system You are terse.")
        await send(pilot, "hi")
        await reply_done(pilot)
        call = backend.calls[-1]
        assert call.params.temperature == 0.25 and call.params.do_sample is False
        assert call.history[0].role == "system" and call.history[0].content == "You are terse."


async def test_clear_starts_a_new_session() -> None:
    app = make_app(FakeBackend())
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await send(pilot, "first")
        await reply_done(pilot)
        old_id = app.chat_state.conversation.id
        await send(pilot, "/clear")
        assert app.chat_state.conversation.messages == []
        assert app.chat_state.conversation.id != old_id
        assert "first" not in shown_text(app)
    from llama_tui.session.store import load_conversation

    assert load_conversation(old_id).messages[0].content == "first"


async def test_save_default_path_then_overwrite_confirmation(tmp_path: Path) -> None:
    app = make_app(FakeBackend(replies=[["```python\nprint('hi')\n```"]]))
    target = tmp_path / "chat.md"
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await send(pilot, "code please")
        await reply_done(pilot)
        await send(pilot, f"/save {target}")
        await until(pilot, target.exists)
        first = target.read_text()
        assert "code please" in first and "print('hi')" in first
        await send(pilot, f"/save {target}")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("n")
        assert target.read_text() == first
        await send(pilot, "more")
        await reply_done(pilot)
        await send(pilot, f"/save {target}")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await until(pilot, lambda: "more" in target.read_text())


async def test_save_error_names_path_and_keeps_conversation(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    app = make_app(FakeBackend())
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await send(pilot, "hello")
        await reply_done(pilot)
        await send(pilot, f"/save {blocker}/sub/chat.md")
        await until(pilot, lambda: any("Could not save" in n for n in notes(app)))
        note = next(n for n in notes(app) if "Could not save" in n)
        assert str(blocker) in note
        assert len(app.chat_state.conversation.messages) == 2


async def test_copy_last_reply_and_code_block_osc52(monkeypatch: pytest.MonkeyPatch) -> None:
    import base64

    # Outside tmux (its decisions: tests/unit/test_clipboard.py and the real-terminal e2e).
    monkeypatch.delenv("TMUX", raising=False)
    monkeypatch.delenv("STY", raising=False)
    reply = "Here:\n```sh\necho \x1b]52;c;SGFja2Vk\x07 hi\n```\n"
    app = make_app(FakeBackend(replies=[[reply]]))
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await send(pilot, "code")
        await reply_done(pilot)
        await pilot.press("ctrl+y")
        seq = app.clipboard_writes[-1]
        assert seq.startswith("\x1b]52;c;") and seq.endswith("\x07")
        payload = seq.split(";c;")[1].split("\x07")[0]
        copied = base64.b64decode(payload).decode()
        assert "\x1b" not in copied and "echo" in copied
        await pilot.press("f3")
        await pilot.pause()
        await pilot.press("enter")
        raw = base64.b64decode(app.clipboard_writes[-1].split(";c;")[1].split("\x07")[0])
        assert raw.decode() == "echo  hi\n"
        await send(pilot, "/copy 1 file")
        wrote = [n for n in notes(app) if n.startswith("Wrote code block 1 to ")]
        assert wrote
        path = Path(wrote[-1].removeprefix("Wrote code block 1 to "))
        assert path.read_text() == "echo  hi\n"


async def test_markdown_link_needs_confirmation(monkeypatch: pytest.MonkeyPatch) -> None:
    from textual.widgets import Markdown

    opened: list[str] = []
    app = make_app(FakeBackend(replies=[["[docs](https://evil.example/x)"]]))
    monkeypatch.setattr(app, "open_url", lambda url, **kw: opened.append(url))
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await send(pilot, "link")
        await reply_done(pilot)
        md = app.chat.transcript.query(Markdown).last()
        md.post_message(Markdown.LinkClicked(md, "https://evil.example/x"))
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        assert isinstance(app.screen, ConfirmScreen)
        assert "https://evil.example/x" in app.screen.question
        assert opened == []
        await pilot.press("escape")
        assert opened == []


async def test_external_editor(monkeypatch: pytest.MonkeyPatch) -> None:
    import contextlib

    from llama_tui.ui.app import LlamaTuiApp

    # The headless driver cannot hand the terminal over; the editor itself is real.
    monkeypatch.setattr(LlamaTuiApp, "suspend", lambda self: contextlib.nullcontext())
    monkeypatch.setenv("EDITOR", "sh -c 'printf \"%s\\nedited\" \"$(cat $1)\" > $1' sh")
    monkeypatch.delenv("VISUAL", raising=False)
    app = make_app(FakeBackend())
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await pilot.press(*"draft")
        await pilot.press("ctrl+e")
        await until(pilot, lambda: "edited" in app.chat.prompt.text)
        assert app.chat.prompt.text == "draft\nedited"


async def test_resume_renders_through_the_sanitiser() -> None:
    from llama_tui.session.recorder import SessionRecorder
    from llama_tui.session.transcript import Conversation

    conv = Conversation()
    rec = SessionRecorder(conv)
    rec.user_message(conv.add("user", "evil \x1b]52;c;SGk=\x07 [@click=app.quit]x[/]"))
    reply = conv.add("assistant", "partial \x1b[2J reply", status="streaming")
    rec.assistant_started(reply)
    rec.assistant_progress(reply)
    rec.flush()
    rec.close()  # as if the process died mid-reply
    app = make_app(FakeBackend(), resume=conv.id)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        text = shown_text(app)
        assert "[@click=app.quit]x[/]" in text and "\x1b" not in text
        assert "interrupted" in text
        assert app.chat_state.conversation.id == conv.id
        await send(pilot, "/continue")
        await reply_done(pilot)
        assert app.chat_state.conversation.messages[-1].status == "complete"


async def test_resumed_complete_reply_keeps_its_stats_footer() -> None:
    from llama_tui.session.recorder import SessionRecorder
    from llama_tui.session.transcript import Conversation

    conv = Conversation()
    rec = SessionRecorder(conv)
    rec.user_message(conv.add("user", "hi"))
    reply = conv.add("assistant", "hello there", status="streaming")
    rec.assistant_started(reply)
    reply.status = "complete"
    reply.stats = {"generated_tokens": 8, "decode_tokens_per_s": 12.5, "stop_reason": "eos"}
    rec.assistant_finished(reply)
    bad = conv.add("user", "again")
    rec.user_message(bad)
    odd = conv.add("assistant", "odd stats", status="streaming")
    rec.assistant_started(odd)
    odd.status = "complete"
    odd.stats = {"generated_tokens": "many", "stop_reason": "???"}  # a hand-edited journal
    rec.assistant_finished(odd)
    rec.close()
    app = make_app(FakeBackend(), resume=conv.id)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        text = shown_text(app)
        assert "8 tokens · 12.5 tok/s" in text, text
        assert "odd stats" in text and app._exception is None


async def test_memory_command_shows_each_gpu_and_the_placement() -> None:
    import dataclasses

    from llama_tui.core.backend import MemoryReading

    backend = FakeBackend()
    gib = 1024**3
    backend.memory = lambda: MemoryReading(  # type: ignore[method-assign]
        used_bytes=30 * gib, total_bytes=160 * gib, label="VRAM",
        per_device=(("cuda:0", 14 * gib), ("cuda:1", 16 * gib)),
    )
    app = make_app(backend)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        assert app.chat_state.model is not None
        app.chat_state.model = dataclasses.replace(
            app.chat_state.model, device="cuda:0-1, 2 GPUs", placement={
                "model.embed_tokens": "cuda:0", "model.layers.0": "cuda:0",
                "model.layers.1": "cuda:1", "lm_head": "cuda:1"})
        await send(pilot, "/memory")
        await until(pilot, lambda: "cuda:1: 16.0G" in shown_text(app))
        text = shown_text(app)
        assert "VRAM 30.0G of 160.0G" in text and "cuda:0: 14.0G" in text
        assert "cuda:0 2 modules, cuda:1 2 modules" in text


async def test_resumed_session_offers_its_settings_back() -> None:
    from llama_tui.session.recorder import SessionRecorder
    from llama_tui.session.transcript import Conversation

    conv = Conversation()
    rec = SessionRecorder(conv)
    rec.user_message(conv.add("user", "hi"))
    settings = GenerationParams(temperature=0.2, max_new_tokens=100).to_dict()
    settings["top_p"] = "nonsense"  # a hand-edited journal: skipped, not applied
    settings["stop"] = "not a list"
    rec.settings_changed(settings, "")
    rec.close()
    app = make_app(FakeBackend(), resume=conv.id)
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        text = shown_text(app)
        assert "This session used other settings" in text and "/set session" in text, text
        assert app.chat_state.params.temperature != 0.2
        before = app.chat_state.params
        await send(pilot, "/set session")
        await until(pilot, lambda: app.chat_state.params.temperature == 0.2)
        assert app.chat_state.params.max_new_tokens == 100
        params = app.chat_state.params
        assert params.top_p == before.top_p and params.stop == before.stop
        await send(pilot, "/set session")
        await until(pilot, lambda: any("already match" in n for n in notes(app)))

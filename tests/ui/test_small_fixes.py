"""Small fixes: status bar texts and widths, command suggestions, the palette, sessions
dialogs, the 60-column layout, and freeing old models on reload."""

from __future__ import annotations

import dataclasses
import threading
import weakref
from pathlib import Path
from typing import Any

import pytest
from rich.cells import cell_len
from textual.pilot import Pilot

from llama_tui.core.backend import LoadProgress, LoadStage, ProgressCallback
from llama_tui.core.params import GenerationParams
from llama_tui.engine.local import backend as local
from llama_tui.session.recorder import SessionRecorder
from llama_tui.session.transcript import Conversation
from llama_tui.ui.app import LlamaTuiApp
from llama_tui.ui.screens.confirm import ConfirmScreen
from llama_tui.ui.screens.help import HelpScreen
from llama_tui.ui.screens.sessions import SessionsScreen
from tests.ui.fakes import FAKE_INFO, FakeBackend
from tests.ui.helpers import (
    make_app,
    notes,
    ready,
    real_app,
    reply_done,
    saved_session,
    screen_text,
    send,
    shown_text,
    until,
)

pytestmark = pytest.mark.asyncio


def status_line(app: LlamaTuiApp) -> str:
    return screen_text(app).splitlines()[-2]


class StagedBackend(FakeBackend):
    """Loading waits on `gate` after sending `stages` (none by default)."""

    def __init__(self, stages: tuple[LoadProgress, ...] = (), **kw: Any) -> None:
        super().__init__(**kw)
        self.stages = stages
        self.gate = threading.Event()

    def load(self, progress: ProgressCallback | None = None) -> Any:
        for p in self.stages:
            if progress:
                progress(p)
        self.gate.wait(10)
        self.info = self.info_template
        return self.info


# -- status bar ----------------------------------------------------------------------------


async def test_loading_names_the_model_once() -> None:
    backend = StagedBackend()
    app = make_app(backend, spec="demo")
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.model.load_id == 1)
        await pilot.pause()
        assert status_line(app).split() == ["loading", "demo"]
        backend.gate.set()
        await ready(pilot)


async def test_ready_stage_is_not_shown_as_loading() -> None:
    backend = StagedBackend(stages=(
        LoadProgress(LoadStage.LOAD, "Loading weights", 0.5),
        LoadProgress(LoadStage.READY, "Fake-Llama-1B ready on cpu"),
    ))
    app = make_app(backend)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: "Loading weights" in app.status.facts.detail)
        await pilot.pause()
        assert app.status.facts.state == "loading"
        assert "ready" not in status_line(app)
        assert status_line(app).split()[:3] == ["Loading", "weights", "50%"]
        backend.gate.set()
        await ready(pilot)
        assert status_line(app).split()[0] == "ready"


async def test_clear_after_a_stopped_reply_is_ready_again() -> None:
    backend = FakeBackend(replies=[["one ", "two ", "three"]], hold_after=1)
    app = make_app(backend)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await send(pilot, "count")
        await until(pilot, lambda: backend.held.is_set())
        await pilot.press("escape")
        await reply_done(pilot)
        assert app.status.facts.state == "stopped"
        await send(pilot, "/clear")
        await until(pilot, lambda: not app.chat_state.conversation.messages)
        facts = app.status.facts
        assert (app.state, facts.state, facts.tokens_per_s, facts.ttft_s) == (
            "ready", "ready", None, None)
        assert status_line(app).split()[0] == "ready"


async def test_opening_another_session_drops_the_last_speed() -> None:
    other = saved_session("old question", "old answer")
    app = make_app(FakeBackend())
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await send(pilot, "hello")
        await reply_done(pilot)
        assert app.status.facts.tokens_per_s == 42.0
        await app.chat.open_session(other.id)
        await until(pilot, lambda: "old answer" in shown_text(app))
        assert app.status.facts.tokens_per_s is None and app.status.facts.ttft_s is None
        assert "tok/s" not in status_line(app)


async def test_ctrl_c_toast_says_what_the_next_ctrl_c_does() -> None:
    backend = FakeBackend(replies=[["one ", "two ", "three"]], hold_after=1)
    app = make_app(backend)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await send(pilot, "count")
        await until(pilot, lambda: backend.held.is_set())
        await pilot.press("ctrl+c")
        await reply_done(pilot)
        toast = next(n for n in notes(app) if n.startswith("Stopped"))
        assert "asks to quit" in toast and "again to quit" not in toast
        await pilot.press("ctrl+c")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        assert app.is_running  # a dialog asks, as the toast said


WIDE_NAME = "通义千问-大模型-🦙-テスト-Chat"  # 28 characters, 45 cells


@pytest.mark.parametrize("width", [60, 80])
async def test_wide_model_name_fits_the_status_bar(width: int) -> None:
    info = dataclasses.replace(FAKE_INFO, name=WIDE_NAME)
    app = make_app(FakeBackend(info_template=info))
    async with app.run_test(size=(width, 24)) as pilot:
        await ready(pilot)
        await until(pilot, lambda: app.status.facts.memory != "")
        await pilot.pause()
        line = status_line(app)
        assert cell_len(line) <= width
        assert "ctx 0/2048" in line, line
        if width >= 80:
            assert f"{WIDE_NAME} · cpu fp32" in line, line
        else:  # cut by cells, ending in "…": the device and the context stay visible
            assert "… · cpu fp32" in line, line
            assert line.split()[1].startswith("通义千问")


# -- commands and the palette --------------------------------------------------------------


async def test_a_typed_prefix_suggests_the_commands_it_extends() -> None:
    app = make_app(FakeBackend())
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await send(pilot, "/sett")
        assert "Did you mean /settings?" in shown_text(app)
        await send(pilot, "/se")
        assert "Did you mean /set, /settings or /sessions?" in shown_text(app)


async def palette_prompts(pilot: Pilot[int], query: str = "") -> list[Any]:
    app = pilot.app
    await pilot.press("ctrl+p")
    await until(pilot, lambda: bool(app.screen.query("CommandList")))
    if query:
        await pilot.press(*query)
    options = app.screen.query_one("CommandList")
    await until(pilot, lambda: options.option_count > 0)  # type: ignore[attr-defined]
    await pilot.pause(0.3)  # the palette gathers hits from its providers in the background
    return [options.get_option_at_index(i) for i in range(options.option_count)]  # type: ignore[attr-defined]


async def test_palette_shows_our_entries_each_help_once() -> None:
    app = make_app(FakeBackend())
    async with app.run_test(size=(80, 40)) as pilot:
        await ready(pilot)
        shown = [str(o.hit.text) for o in await palette_prompts(pilot)]
        assert "/clear" in shown and "Theme" in shown
        assert not {"Keys", "Maximize", "Screenshot", "Quit"} & set(shown), shown
        await pilot.press("escape")
        found = await palette_prompts(pilot, "clear")
        assert str(found[0].hit.text) == "/clear"
        text = screen_text(app)
        assert text.count("start a new conversation") == 1, text


async def test_palette_quit_asks_while_a_reply_is_generated() -> None:
    backend = FakeBackend(replies=[["one ", "two"]], hold_after=1)
    app = make_app(backend)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await send(pilot, "count")
        await until(pilot, lambda: backend.held.is_set())
        found = await palette_prompts(pilot, "quit")
        assert str(found[0].hit.text) == "/quit"
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        assert app.is_running and app.generating
        await pilot.press("n")
        await pilot.press("escape")
        await reply_done(pilot)


# -- sessions --------------------------------------------------------------------------------


def session(prompt: str, model: str) -> Conversation:
    conv = Conversation()
    rec = SessionRecorder(conv)
    rec.model_changed({"name": model})
    rec.user_message(conv.add("user", prompt))
    rec.assistant_finished(conv.add("assistant", "ok"))
    rec.close()
    return conv


async def test_session_rows_align_and_delete_names_the_title() -> None:
    current = session("the open one", "Llama-3.2-1B-Instruct")
    session("short model", "tiny")
    doomed = session("about llamas", "通义千问-模型")
    session("a title far too long for one row of a sixty-column terminal, whose end", "x")
    app = make_app(FakeBackend(), resume=current.id)
    async with app.run_test(size=(60, 24)) as pilot:
        await ready(pilot)
        await pilot.press("f5")
        await until(pilot, lambda: isinstance(app.screen, SessionsScreen)
                    and len(app.screen.titles) == 4)
        await pilot.pause()
        assert "long for one row" not in screen_text(app)  # cut with "…", not wrapped
        options = app.screen.query_one("#sessions")
        texts = {o.id: str(o.prompt) for o in options._options}  # type: ignore[attr-defined]
        starts = {sid: cell_len(t[: t.index(p)]) for sid, t in texts.items()
                  for p in ("the open one", "short model", "about llamas") if p in t}
        assert len(set(starts.values())) == 1, texts  # every title starts in the same column
        options.highlighted = options.get_option_index(doomed.id)  # type: ignore[attr-defined]
        await pilot.press("tab")  # from the search field into the list, where d deletes
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        assert "about llamas" in app.screen.question and doomed.id not in app.screen.question
        await pilot.press("n")


async def test_opening_a_missing_session_says_why_once() -> None:
    app = make_app(FakeBackend())
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await app.chat.open_session("20200101-000000-deadbeef")
        await until(pilot, lambda: any("session" in n for n in notes(app)))
        toast = next(n for n in notes(app) if "session" in n)
        assert toast.count("no such session") == 1 and "--resume" not in toast, toast


# -- 60 columns ------------------------------------------------------------------------------


async def test_60_columns_footer_help_and_status() -> None:
    app = make_app(FakeBackend())
    async with app.run_test(size=(60, 24)) as pilot:
        await ready(pilot)
        await send(pilot, "hello")
        await reply_done(pilot)
        footer = screen_text(app).splitlines()[-1]
        assert "f1 Help" in footer and "f2 Settings" in footer, footer
        await pilot.press("f1")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen))
        await pilot.pause()
        # The dialog's text: what lies between its left border and its right edge.
        screen = screen_text(app).splitlines()
        left = next(line.index("╭─ llama-tui help") for line in screen if "llama-tui help" in line)
        lines = [line[left + 1:].rstrip(" │▄▃▂▁▇█╮╯") for line in screen
                 if line[left:left + 1] == "│"]
        column = next(line.index("send the message") for line in lines
                      if "send the message" in line)
        start = lines.index(" Keys") + 2
        end = next((i for i in range(start, len(lines)) if not lines[i].strip()), len(lines))
        body = lines[start:end]
        for line in body:  # a key in column 3, or wrapped help text under the help column
            indent = len(line) - len(line.lstrip())
            assert indent in (3, column), (line, lines)
        assert any(len(line) - len(line.lstrip()) == column for line in body), lines


# -- reloading frees the old model -------------------------------------------------------------


async def test_reloading_frees_each_old_model(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    models: list[weakref.ref[Any]] = []
    trims: list[bool] = []  # per call: were all the replaced models gone by then?

    def trimmed() -> bool:
        trims.append(all(ref() is None for ref in models))
        return True

    monkeypatch.setattr(local, "release_host_memory", trimmed, raising=False)
    app = real_app(tiny_model_dir, GenerationParams(do_sample=False, max_new_tokens=4))
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        for _ in range(3):
            old = app.model.backend
            models.append(weakref.ref(old._model))  # type: ignore[union-attr]
            await send(pilot, f"/model {tiny_model_dir}")
            await until(pilot, lambda old=old: app.model.backend is not old and app.model.backend)
            await app.workers.wait_for_complete()
            del old
            # The old model is garbage (no worker, message or cache holds it), and the heap
            # was handed back to the OS after it went, not before.
            assert models[-1]() is None
            assert trims and trims[-1], trims
        assert [ref() is None for ref in models] == [True, True, True]


async def test_set_errors_name_the_key_once() -> None:
    app = make_app(FakeBackend())
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await send(pilot, "/set temperature -1")
        await send(pilot, "/set top_k lots")
        lines = [line for line in shown_text(app).splitlines() if line.startswith("/set")]
        assert lines[0].startswith("/set temperature must be"), lines
        assert lines[0].count("temperature") == 1, lines
        assert lines[1].startswith("/set top_k: must be a whole number"), lines


async def test_a_long_load_stage_is_cut_and_the_model_stays_visible() -> None:
    stage = "Converting SmolLM2-135M-Instruct-Q8_0.gguf to safetensors (once)"
    backend = StagedBackend(stages=(LoadProgress(LoadStage.CONVERT, stage, 0.35),))
    app = make_app(backend, spec="demo")
    async with app.run_test(size=(60, 24)) as pilot:
        await until(pilot, lambda: "Converting" in app.status.facts.detail)
        await pilot.pause()
        line = status_line(app)
        assert line.lstrip().startswith("Converting") and "…" in line, line
        assert line.rstrip().endswith("demo"), line
        backend.gate.set()
        await ready(pilot)
        assert status_line(app).split()[:2] == ["ready", "Fake-Llama-1B"]


async def test_palette_theme_entry_opens_the_theme_picker() -> None:
    app = make_app(FakeBackend())
    async with app.run_test(size=(80, 30)) as pilot:
        await ready(pilot)
        found = await palette_prompts(pilot, "theme")
        assert str(found[0].hit.text) == "Theme"
        await pilot.press("enter")
        await until(pilot, lambda: "textual-dark" in screen_text(app))


async def test_resuming_a_missing_session_says_so_once(capsys: pytest.CaptureFixture[str]) -> None:
    from llama_tui.cli import main as cli

    assert cli.main(["--resume", "20200101-000000-deadbeef"]) != 0
    err = capsys.readouterr().err
    assert err.count("20200101-000000-deadbeef") == 1 and err.count("no such session") == 1, err

"""Model loading / errors / switching, the status bar, untrusted text, resize and themes."""

from __future__ import annotations

import threading

import pytest
from textual.widgets import Markdown

from llama_tui.core.backend import ModelInfo
from llama_tui.core.errors import ModelNotCachedError
from llama_tui.ui.app import LlamaTuiApp
from llama_tui.ui.screens.model_picker import ModelPickerScreen
from tests.ui.fakes import FAKE_INFO, FakeBackend, FakeFactory
from tests.ui.helpers import make_app, ready, reply_done, screen_text, send, shown_text, until

pytestmark = pytest.mark.asyncio


def shown_titles(app: LlamaTuiApp) -> str:
    return " ".join(str(n.border_title or "") for n in app.chat.transcript.query(".notice"))


def broken(spec: str) -> FakeBackend:
    return FakeBackend(load_error=ModelNotCachedError(
        f"{spec} is not in the local cache and HF_HUB_OFFLINE is set.",
        "Unset HF_HUB_OFFLINE to download it, or pick a cached model.",
    ))


async def test_status_bar_states_and_facts() -> None:
    gate = threading.Event()
    backend = FakeBackend(load_gate=gate)
    app = make_app(backend)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: "load" in app.status.facts.detail)
        assert app.status.facts.state == "loading"
        gate.set()
        await ready(pilot)
        await until(pilot, lambda: app.status.facts.memory != "")
        facts = app.status.facts
        assert (facts.state, facts.model, facts.device, facts.dtype) == (
            "ready", "Fake-Llama-1B", "cpu", "float32")
        assert facts.context_max == 2048
        assert facts.memory == "RSS 512M"
        await send(pilot, "three little words")
        await reply_done(pilot)
        await until(pilot, lambda: app.status.facts.context_used not in (None, 0))
        facts = app.status.facts
        assert facts.ttft_s == 0.05 and facts.tokens_per_s == 42.0
        line = screen_text(app).splitlines()[-2]
        assert "ready" in line and "ctx" in line and "42.0 tok/s" in line


async def test_load_error_is_shown_and_model_command_recovers() -> None:
    good = FakeBackend(replies=[["works"]])
    app = make_app(factory=FakeFactory(missing=broken("missing"), good=good), spec="missing")
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        assert app.state == "error" and app.model.backend is None
        text = shown_text(app)
        assert "not in the local cache" in text and "Unset HF_HUB_OFFLINE" in text
        assert "F4" in text and "/model" in text
        await send(pilot, "hello?")  # refused clearly, text kept
        assert app.chat.prompt.text == "hello?" and app.chat_state.conversation.messages == []
        app.chat.prompt.clear()
        await send(pilot, "/model good")
        await until(pilot, lambda: app.model.backend is good)
        assert app.state == "ready"
        await send(pilot, "hello")
        await reply_done(pilot)
        assert app.chat_state.conversation.messages[-1].content == "works"


async def test_failed_switch_keeps_the_previous_model() -> None:
    first = FakeBackend()
    app = make_app(factory=FakeFactory(first=first, nope=broken("nope")), spec="first")
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await send(pilot, "/model nope")
        await until(pilot, lambda: "could not load nope" in shown_titles(app))
        assert app.model.backend is first and not first.closed
        assert "Still using Fake-Llama-1B" in shown_text(app)
        assert app.state == "ready"


async def test_switch_model_closes_the_old_one_and_keeps_the_chat() -> None:
    first = FakeBackend()
    second = FakeBackend(info_template=ModelInfo(**{**FAKE_INFO.__dict__, "name": "Second"}))
    app = make_app(factory=FakeFactory(first=first, second=second), spec="first")
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await send(pilot, "hi")
        await reply_done(pilot)
        await pilot.press("f4")
        assert isinstance(app.screen, ModelPickerScreen)
        spec_input = app.screen.query_one("#spec")
        spec_input.value = "second"  # type: ignore[attr-defined]
        await pilot.press("enter")
        await until(pilot, lambda: app.model.backend is second)
        await app.workers.wait_for_complete()
        assert first.closed
        assert app.status.facts.model == "Second"
        assert len(app.chat_state.conversation.messages) == 2
        assert app.chat_state.conversation.model["name"] == "Second"


async def test_untrusted_model_output_is_literal_and_stripped() -> None:
    evil = ["[/INST] ", "[@click=app.quit]x[/] ", "\x1b]52;c;SGFja2Vk", "\x07 ", "[b",
            " \x1b[2J done"]
    app = make_app(FakeBackend(replies=[evil]))
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await send(pilot, "[/INST] [@click=app.quit]me[/]")
        await reply_done(pilot)
        assert app.is_running
        md = app.chat.transcript.query(Markdown).last()
        assert "\x1b" not in md.source and "SGFja2Vk" not in md.source
        screen = screen_text(app)
        assert "[/INST]" in screen and "[@click=app.quit]" in screen
        assert "\x1b" not in screen
        # The exact text stays in the conversation (the journal / JSON keep it).
        assert "\x1b]52" in app.chat_state.conversation.messages[-1].content


async def test_untrusted_error_text_and_notice() -> None:
    bad = FakeBackend(load_error=ValueError("[/] \x1b]0;TITLE\x07 [@click=app.quit]q[/]"))
    app = make_app(bad)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        text = shown_text(app)
        assert "[@click=app.quit]q[/]" in text and "\x1b" not in text
        assert app.is_running


async def test_resize_to_40x12_and_back() -> None:
    app = make_app(FakeBackend(replies=[["a reply that is long enough to wrap " * 3]]))
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await send(pilot, "hi")
        await reply_done(pilot)
        await pilot.resize_terminal(40, 12)
        await pilot.pause()
        assert app.chat.has_class("-narrow")
        await pilot.press("f2")
        await pilot.pause()
        assert not app.query_one("#chat").display or app.query_one("#chat").size.width == 0
        assert app.chat.panel.size.width >= 30
        await pilot.press("f2")
        await pilot.pause()
        assert app.query_one("#chat").display
        assert app.chat.prompt.size.height >= 1
        text = screen_text(app)
        assert len(text.splitlines()) == 12
        await pilot.resize_terminal(80, 24)
        await pilot.pause()
        assert not app.chat.has_class("-narrow")


@pytest.mark.parametrize("theme", ["textual-dark", "textual-light"])
async def test_themes_render(theme: str) -> None:
    app = make_app(FakeBackend(replies=[["# Title\n\n```py\nx = 1\n```"]]))
    async with app.run_test(size=(80, 24)) as pilot:
        app.theme = theme
        await ready(pilot)
        await send(pilot, "hi")
        await reply_done(pilot)
        await pilot.press("f2")
        await pilot.pause()
        assert "x = 1" in screen_text(app)
        assert app.export_screenshot()


async def test_server_without_server_model_asks_for_the_model_the_server_serves() -> None:
    """`--server URL` alone: the server chooses (the TUI used to ask it for 'demo', the
    default --model, and failed with "does not serve 'demo'" where headless worked)."""
    from llama_tui.config.settings import LoadedSettings, Settings
    from llama_tui.core.params import GenerationParams
    from llama_tui.ui.app import create_app

    asked: list[Settings] = []

    def factory(settings: Settings) -> FakeBackend:
        asked.append(settings)
        return FakeBackend()

    settings = Settings(model="demo", server="http://localhost:8080", params=GenerationParams())
    app = create_app(LoadedSettings(settings=settings, sources={}), backend_factory=factory)
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        assert [s.server_model for s in asked] == [None]
        assert app.state == "ready" and app.model.backend is not None
        await send(pilot, "/model other-model")  # naming one asks the server for it
        await until(pilot, lambda: len(asked) == 2 and app.model.loading_spec is None)
        assert asked[1].server_model == "other-model"


async def test_f4_with_a_server_offers_the_models_it_serves() -> None:
    """With --server, the picker lists the server's models (not the local cache or demo)."""
    from llama_tui.config.settings import LoadedSettings, Settings
    from llama_tui.core.params import GenerationParams
    from llama_tui.ui.app import create_app

    def factory(settings: Settings) -> FakeBackend:
        backend = FakeBackend()
        backend.list_models = lambda: ["served/one", "served/two"]  # type: ignore[attr-defined]
        return backend

    settings = Settings(model="demo", server="http://localhost:8080", params=GenerationParams())
    app = create_app(LoadedSettings(settings=settings, sources={}), backend_factory=factory)
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        await pilot.press("f4")
        await until(pilot, lambda: isinstance(app.screen, ModelPickerScreen)
                    and len(app.screen.offered()) == 2)
        assert isinstance(app.screen, ModelPickerScreen)
        assert app.screen.offered() == ["served/one", "served/two"]

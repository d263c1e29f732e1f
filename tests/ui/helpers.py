"""Helpers for Pilot tests: build the app on fakes, wait for conditions without sleeps."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from textual.pilot import Pilot

from llama_tui.config.settings import LoadedSettings, Settings
from llama_tui.core.params import GenerationParams
from llama_tui.session.transcript import Conversation
from llama_tui.ui.app import LlamaTuiApp, create_app
from tests.ui.fakes import FakeBackend, FakeFactory


def make_app(
    backend: FakeBackend | None = None,
    *,
    spec: str = "fake",
    factory: FakeFactory | None = None,
    params: GenerationParams | None = None,
    system_prompt: str = "",
    sources: dict[str, str] | None = None,
    resume: str | None = None,
) -> LlamaTuiApp:
    settings = Settings(model=spec, params=params or GenerationParams(),
                        system_prompt=system_prompt)
    loaded = LoadedSettings(settings=settings, sources=sources or {})
    if factory is None:
        factory = FakeFactory(**{spec: backend or FakeBackend()})
    return create_app(loaded, backend_factory=factory, resume=resume)


async def until(pilot: Pilot[int], cond: Callable[[], object], timeout: float = 10.0) -> None:
    """Let the app run until `cond()` holds (messages from workers get handled meanwhile)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {cond}")
        await pilot.pause()


async def ready(pilot: Pilot[int]) -> LlamaTuiApp:
    app = pilot.app
    assert isinstance(app, LlamaTuiApp)
    await until(pilot, lambda: app.model.backend is not None or app.state == "error")
    await pilot.pause()
    return app


async def send(pilot: Pilot[int], text: str) -> None:
    """Type `text` into the prompt (at once, like a paste) and press Enter."""
    app = pilot.app
    assert isinstance(app, LlamaTuiApp)
    app.chat.prompt.focus()
    app.chat.prompt.load_text(text)
    await pilot.press("enter")


async def reply_done(pilot: Pilot[int]) -> None:
    """Wait for the current reply to finish and its messages to be handled."""
    app = pilot.app
    assert isinstance(app, LlamaTuiApp)
    await until(pilot, lambda: not app.generating)
    await app.workers.wait_for_complete()
    await pilot.pause()


def reply_text(app: object) -> str:
    """The text of the reply in flight so far ("" when none is being generated)."""
    assert isinstance(app, LlamaTuiApp)
    turn = app.chat.replies.turn
    return turn.run.message.content if turn is not None else ""


def shown_text(app: LlamaTuiApp) -> str:
    """Everything the transcript shows as plain text (turns, notices, footers)."""
    from textual.widgets import Markdown, Static

    parts = []
    for w in app.chat.transcript.query("Static, Markdown"):
        if isinstance(w, Markdown):
            parts.append(w.source)
        elif isinstance(w, Static) and w.display:
            parts.append(str(w.render()))
    return "\n".join(parts)


def screen_text(app: LlamaTuiApp) -> str:
    """The screen as plain text lines (what a terminal would show, minus colours)."""
    strips = app.screen._compositor.render_strips()
    return "\n".join("".join(seg.text for seg in strip).rstrip() for strip in strips)


def notes(app: LlamaTuiApp) -> list[str]:
    """Texts of the toasts shown so far."""
    return [str(n.message) for n in app._notifications]


def real_app(model_dir: Path, params: GenerationParams) -> LlamaTuiApp:
    """The app on the real engine with a local model: CPU, float32, generate path (no
    compile), and `params` as if typed on the command line (the model's defaults don't
    override them)."""
    settings = Settings(model=str(model_dir), params=params, device="cpu", dtype="float32",
                        compile=False)
    sources = {name: "flag" for name in GenerationParams.field_names()}
    return create_app(LoadedSettings(settings=settings, sources=sources))


def saved_session(prompt: str, reply: str, *, system_prompt: str = "") -> Conversation:
    """A finished one-turn conversation in the journal, as an earlier run leaves it."""
    from llama_tui.session.recorder import SessionRecorder

    conv = Conversation(system_prompt=system_prompt)
    rec = SessionRecorder(conv)
    rec.user_message(conv.add("user", prompt))
    rec.assistant_finished(conv.add("assistant", reply))
    rec.close()
    return conv

"""The settings panel: validation as you type, overrides, reset, applied next reply, remembered."""

from __future__ import annotations

import json

import pytest
from textual.widgets import Button, Input, Static

from llama_tui.config import remembered_settings_file
from llama_tui.engine.base import GenerationParams
from tests.ui.fakes import FAKE_DEFAULTS, FakeBackend
from tests.ui.helpers import make_app, ready, reply_done, send

pytestmark = pytest.mark.asyncio


async def test_starts_from_model_defaults_and_highlights_overrides() -> None:
    app = make_app(FakeBackend(), params=GenerationParams(top_k=7),
                   sources={"top_k": "config:/x/config.toml"})
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        # Model defaults (fake generation_config) with the user's configured top_k on top.
        assert app.params == FAKE_DEFAULTS.with_changes(top_k=7)
        await pilot.press("f2")
        panel = app.panel
        assert panel.query_one("#sp-temperature", Input).value == "0.6"
        assert panel.query_one("#sp-row-top_k").has_class("-override")
        assert not panel.query_one("#sp-row-temperature").has_class("-override")
        why = panel.query_one("#sp-why-top_k", Static)
        assert "model default: 50" in str(why.render())


async def test_invalid_value_shows_reason_is_not_applied_nor_remembered() -> None:
    backend = FakeBackend()
    app = make_app(backend)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await send(pilot, "before")
        await reply_done(pilot)
        await pilot.press("f2")
        assert app.show_settings
        assert app.focused is app.panel.query_one("#sp-temperature")
        await pilot.press(*"-1")  # select_on_focus: replaces the value
        panel = app.panel
        assert panel.query_one("#sp-temperature", Input).value == "-1"
        assert "must be > 0 when sampling" in str(panel.query_one("#sp-why-temperature",
                                                                    Static).render())
        assert panel.has_class("-invalid")
        assert app.params.temperature == 0.6
        await pilot.press("escape")  # closes the panel
        assert not app.show_settings
        assert not remembered_settings_file().exists()
        await send(pilot, "after")
        await reply_done(pilot)
        assert backend.calls[-1].params.temperature == 0.6


async def test_valid_value_applies_next_reply_keeps_conversation_and_is_remembered() -> None:
    backend = FakeBackend()
    app = make_app(backend)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await send(pilot, "one")
        await reply_done(pilot)
        await pilot.press("f2")
        await pilot.press(*"0.2")
        assert app.params.temperature == 0.2
        assert app.panel.query_one("#sp-row-temperature").has_class("-override")
        # Greedy switch, stop strings.
        app.panel.set_field("stop", "END, \\n\\n")
        await pilot.pause()
        assert app.params.stop == ("END", "\n\n")
        await pilot.press("f2")
        assert not app.show_settings
        await send(pilot, "two")
        await reply_done(pilot)
        assert backend.calls[-1].params.temperature == 0.2
        assert backend.calls[-1].params.stop == ("END", "\n\n")
        assert len(backend.calls[-1].history) == 3  # the conversation was kept
    saved = json.loads(remembered_settings_file().read_text())
    assert saved["generation"]["temperature"] == 0.2


async def test_reset_to_defaults() -> None:
    app = make_app(FakeBackend())
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await send(pilot, "/set temperature 1.3")
        await send(pilot, "/set max_new_tokens 99999")  # above the context: refused
        assert app.params.max_new_tokens == 256
        await pilot.press("f2")
        assert app.panel.query_one("#sp-row-temperature").has_class("-override")
        app.panel.query_one("#sp-reset", Button).press()
        await pilot.pause()
        assert app.params == FAKE_DEFAULTS
        assert not app.panel.query(".sp-row.-override")


async def test_greedy_allows_temperature_zero() -> None:
    backend = FakeBackend()
    app = make_app(backend)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await pilot.press("f2")
        await pilot.press(*"0")
        assert app.params.temperature == 0.6  # invalid while sampling
        app.panel.query_one("#sp-greedy").value = True  # type: ignore[attr-defined]
        await pilot.pause()
        assert app.params.do_sample is False and app.params.temperature == 0.0


async def test_presets_from_the_panel_and_set_preset() -> None:
    backend = FakeBackend()
    app = make_app(backend, params=GenerationParams(max_new_tokens=77),
                   sources={"max_new_tokens": "flag --max-new-tokens"})
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        await pilot.press("f2")
        await pilot.click("#sp-preset-creative")
        assert app.params.do_sample and app.params.temperature == 1.0
        assert (app.params.top_p, app.params.top_k, app.params.min_p) == (0.95, 0, 0.05)
        assert app.params.max_new_tokens == 77  # presets leave length, seed, stops alone
        panel = app.panel
        assert panel.query_one("#sp-temperature", Input).value == "1"
        assert panel.query_one("#sp-row-temperature").has_class("-override")
        await pilot.click("#sp-preset-balanced")
        assert app.params == FAKE_DEFAULTS.with_changes(max_new_tokens=77)
        await send(pilot, "/set preset precise")
        assert not app.params.do_sample
        await send(pilot, "hello")
        await reply_done(pilot)
        assert not backend.calls[-1].params.do_sample
        await send(pilot, "/set preset wild")
        assert not app.params.do_sample  # unknown preset: nothing changed

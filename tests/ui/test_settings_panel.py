"""The settings panel: validation as you type, overrides, reset, applied next reply, remembered.

Remembering is per field: only what the user changed in the panel or with /set.
"""

from __future__ import annotations

import json

import pytest
from textual.widgets import Button, Input, Static

from llama_tui.config.remembered import base_entry, remembered_settings_file, update_remembered
from llama_tui.config.settings import config_file_values, load_settings
from llama_tui.core.params import GenerationParams
from llama_tui.ui.app import LlamaTuiApp, create_app
from tests.ui.fakes import FAKE_DEFAULTS, FakeBackend, FakeFactory
from tests.ui.helpers import make_app, ready, reply_done, saved_session, send, shown_text

pytestmark = pytest.mark.asyncio


async def test_starts_from_model_defaults_and_highlights_overrides() -> None:
    app = make_app(FakeBackend(), params=GenerationParams(top_k=7),
                   sources={"top_k": "config:/x/config.toml"})
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        # Model defaults (fake generation_config) with the user's configured top_k on top.
        assert app.chat_state.params == FAKE_DEFAULTS.with_changes(top_k=7)
        await pilot.press("f2")
        panel = app.chat.panel
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
        assert app.chat.show_settings
        assert app.focused is app.chat.panel.query_one("#sp-temperature")
        await pilot.press(*"-1")  # select_on_focus: replaces the value
        panel = app.chat.panel
        assert panel.query_one("#sp-temperature", Input).value == "-1"
        assert "must be > 0 when sampling" in str(panel.query_one("#sp-why-temperature",
                                                                    Static).render())
        assert panel.has_class("-invalid")
        assert app.chat_state.params.temperature == 0.6
        await pilot.press("escape")  # closes the panel
        assert not app.chat.show_settings
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
        assert app.chat_state.params.temperature == 0.2
        assert app.chat.panel.query_one("#sp-row-temperature").has_class("-override")
        # Greedy switch, stop strings.
        app.chat.panel.set_field("stop", "END, \\n\\n")
        await pilot.pause()
        assert app.chat_state.params.stop == ("END", "\n\n")
        await pilot.press("f2")
        assert not app.chat.show_settings
        await send(pilot, "two")
        await reply_done(pilot)
        assert backend.calls[-1].params.temperature == 0.2
        assert backend.calls[-1].params.stop == ("END", "\n\n")
        assert len(backend.calls[-1].history) == 3  # the conversation was kept
    saved = json.loads(remembered_settings_file().read_text())["fields"]
    assert saved["temperature"] == {"value": 0.2}
    assert saved["stop"] == {"value": ["END", "\n\n"]}
    assert set(saved) == {"temperature", "stop"}  # only what the user changed


async def test_reset_to_defaults() -> None:
    app = make_app(FakeBackend())
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await send(pilot, "/set temperature 1.3")
        await send(pilot, "/set max_new_tokens 99999")  # above the context: refused
        assert app.chat_state.params.max_new_tokens == 256
        await pilot.press("f2")
        assert app.chat.panel.query_one("#sp-row-temperature").has_class("-override")
        app.chat.panel.query_one("#sp-reset", Button).press()
        await pilot.pause()
        assert app.chat_state.params == FAKE_DEFAULTS
        assert not app.chat.panel.query(".sp-row.-override")


async def test_greedy_allows_temperature_zero() -> None:
    backend = FakeBackend()
    app = make_app(backend)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await pilot.press("f2")
        await pilot.press(*"0")
        assert app.chat_state.params.temperature == 0.6  # invalid while sampling
        app.chat.panel.query_one("#sp-greedy").value = True  # type: ignore[attr-defined]
        await pilot.pause()
        assert app.chat_state.params.do_sample is False and app.chat_state.params.temperature == 0.0


async def test_presets_from_the_panel_and_set_preset() -> None:
    backend = FakeBackend()
    app = make_app(backend, params=GenerationParams(max_new_tokens=77),
                   sources={"max_new_tokens": "flag --max-new-tokens"})
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        await pilot.press("f2")
        await pilot.click("#sp-preset-creative")
        assert app.chat_state.params.do_sample and app.chat_state.params.temperature == 1.0
        params = app.chat_state.params
        assert (params.top_p, params.top_k, params.min_p) == (0.95, 0, 0.05)
        assert app.chat_state.params.max_new_tokens == 77  # presets leave length, seed, stops alone
        panel = app.chat.panel
        assert panel.query_one("#sp-temperature", Input).value == "1"
        assert panel.query_one("#sp-row-temperature").has_class("-override")
        await pilot.click("#sp-preset-balanced")
        assert app.chat_state.params == FAKE_DEFAULTS.with_changes(max_new_tokens=77)
        await send(pilot, "/set preset precise")
        assert not app.chat_state.params.do_sample
        await send(pilot, "hello")
        await reply_done(pilot)
        assert not backend.calls[-1].params.do_sample
        await send(pilot, "/set preset wild")
        assert not app.chat_state.params.do_sample  # unknown preset: nothing changed


# -- closing with an invalid value; what is remembered; overrides of config.toml -------------


@pytest.mark.parametrize("key", ["f2", "ctrl+o", "escape"])
async def test_closing_with_an_invalid_value_puts_the_value_in_use_back_and_says_so(
    key: str,
) -> None:
    app = make_app(FakeBackend())
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        await pilot.press("f2")
        await pilot.press(*"abc")  # replaces the temperature
        app.chat.panel.set_field("top_p", "0.5")  # valid, but held back while temperature is not
        await pilot.pause()
        assert app.chat_state.params.top_p == 0.9
        await pilot.press(key)
        assert not app.chat.show_settings
        assert "temperature: 'abc' must be a number; kept 0.6" in shown_text(app)
        assert (app.chat_state.params.temperature, app.chat_state.params.top_p) == (0.6, 0.5)
        await pilot.press("f2")  # reopened: the value in use, no error
        assert app.chat.panel.query_one("#sp-temperature", Input).value == "0.6"
        assert not app.chat.panel.has_class("-invalid")
    assert set(_stored()) == {"top_p"}


def _stored() -> dict[str, dict[str, object]]:
    data = json.loads(remembered_settings_file().read_text())
    assert data["version"] == 2
    fields: dict[str, dict[str, object]] = data["fields"]
    return fields


async def test_flag_and_session_values_are_never_remembered() -> None:
    app = make_app(FakeBackend(), params=GenerationParams(temperature=0.9),
                   system_prompt="Flag prompt.",
                   sources={"temperature": "flag", "system_prompt": "flag"})
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        await send(pilot, "/set top_k 9")  # the user's own, then the session's over it
        app.chat_state.conversation.settings = {"top_k": 7, "max_new_tokens": 99}  # as if resumed
        await send(pilot, "/set session")
        assert (app.chat_state.params.top_k, app.chat_state.params.max_new_tokens) == (7, 99)
        await send(pilot, "/set top_p 0.5")
        await pilot.press("f2")
        app.chat.panel.set_field("min_p", "0.1")  # the panel posts every field; only min_p changed
        await pilot.pause()
        await pilot.press("f2")
        state = app.chat_state
        assert state.system_prompt == "Flag prompt." and state.params.temperature == 0.9
    assert _stored() == {"top_k": {"value": 9}, "top_p": {"value": 0.5},
                         "min_p": {"value": 0.1}}


def _launch(config: str) -> LlamaTuiApp:
    from llama_tui import locations

    locations.config_file().parent.mkdir(parents=True, exist_ok=True)
    locations.config_file().write_text('model = "fake"\n' + config)
    loaded = load_settings(environ={}, cwd=locations.config_file().parent)
    return create_app(loaded, backend_factory=FakeFactory(fake=FakeBackend()))


async def test_remembered_value_over_config_is_shown_and_can_be_forgotten() -> None:
    _launch("[generation]\ntop_p = 0.8\n")  # the file as it was when the user changed top_p
    files = config_file_values(None)
    update_remembered({"top_p": base_entry("top_p", 0.95, files)}, files)
    app = _launch("[generation]\ntop_p = 0.8\n")
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        assert app.chat_state.params.top_p == 0.95
        assert "top_p 0.95 (config.toml: 0.8)" in shown_text(app)  # the startup notice
        await pilot.press("f2")
        assert app.chat.panel.query_one("#sp-row-top_p").has_class("-override")
        why = str(app.chat.panel.query_one("#sp-why-top_p", Static).render())
        assert "yours over config.toml's 0.8" in why and "/set forget top_p" in why
        await pilot.press("f2")
        await send(pilot, "/set")
        assert "top_p = 0.95  (yours; config.toml: 0.8; /set forget top_p)" in shown_text(app)
        await send(pilot, "/set forget top_p")
        assert app.chat_state.params.top_p == 0.8
        assert _stored() == {}
        await pilot.press("f2")
        why = str(app.chat.panel.query_one("#sp-why-top_p", Static).render())
        assert "yours" not in why
        await pilot.press("f2")
        await send(pilot, "/set temperature 0.3")
        await send(pilot, "/set min_p 0.1")
        await send(pilot, "/settings")
        await send(pilot, "/settings")  # closing the panel writes them
        assert set(_stored()) == {"temperature", "min_p"}
        await send(pilot, "/set forget all")
        params = app.chat_state.params
        assert (params.temperature, params.min_p) == (0.6, 0.0)  # the model's
        assert _stored() == {}
        await send(pilot, "/set forget nonsense")
        assert "unknown setting 'nonsense'" in shown_text(app)


async def test_config_edit_since_the_change_wins_and_is_announced_once() -> None:
    _launch("[generation]\ntop_p = 0.8\n")
    files = config_file_values(None)
    update_remembered({"top_p": base_entry("top_p", 0.95, files)}, files)
    app = _launch("[generation]\ntop_p = 0.85\n")  # edited after the change
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        assert app.chat_state.params.top_p == 0.85
        assert "top_p is now 0.85" in shown_text(app)
    assert _stored() == {}  # the stale entry is gone: the next launch says nothing
    app = _launch("[generation]\ntop_p = 0.85\n")
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        assert "top_p" not in shown_text(app)


async def test_opening_a_session_keeps_the_users_prompt_and_never_remembers_the_sessions() -> None:
    other = saved_session("hi", "hello", system_prompt="Session prompt.")
    app = make_app(FakeBackend())
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        await send(pilot, "/system Mine.")
        await app.chat.open_session(other.id)
        assert app.chat_state.system_prompt == "Session prompt."
        await send(pilot, "/set top_p 0.5")
        await pilot.press("f2")
        await pilot.press("f2")
    assert _stored() == {"system_prompt": {"value": "Mine."}, "top_p": {"value": 0.5}}


async def test_settings_warnings_stay_in_the_transcript() -> None:
    app = _launch("[generation]\ntop_k = -3\n")
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        assert "top_k" in shown_text(app) and "line 3" in shown_text(app)


async def test_set_and_system_are_remembered_at_once() -> None:
    """A typed /set, preset or /system is on disk before any reply or exit: a crash or a
    second instance must not lose it."""
    app = make_app(FakeBackend())
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        await send(pilot, "/set top_p 0.8")
        assert _stored() == {"top_p": {"value": 0.8}}
        await send(pilot, "/system Be brief.")
        assert _stored()["system_prompt"] == {"value": "Be brief."}
        await send(pilot, "/set preset precise")
        assert _stored()["do_sample"] == {"value": False}

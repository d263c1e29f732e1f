"""`--server URL` without `--server-model`: the TUI and headless mode both use the model the
server serves (one rule, `llama_tui.chat.state.requested_model`), against the real
`transformers serve` on the tiny model.

The TUI used to ask the server for 'demo' (the default local model spec) and failed with
"the server at ... does not serve 'demo'", while headless mode answered.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from llama_tui.chat.state import asking_for, model_label, requested_model
from llama_tui.config.settings import LoadedSettings, Settings
from llama_tui.core.params import GenerationParams
from tests.engine.remote_server import TransformersServer


def test_the_rule_for_which_model_is_asked_for() -> None:
    local = Settings(model="org/name")
    remote = Settings(server="http://127.0.0.1:9")  # model stays the default 'demo'
    assert requested_model(local) == "org/name"
    assert requested_model(remote) is None  # the server's own, never 'demo'
    assert model_label(remote) == "http://127.0.0.1:9"
    picked = asking_for(remote, "served-one")
    assert (requested_model(picked), picked.model) == ("served-one", "demo")
    assert requested_model(asking_for(picked, None)) is None
    assert requested_model(asking_for(local, "other")) == "other"


def test_headless_uses_the_served_model(tserve: TransformersServer) -> None:
    from llama_tui.session.store import latest_session_id, load_conversation

    env = dict(os.environ)
    env.pop("HF_TOKEN", None)
    r = subprocess.run(
        [sys.executable, "-m", "llama_tui", "--server", tserve.url, "--max-new-tokens", "4",
         "--prompt", "hi"],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()
    conv = load_conversation(latest_session_id() or "")
    assert tserve.model_id in conv.model["source"]
    assert conv.messages[-1].status == "complete"


@pytest.mark.asyncio
async def test_tui_uses_the_served_model_and_f4_lists_it(tserve: TransformersServer) -> None:
    from llama_tui.ui.app import create_app
    from llama_tui.ui.screens.model_picker import ModelPickerScreen
    from tests.ui.helpers import ready, reply_done, send, shown_text, until

    settings = Settings(server=tserve.url, params=GenerationParams(max_new_tokens=4))
    app = create_app(LoadedSettings(settings=settings, sources={"max_new_tokens": "flag"}))
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        assert app.state == "ready", shown_text(app)
        assert "does not serve" not in shown_text(app)
        assert tserve.model_id in app.chat_state.conversation.model["source"]
        await send(pilot, "hi")
        await reply_done(pilot)
        reply = app.chat_state.conversation.messages[-1]
        assert (reply.role, reply.status) == ("assistant", "complete"), shown_text(app)

        await pilot.press("f4")
        await until(pilot, lambda: isinstance(app.screen, ModelPickerScreen))
        picker = app.screen
        assert isinstance(picker, ModelPickerScreen)
        await until(pilot, lambda: tserve.model_id in picker.offered())
        assert "demo" not in picker.offered()  # the bundled model is not the server's

"""`ChatState` without Textual: its journal methods, and the settings rule for a new model."""

from __future__ import annotations

from pathlib import Path

from llama_tui.chat.state import ChatState, params_for_model, user_fields
from llama_tui.core.backend import ModelInfo
from llama_tui.core.params import GenerationParams
from llama_tui.session.journal import load_journal
from llama_tui.session.recorder import SessionRecorder
from llama_tui.session.transcript import Conversation


def _state(tmp_path: Path) -> ChatState:
    conv = Conversation()
    return ChatState(conv, GenerationParams(), "", SessionRecorder(conv, tmp_path))


def test_user_choices_win_over_the_model_and_misfits_give_way(tmp_path: Path) -> None:
    defaults = GenerationParams(temperature=0.2, max_new_tokens=100)
    mine = GenerationParams(temperature=0.9, max_new_tokens=5000, top_p=0.5)
    chosen = user_fields({"temperature": "flag", "max_new_tokens": "config", "top_p": "default"})
    assert chosen == {"temperature", "max_new_tokens"}
    params, warnings = params_for_model(defaults, mine, chosen, context_length=2048)
    assert (params.temperature, params.top_p) == (0.9, defaults.top_p)
    assert params.max_new_tokens == 100  # 5000 does not fit a 2048-token context
    assert len(warnings) == 1 and "using the model default" in warnings[0]


def test_journal_methods_rebuild_the_same_conversation(tmp_path: Path) -> None:
    state = _state(tmp_path)
    state.model_loaded(ModelInfo(name="m", spec="m", source="here"))
    first = state.add_user("first")
    state.add_user("second")
    state.rename("A title")
    assert [m.id for m in state.remove_from(1)] != [first.id]
    assert state.recorder is not None
    path = state.recorder.path
    state.close()
    conv = load_journal(path)
    assert [m.content for m in conv.messages] == ["first"]
    assert (conv.title, conv.model["spec"]) == ("A title", "m")


def test_switch_closes_the_old_journal_and_journals_settings_again(tmp_path: Path) -> None:
    state = _state(tmp_path)
    assert state.sync_settings() and not state.sync_settings()
    old = state.recorder
    other = Conversation()
    state.switch(other, SessionRecorder(other, tmp_path))
    assert old is not None and old._closed
    assert state.sync_settings()  # the new conversation's journal gets them too

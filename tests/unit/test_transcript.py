"""The conversation data model and its untrusted-input parsing."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llama_tui.core.backend import ChatMessage
from llama_tui.session.transcript import Conversation, Message, is_safe_id, new_id


def test_add_sets_title_from_first_prompt_and_history() -> None:
    c = Conversation(system_prompt="be brief")
    c.add("user", "  hello\n  world  ")
    c.add("assistant", "", status="error")
    c.add("assistant", "partial", status="stopped")
    assert c.title == "hello world"
    assert c.first_prompt() == "  hello\n  world  "
    assert c.history() == (
        ChatMessage("system", "be brief"),
        ChatMessage("user", "  hello\n  world  "),
        ChatMessage("assistant", "partial"),
    )
    last = c.last("user")
    assert last is not None and last.content.strip().startswith("hello")


def test_message_round_trip() -> None:
    m = Message("assistant", "x\x1b[2Jy", status="stopped", stats={"a": 1}, error="boom")
    m.interrupted = True
    assert Message.from_dict(m.to_dict()) == m


def test_conversation_round_trip() -> None:
    c = Conversation(title="t", system_prompt="s", model={"name": "m"}, settings={"top_k": 5})
    c.add("user", "q")
    c.add("assistant", "a")
    assert Conversation.from_dict(c.to_dict()) == c


@pytest.mark.parametrize(
    "bad",
    [
        None,
        [],
        "x",
        {"role": "robot", "content": "x"},
        {"role": "user", "content": 5},
        {"role": "user", "content": ["x"]},
    ],
)
def test_message_from_dict_rejects(bad: Any) -> None:
    with pytest.raises(ValueError):
        Message.from_dict(bad)


def test_message_from_dict_repairs_fields() -> None:
    m = Message.from_dict(
        {
            "role": "user",
            "content": "x",
            "status": "weird",
            "created": float("nan"),
            "stats": [1],
            "error": 3,
            "id": None,
            "interrupted": "yes",
        }
    )
    assert m.status == "complete"
    assert math.isfinite(m.created)
    assert m.stats is None and m.error is None and m.id and m.interrupted is False


def test_conversation_from_dict_drops_bad_messages_and_unsafe_ids() -> None:
    c = Conversation.from_dict(
        {"id": "../../.bashrc", "messages": [{"role": "user", "content": "ok"}, {"role": 1}]}
    )
    assert is_safe_id(c.id) and c.id != "../../.bashrc"
    assert [m.content for m in c.messages] == ["ok"]
    assert c.load_warnings == ["1 unreadable message(s) left out"]
    with pytest.raises(ValueError):
        Conversation.from_dict({"messages": "nope"})


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        (new_id(), True),
        ("abc", True),
        ("a.b-c_d", True),
        ("", False),
        (".hidden", False),
        ("..", False),
        ("a/b", False),
        ("a\\b", False),
        ("a\0b", False),
        ("x" * 101, False),
        (5, False),
    ],
)
def test_is_safe_id(value: object, ok: bool) -> None:
    assert is_safe_id(value) is ok


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
    max_leaves=10,
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(st.sampled_from(["id", "title", "created", "messages", "model"]), json_values)
)
def test_conversation_from_dict_never_crashes(d: dict[str, Any]) -> None:
    try:
        c = Conversation.from_dict(d)
    except ValueError:
        return
    assert is_safe_id(c.id)

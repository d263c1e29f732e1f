"""Conversations as trees: siblings, the active path, the journal and JSON round trips."""

from __future__ import annotations

import json
from pathlib import Path

from llama_tui.chat.state import ChatState
from llama_tui.core.params import GenerationParams
from llama_tui.session import tree
from llama_tui.session.export import from_json, to_json, to_markdown
from llama_tui.session.journal import load_journal
from llama_tui.session.recorder import SessionRecorder
from llama_tui.session.transcript import Conversation, Message


def _state(tmp_path: Path) -> ChatState:
    conv = Conversation()
    recorder = SessionRecorder(conv, tmp_path / "sessions", checkpoint_interval=0.0)
    return ChatState(conv, GenerationParams(), "", recorder)


def _reply(state: ChatState, text: str) -> Message:
    msg = state.conversation.add("assistant", text)
    assert state.recorder is not None
    state.recorder.assistant_started(msg)
    state.recorder.assistant_finished(msg)
    return msg


def _texts(conv: Conversation) -> list[str]:
    return [m.content for m in conv.messages]


def _retry(state: ChatState, text: str) -> Message:
    state.branch_from(len(state.conversation.messages) - 1)
    return _reply(state, text)


def test_retry_keeps_every_version_as_siblings(tmp_path: Path) -> None:
    state = _state(tmp_path)
    state.add_user("ask")
    first = _reply(state, "one")
    second = _retry(state, "two")
    third = _retry(state, "three")
    conv = state.conversation
    assert _texts(conv) == ["ask", "three"]
    assert [m.content for m in tree.siblings(conv, third)] == ["one", "two", "three"]
    assert tree.position(conv, third) == (3, 3)
    assert first.parent == second.parent == third.parent == conv.messages[0].id
    assert tree.other_branches(conv) == 2


def test_step_and_select_switch_the_active_path(tmp_path: Path) -> None:
    state = _state(tmp_path)
    state.add_user("ask")
    _reply(state, "one")
    _retry(state, "two")
    state.add_user("follow-up")  # the follow-up belongs to branch "two"
    _reply(state, "answer to two")
    conv = state.conversation
    fork = tree.last_fork(conv)
    assert fork is not None and fork.content == "two"
    assert state.step_branch(-1) is not None
    assert _texts(conv) == ["ask", "one"]
    assert state.step_branch(-1) is None  # already the first
    assert state.step_branch(+1) is not None
    # Back on "two", the path goes on through what followed it.
    assert _texts(conv) == ["ask", "two", "follow-up", "answer to two"]


def test_editing_a_prompt_makes_a_sibling_prompt(tmp_path: Path) -> None:
    state = _state(tmp_path)
    state.add_user("first question")
    _reply(state, "a1")
    state.add_user("typo qestion")
    _reply(state, "a2")
    state.branch_from(2)  # edit: the prompt and its reply become a branch
    assert _texts(state.conversation) == ["first question", "a1"]
    edited = state.add_user("typo fixed")
    _reply(state, "a3")
    conv = state.conversation
    assert [m.content for m in tree.siblings(conv, edited)] == ["typo qestion", "typo fixed"]
    rows = tree.branch_rows(conv)
    assert [(r.message.content, r.depth, r.index, r.count, r.active) for r in rows] == [
        ("first question", 0, 1, 1, True),
        ("typo qestion", 1, 1, 2, False),
        ("typo fixed", 1, 2, 2, True),
    ]


def test_journal_restores_the_tree_and_the_active_branch(tmp_path: Path) -> None:
    state = _state(tmp_path)
    state.add_user("ask")
    _reply(state, "one")
    _retry(state, "two")
    _retry(state, "three")
    state.step_branch(-1)  # "two" active: journaled as an `active` record
    assert state.recorder is not None
    state.recorder.close()
    conv = load_journal(state.recorder.path)
    assert _texts(conv) == ["ask", "two"]
    assert sorted(m.content for m in conv.branches) == ["one", "three"]
    assert tree.position(conv, conv.messages[-1]) == (2, 3)
    types = [json.loads(line)["type"] for line in state.recorder.path.read_text().splitlines()]
    assert "removed" not in types and types[-1] == "active"


def test_crash_mid_branch_keeps_the_checkpointed_text(tmp_path: Path) -> None:
    state = _state(tmp_path)
    state.add_user("ask")
    _reply(state, "one")
    state.branch_from(1)
    msg = state.conversation.add("assistant", "", status="streaming")
    assert state.recorder is not None
    state.recorder.assistant_started(msg)
    msg.content = "partial second"
    state.recorder.flush()  # what a checkpoint writes; then the process dies
    conv = load_journal(state.recorder.path)
    assert _texts(conv) == ["ask", "partial second"]
    assert conv.messages[-1].interrupted and conv.messages[-1].status == "stopped"
    assert [m.content for m in conv.branches] == ["one"]


def test_old_json_export_without_parents_loads_linearly() -> None:
    conv = Conversation()
    conv.add("user", "q")
    conv.add("assistant", "r")
    doc = json.loads(to_json(conv))
    del doc["conversation"]["branches"]  # an export written before branches existed
    for m in doc["conversation"]["messages"]:
        del m["parent"], m["replay"]
    back = from_json(json.dumps(doc))
    assert [m.parent for m in back.messages] == [None, back.messages[0].id]


def test_json_round_trip_keeps_the_whole_tree(tmp_path: Path) -> None:
    state = _state(tmp_path)
    state.add_user("ask")
    _reply(state, "one")
    _retry(state, "two")
    state.step_branch(-1)
    conv = state.conversation
    back = from_json(to_json(conv))
    assert _texts(back) == ["ask", "one"]
    assert [m.content for m in back.branches] == ["two"]
    assert back.branches[0].parent == back.messages[0].id
    md = to_markdown(conv)
    assert "one" in md and "two" not in md
    assert "1 other branch" in md


def test_damaged_branches_are_left_out_not_fatal() -> None:
    data = {"id": "x2", "messages": [{"id": "u", "role": "user", "content": "q"}],
            "branches": [
                {"id": "orphan", "role": "assistant", "content": "x", "parent": "nowhere"},
                {"id": "u", "role": "assistant", "content": "dup id", "parent": None},
                {"id": "c1", "role": "assistant", "content": "cycle", "parent": "c2"},
                {"id": "c2", "role": "assistant", "content": "cycle", "parent": "c1"},
                {"id": "ok", "role": "assistant", "content": "fine", "parent": "u"},
                "garbage"]}
    conv = Conversation.from_dict(data)
    assert [m.id for m in conv.branches] == ["ok"]
    assert conv.load_warnings


DATA = Path(__file__).parent / "data"


def test_files_written_by_main_before_branches_still_load() -> None:
    """A journal and a JSON export written by llama-tui at commit 45aca32 (made with its own
    recorder and exporter: a retried reply journaled as `removed`, a reply interrupted
    mid-stream) load as one path, with nothing lost that main kept."""
    journal = load_journal(DATA / "main-45aca32.jsonl")
    assert _texts(journal) == ["What is the capital of France?",
                               "The capital of France is Paris.", "And of Italy?", "Rome"]
    assert journal.branches == []
    assert journal.messages[-1].interrupted and journal.messages[-1].status == "stopped"
    assert [m.parent for m in journal.messages[1:]] == [m.id for m in journal.messages[:-1]]
    exported = from_json((DATA / "main-45aca32.json").read_bytes())
    assert _texts(exported) == _texts(journal)
    assert exported.system_prompt == "Be brief." and exported.branches == []
    # Resuming it and retrying now keeps both versions.
    state = ChatState(exported, GenerationParams(), "Be brief.")
    state.branch_from(3)
    state.conversation.add("assistant", "Rome, of course.")
    assert [m.content for m in tree.siblings(exported, exported.messages[-1])] == [
        "Rome", "Rome, of course."]


def test_a_crash_mid_thought_keeps_the_checkpointed_thought(tmp_path: Path) -> None:
    state = _state(tmp_path)
    state.add_user("think first")
    msg = state.conversation.add("assistant", "", status="streaming")
    assert state.recorder is not None
    state.recorder.assistant_started(msg)
    msg.thinking = "Let me see: two"
    state.recorder.assistant_progress(msg)
    msg.thinking += " plus two is four."
    msg.content = "Four"
    state.recorder.flush()  # a checkpoint; then the process dies
    conv = load_journal(state.recorder.path)
    reply = conv.messages[-1]
    assert reply.thinking == "Let me see: two plus two is four."
    assert reply.content == "Four" and reply.interrupted

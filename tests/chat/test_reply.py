"""The chat core without Textual: one reply's outcome, in the conversation and the journal.

A scripted fake backend gives exact control (a reply held mid-stream, a failure after some
text); the tiny random Llama checks the same path on the real local backend.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from llama_tui.chat.footer import footer_for, message_footer
from llama_tui.chat.reply import ReplyError, ReplyRun, run_reply, stream_reply
from llama_tui.chat.state import ChatState
from llama_tui.core.backend import GenerationStats, StopReason
from llama_tui.core.params import GenerationParams
from llama_tui.session.journal import load_journal
from llama_tui.session.recorder import SessionRecorder
from llama_tui.session.transcript import Conversation
from tests.ui.fakes import FakeBackend, FakeGenerationError


def _state(tmp_path: Path, system_prompt: str = "Be brief.") -> ChatState:
    conv = Conversation(system_prompt=system_prompt)
    recorder = SessionRecorder(conv, tmp_path / "sessions", checkpoint_interval=0.0)
    return ChatState(conv, GenerationParams(max_new_tokens=8), system_prompt, recorder)


def _records(state: ChatState) -> list[dict[str, object]]:
    assert state.recorder is not None
    return [json.loads(line) for line in state.recorder.path.read_text().splitlines()]


def _reloaded(state: ChatState) -> Conversation:
    assert state.recorder is not None
    state.recorder.close()
    return load_journal(state.recorder.path)


def test_complete_reply_maps_stats_and_journals_the_turn(tmp_path: Path) -> None:
    state = _state(tmp_path)
    shown: list[str] = []
    outcome = run_reply(state, FakeBackend(replies=[["Hel", "lo"]]), "hi", on_chunk=shown.append)

    assert outcome.status == "complete" and outcome.error is None
    assert shown == ["Hel", "lo"] and outcome.message.content == "Hello"
    assert outcome.stats is not None and outcome.stats.generated_tokens == 2
    assert outcome.message.stats == outcome.stats.to_dict()
    types = [r["type"] for r in _records(state)]
    # The new journal's snapshot carries the prompt (fsynced before the reply starts).
    assert types == ["snapshot", "settings", "assistant_started", "checkpoint", "checkpoint",
                     "assistant_finished"]
    conv = _reloaded(state)
    assert [(m.role, m.content, m.status) for m in conv.messages] == [
        ("user", "hi", "complete"), ("assistant", "Hello", "complete")]
    assert conv.messages[1].stats and conv.messages[1].stats["generated_tokens"] == 2
    assert conv.system_prompt == "Be brief." and conv.settings["max_new_tokens"] == 8


def test_cancel_mid_stream_keeps_the_partial_text_as_stopped(tmp_path: Path) -> None:
    state = _state(tmp_path)
    backend = FakeBackend(replies=[["one ", "two ", "three"]], hold_after=2)
    cancel = threading.Event()

    def stop_when_held() -> None:
        backend.held.wait(30)
        cancel.set()

    stopper = threading.Thread(target=stop_when_held)
    stopper.start()
    outcome = run_reply(state, backend, "count", cancel=cancel)
    stopper.join()

    assert outcome.status == "stopped"
    assert outcome.message.content == "one two "
    assert outcome.stats is not None and outcome.stats.stop_reason is StopReason.CANCELLED
    reply = _reloaded(state).messages[-1]
    assert (reply.content, reply.status, reply.interrupted) == ("one two ", "stopped", False)


def test_stop_finalises_at_once_and_late_stats_are_kept(tmp_path: Path) -> None:
    """The TUI's Esc: the run ends as stopped now; the engine's stats arrive afterwards."""
    state = _state(tmp_path)
    state.add_user("hi")
    run = ReplyRun(state)
    run.add("par")
    stopped = run.stop()
    assert run.cancel.is_set() and stopped.status == "stopped" and stopped.stats is None
    run.add("tial")  # a chunk still in flight after Esc is ignored
    late = GenerationStats(generated_tokens=1, stop_reason=StopReason.CANCELLED)
    again = run.finish(late)
    assert again.status == "stopped" and again.stats == late
    reply = _reloaded(state).messages[-1]
    assert (reply.content, reply.status) == ("par", "stopped")
    assert reply.stats and reply.stats["generated_tokens"] == 1


def test_error_keeps_the_partial_text_and_records_cause_and_fix(tmp_path: Path) -> None:
    state = _state(tmp_path)
    failure = FakeGenerationError("the device ran out of memory", "Lower max_new_tokens.")
    backend = FakeBackend(replies=[["partial ", "text"]], stream_error=failure)
    outcome = run_reply(state, backend, "go")

    assert outcome.status == "error"
    assert outcome.error == ReplyError("the device ran out of memory", "Lower max_new_tokens.",
                                       "FakeGenerationError")
    assert outcome.error.exception is failure
    assert outcome.message.content == "partial text"
    assert outcome.stats is not None and outcome.stats.stop_reason is StopReason.ERROR
    reply = _reloaded(state).messages[-1]
    assert (reply.content, reply.status, reply.error) == (
        "partial text", "error", "the device ran out of memory")
    text, variant = footer_for(outcome.status, outcome.stats, outcome.error.cause,
                               outcome.error.fix)
    assert variant == "error" and "out of memory" in text and "Lower max_new_tokens." in text


def test_a_sink_failure_stops_the_reply_and_propagates(tmp_path: Path) -> None:
    """Headless mode's stdout closed (EPIPE) mid-reply: journaled as stopped, then raised."""
    state = _state(tmp_path)

    def closed(_text: str) -> None:
        raise BrokenPipeError

    with pytest.raises(BrokenPipeError):
        run_reply(state, FakeBackend(replies=[["a", "b"]]), "hi", on_chunk=closed)
    reply = _reloaded(state).messages[-1]
    assert (reply.content, reply.status) == ("a", "stopped")


def test_unexpected_failure_names_the_log_and_redacts(tmp_path: Path) -> None:
    state = _state(tmp_path)
    token = "hf_" + "Ab1" * 12
    backend = FakeBackend(stream_error=RuntimeError(f"boom {token}\x1b[31m"))
    outcome = run_reply(state, backend, "hi")
    assert outcome.error is not None and outcome.error.kind == "RuntimeError"
    assert token not in outcome.error.cause and "\x1b" not in outcome.error.cause
    assert "log file" in outcome.error.fix


def test_stream_reply_reports_to_a_sink_for_the_worker_thread(tmp_path: Path) -> None:
    """The TUI's shape: the worker streams, the owner applies chunks and the outcome."""
    state = _state(tmp_path)
    state.add_user("hi")
    run = ReplyRun(state)
    events: list[tuple[str, object]] = []

    class Sink:
        def started(self, dropped: int, prompt_tokens: int) -> None:
            events.append(("started", dropped))

        def chunk(self, text: str) -> None:
            events.append(("chunk", text))

        def finished(self, stats: GenerationStats | None, error: ReplyError | None) -> None:
            events.append(("finished", error))
            self.stats = stats

    sink = Sink()
    worker = threading.Thread(target=stream_reply,
                              args=(FakeBackend(replies=[["x", "y"]]), run.request, sink))
    worker.start()
    worker.join()
    assert events == [("started", 0), ("chunk", "x"), ("chunk", "y"), ("finished", None)]
    for kind, text in events:
        if kind == "chunk":
            run.add(str(text))
    outcome = run.finish(sink.stats)
    assert outcome.status == "complete" and run.message.content == "xy"


def test_continuing_extends_the_last_reply(tmp_path: Path) -> None:
    state = _state(tmp_path)
    backend = FakeBackend(replies=[["Once "], ["upon"]], stop_reason=StopReason.LENGTH)
    first = run_reply(state, backend, "story")
    assert footer_for(first.status, first.stats)[1] == "length"
    second = run_reply(state, backend, continuing=True)
    assert second.message is first.message and second.message.content == "Once upon"
    # The model saw the partial reply, to extend it.
    assert backend.calls[1].history[-1].content == "Once "
    assert len(_reloaded(state).messages) == 2


def test_settings_are_journaled_once_until_they_change(tmp_path: Path) -> None:
    state = _state(tmp_path)
    backend = FakeBackend()
    run_reply(state, backend, "a")
    run_reply(state, backend, "b")
    state.params = state.params.with_changes(temperature=0.1)
    run_reply(state, backend, "c")
    settings = [r for r in _records(state) if r["type"] == "settings"]
    assert len(settings) == 2
    assert _reloaded(state).messages[-1].settings == state.params.to_dict()


def test_resumed_footer_is_the_live_footer(tmp_path: Path) -> None:
    state = _state(tmp_path)
    outcome = run_reply(state, FakeBackend(replies=[["a", "b", "c"]]), "hi")
    live = footer_for(outcome.status, outcome.stats)
    assert message_footer(_reloaded(state).messages[-1]) == live
    assert live == ("3 tokens · 42.0 tok/s · prompt 3 new, first token 0.05 s", "ok")


def test_tiny_model_reply_through_the_core(tiny_model_dir: Path, tmp_path: Path) -> None:
    from llama_tui.core.backend import LoadOptions
    from llama_tui.engine.local.backend import LocalBackend

    backend = LocalBackend(str(tiny_model_dir), LoadOptions(compile=False))
    state = _state(tmp_path, system_prompt="")
    state.model_loaded(backend.load())
    state.params = GenerationParams(do_sample=False, max_new_tokens=5)
    shown: list[str] = []
    try:
        outcome = run_reply(state, backend, "Once upon a time", on_chunk=shown.append)
    finally:
        backend.close()
    assert outcome.status == "complete" and outcome.message.content == "".join(shown) != ""
    assert outcome.stats is not None and 0 < outcome.stats.generated_tokens <= 5
    conv = _reloaded(state)
    assert conv.model["spec"] == str(tiny_model_dir)
    assert conv.messages[-1].content == outcome.message.content


def test_a_stopped_reply_read_back_says_it_can_be_continued(tmp_path: Path) -> None:
    state = _state(tmp_path)
    state.add_user("hi")
    run = ReplyRun(state)
    run.add("par")
    run.stop()
    run.finish(GenerationStats(generated_tokens=1, stop_reason=StopReason.CANCELLED))
    reply = _reloaded(state).messages[-1]
    assert message_footer(reply) == ("■ stopped · Ctrl+G or /continue to go on", "stopped")
    reply.interrupted = True
    assert message_footer(reply)[0].startswith("■ interrupted (the app ended) · Ctrl+G")

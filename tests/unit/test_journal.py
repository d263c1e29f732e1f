"""The session journal: recording, loading damaged files, listing, resuming, signals."""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llama_tui import locations
from llama_tui.session.journal import (
    DEFAULT_CHECKPOINT_INTERVAL,
    SessionLoadError,
    load_journal,
    parse_journal,
    resolve_session,
)
from llama_tui.session.recorder import SessionRecorder, install_signal_flush
from llama_tui.session.store import (
    delete_session,
    latest_session_id,
    list_sessions,
    rename_session,
)
from llama_tui.session.transcript import Conversation

REPO = Path(__file__).resolve().parents[2]
TOKEN = "hf_" + "A1b2C3d4" * 5
FAST = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def recorder(conv: Conversation, clock: Clock | None = None, **kw: Any) -> SessionRecorder:
    return SessionRecorder(conv, clock=clock or Clock(), **kw)


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def full_turn(conv: Conversation, rec: SessionRecorder, clock: Clock) -> None:
    """settings + model + a prompt + a streamed, finished reply."""
    rec.settings_changed({"temperature": 0.5, "stop": ["</s>"]}, "You are terse.")
    rec.model_changed({"name": "tiny", "spec": "org/tiny@abc", "revision": "abc", "dtype": "bf16"})
    rec.user_message(conv.add("user", "Hello \x1b]52;c;aGk=\x07 there 你好 🙂"))
    a = conv.add("assistant", "", status="streaming")
    rec.assistant_started(a)
    for word in ["Hi", " there", ",", " friend", "."]:
        a.content += word
        clock.now += 0.6
        rec.assistant_progress(a)
    a.status = "complete"
    a.stats = {"generated_tokens": 5, "stop_reason": "eos", "ttft_s": 0.1}
    rec.assistant_finished(a)


# -- recording -----------------------------------------------------------------------------


def test_no_file_until_first_message() -> None:
    conv = Conversation()
    rec = recorder(conv)
    rec.settings_changed({"temperature": 1.0}, "sys")
    rec.title_changed("t")
    rec.flush()
    assert not rec.path.exists()
    rec.user_message(conv.add("user", "hi"))
    kinds = [r["type"] for r in records(rec.path)]
    # The snapshot carries the earlier metadata; the prompt is a record of its own.
    assert kinds[0] == "snapshot"
    assert records(rec.path)[0]["conversation"]["settings"] == {"temperature": 1.0}


def test_modes_and_location() -> None:
    conv = Conversation()
    rec = recorder(conv)
    rec.user_message(conv.add("user", "hi"))
    assert rec.path == locations.sessions_dir() / f"{conv.id}.jsonl"
    assert stat.S_IMODE(rec.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(rec.path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(locations.data_dir().stat().st_mode) == 0o700


def test_user_message_is_fsynced_before_returning(monkeypatch: pytest.MonkeyPatch) -> None:
    conv = Conversation()
    rec = recorder(conv)
    synced: list[bytes] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        real(fd)
        synced.append(rec.path.read_bytes())

    monkeypatch.setattr(os, "fsync", fsync)
    rec.user_message(conv.add("user", "the prompt"))
    assert synced and b"the prompt" in synced[-1]


def test_round_trip_full_turn() -> None:
    clock = Clock()
    conv = Conversation()
    rec = recorder(conv, clock)
    full_turn(conv, rec, clock)
    rec.close()
    loaded = load_journal(rec.path)
    assert loaded == conv
    assert loaded.settings == {"temperature": 0.5, "stop": ["</s>"]}
    assert loaded.system_prompt == "You are terse."
    assert loaded.model["revision"] == "abc"
    assert loaded.messages[1].stats == {"generated_tokens": 5, "stop_reason": "eos", "ttft_s": 0.1}
    assert loaded.load_warnings == []


def test_journal_lines_are_ascii_without_raw_controls() -> None:
    clock = Clock()
    conv = Conversation()
    rec = recorder(conv, clock)
    full_turn(conv, rec, clock)
    data = rec.path.read_bytes()
    assert data.isascii()
    assert not any(b < 0x20 and b != 0x0A for b in data)


def test_checkpoints_are_throttled_deltas() -> None:
    clock = Clock()
    conv = Conversation()
    rec = recorder(conv, clock)
    rec.user_message(conv.add("user", "q"))
    a = conv.add("assistant", "", status="streaming")
    rec.assistant_started(a)
    for i in range(100):  # 100 chunks over 5 s
        a.content += f"{i} "
        clock.now += 0.05
        rec.assistant_progress(a)
    cps = [r for r in records(rec.path) if r["type"] == "checkpoint"]
    assert 4 <= len(cps) <= 5  # one per second, not one per chunk
    assert "".join(r["text"] for r in cps) == a.content[: cps[-1]["offset"] + len(cps[-1]["text"])]
    assert all(r["id"] == a.id for r in cps)


def test_killed_mid_reply_restores_last_checkpoint_as_interrupted() -> None:
    clock = Clock()
    conv = Conversation()
    rec = recorder(conv, clock)
    rec.user_message(conv.add("user", "q"))
    a = conv.add("assistant", "", status="streaming")
    rec.assistant_started(a)
    a.content = "first part"
    clock.now += 2
    rec.assistant_progress(a)
    a.content += " not yet checkpointed"
    rec.assistant_progress(a)  # within the interval: not written
    loaded = load_journal(rec.path)  # as if SIGKILLed now: no close, no flush
    last = loaded.messages[-1]
    assert (last.content, last.status, last.interrupted) == ("first part", "stopped", True)
    rec.flush()  # what the SIGTERM / SIGHUP handler does
    assert load_journal(rec.path).messages[-1].content == a.content


def test_rewritten_partial_text_uses_common_prefix() -> None:
    clock = Clock()
    conv = Conversation()
    rec = recorder(conv, clock)
    rec.user_message(conv.add("user", "q"))
    a = conv.add("assistant", "", status="streaming")
    rec.assistant_started(a)
    a.content = "hello wor"
    rec.flush()
    a.content = "hello there"  # not an extension of what was recorded
    rec.flush()
    assert load_journal(rec.path).messages[-1].content == "hello there"


def test_progress_without_start_records_the_start() -> None:
    conv = Conversation()
    rec = recorder(conv)
    rec.user_message(conv.add("user", "q"))
    a = conv.add("assistant", "abc", status="streaming")
    rec.assistant_progress(a)
    assert load_journal(rec.path).messages[-1].content == "abc"


def test_error_reply_and_cleared() -> None:
    conv = Conversation()
    rec = recorder(conv)
    rec.user_message(conv.add("user", "q"))
    a = conv.add("assistant", "part", status="streaming")
    rec.assistant_started(a)
    a.status, a.error = "error", "CUDA out of memory"
    rec.assistant_finished(a)
    loaded = load_journal(rec.path)
    assert (loaded.messages[-1].status, loaded.messages[-1].error) == (
        "error",
        "CUDA out of memory",
    )
    conv.messages.clear()
    rec.cleared()
    rec.user_message(conv.add("user", "fresh start"))
    assert [m.content for m in load_journal(rec.path).messages] == ["fresh start"]


def test_messages_removed() -> None:
    conv = Conversation()
    rec = recorder(conv)
    rec.user_message(conv.add("user", "q"))
    a = conv.add("assistant", "bad answer")
    rec.assistant_finished(a)
    conv.messages.remove(a)
    rec.messages_removed([a.id])  # "retry"
    b = conv.add("assistant", "good answer")
    rec.assistant_finished(b)
    assert load_journal(rec.path) == conv


def test_metadata_is_redacted_content_is_not() -> None:
    conv = Conversation()
    rec = recorder(conv)
    rec.user_message(conv.add("user", f"my token is {TOKEN}"))
    rec.model_changed({"name": "m", "source": f"https://x/?t={TOKEN}"})
    rec.title_changed(f"about {TOKEN}")
    a = conv.add("assistant", "", status="error")
    a.error = f"401 for {TOKEN}"
    a.stats = {"error": f"Bearer {TOKEN}"}
    rec.assistant_finished(a)
    data = rec.path.read_text()
    # Exactly one copy: the user's own message text (kept exact; exports redact it).
    assert data.count(TOKEN) == 1
    loaded = load_journal(rec.path)
    assert loaded.messages[0].content == f"my token is {TOKEN}"
    assert TOKEN not in (loaded.messages[1].error or "") and TOKEN not in loaded.title


def test_write_failure_is_reported_and_healed(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    conv = Conversation()
    errors: list[str] = []
    rec = recorder(conv, clock, on_error=errors.append)
    rec.user_message(conv.add("user", "first"))
    real = os.write

    def full_disk(fd: int, data: bytes) -> int:
        if fd > 2:
            real(fd, bytes(data[:5]))  # a torn partial line, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data)

    with monkeypatch.context() as m:
        m.setattr(os, "write", full_disk)
        rec.user_message(conv.add("user", "second"))  # must not raise
        rec.user_message(conv.add("user", "third"))
    assert rec.error is not None and "No space left" in rec.error
    assert len(errors) == 1  # reported once, not per record
    rec.user_message(conv.add("user", "fourth"))
    assert rec.error is None
    loaded = load_journal(rec.path)
    assert [m.content for m in loaded.messages] == ["first", "second", "third", "fourth"]


def test_unsafe_id_is_replaced() -> None:
    conv = Conversation(id="../../escape")
    rec = recorder(conv)
    rec.user_message(conv.add("user", "x"))
    assert rec.path.parent == locations.sessions_dir()
    assert conv.id != "../../escape"


# -- resuming ------------------------------------------------------------------------------


def test_resume_appends_without_snapshot_when_in_sync() -> None:
    clock = Clock()
    conv = Conversation()
    rec = recorder(conv, clock)
    full_turn(conv, rec, clock)
    rec.close()
    resumed = load_journal(rec.path)
    rec2 = recorder(resumed)
    rec2.user_message(resumed.add("user", "again"))
    rec2.close()
    assert [r["type"] for r in records(rec.path)].count("snapshot") == 1
    assert load_journal(rec.path) == resumed


def test_resume_from_other_state_writes_snapshot() -> None:
    conv = Conversation()
    rec = recorder(conv)
    rec.user_message(conv.add("user", "one"))
    rec.user_message(conv.add("user", "two"))
    rec.close()
    older = Conversation.from_dict(conv.to_dict())
    del older.messages[1]  # e.g. an export made before "two"
    rec2 = recorder(older)
    rec2.user_message(older.add("user", "three"))
    assert [m.content for m in load_journal(rec.path).messages] == ["one", "three"]


def test_resume_after_torn_last_line_starts_a_new_line() -> None:
    conv = Conversation()
    rec = recorder(conv)
    rec.user_message(conv.add("user", "one"))
    rec.close()
    with rec.path.open("ab") as f:
        f.write(b'{"v":1,"type":"message","mess')  # killed mid-write
    resumed = load_journal(rec.path)
    assert resumed.load_warnings == []  # a torn last line is expected, not a warning
    rec2 = recorder(resumed)
    rec2.user_message(resumed.add("user", "two"))
    loaded = load_journal(rec.path)
    assert [m.content for m in loaded.messages] == ["one", "two"]
    assert loaded.load_warnings == ["1 damaged line(s) in " + rec.path.name + " skipped"]


def test_recorder_sets_aside_unreadable_journal() -> None:
    conv = Conversation()
    path = locations.sessions_dir() / f"{conv.id}.jsonl"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x00\xff garbage")
    rec = recorder(conv)
    rec.user_message(conv.add("user", "x"))
    assert (path.parent / f"{path.name}.corrupt").read_bytes() == b"\x00\xff garbage"
    assert [m.content for m in load_journal(path).messages] == ["x"]


# -- loading damaged files -----------------------------------------------------------------


def _journal_bytes() -> tuple[bytes, Conversation]:
    clock = Clock()
    conv = Conversation()
    rec = recorder(conv, clock)
    full_turn(conv, rec, clock)
    rec.user_message(conv.add("user", "second prompt"))
    rec.close()
    return rec.path.read_bytes(), conv


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"\n\n  \n", "empty"),
        (bytes(range(256)) * 4, "no readable records"),
        (b'{"type": "from-the-future"}\n', "no readable records"),
        (b"[[[[" * 50_000, "no readable records"),
    ],
)
def test_unreadable_files_raise_clean_error(tmp_path: Path, data: bytes, reason: str) -> None:
    p = tmp_path / "x.jsonl"
    p.write_bytes(data)
    with pytest.raises(SessionLoadError) as info:
        load_journal(p)
    assert info.value.path == p and reason in str(info.value)
    assert p.read_bytes() == data  # never modified by a plain load


def test_missing_file_raises_clean_error(tmp_path: Path) -> None:
    with pytest.raises(SessionLoadError) as info:
        load_journal(tmp_path / "nope.jsonl")
    assert "nope.jsonl" in str(info.value)


def test_set_aside_only_when_completely_unreadable(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"\x00garbage\n")
    with pytest.raises(SessionLoadError) as info:
        load_journal(bad, set_aside_unreadable=True)
    assert not bad.exists()
    assert (tmp_path / "bad.jsonl.corrupt").read_bytes() == b"\x00garbage\n"
    assert info.value.path == tmp_path / "bad.jsonl.corrupt"
    data, _ = _journal_bytes()
    partly = tmp_path / "partly.jsonl"
    partly.write_bytes(b"\x00garbage\n" + data)
    load_journal(partly, set_aside_unreadable=True)
    assert partly.read_bytes() == b"\x00garbage\n" + data


def test_garbage_and_unknown_lines_are_skipped_and_counted(tmp_path: Path) -> None:
    data, conv = _journal_bytes()
    lines = data.splitlines(keepends=True)
    lines.insert(2, b"\xff\xfe not json\n")
    lines.insert(4, b'{"v": 9, "type": "hologram", "x": 1}\n')
    lines.insert(5, b'{"type": "message", "message": {"role": "wizard"}}\n')
    p = tmp_path / "x.jsonl"
    p.write_bytes(b"".join(lines))
    loaded = load_journal(p)
    assert loaded.messages == conv.messages
    assert loaded.load_warnings == [
        "2 damaged line(s) in x.jsonl skipped",
        "1 record(s) from a newer llama-tui ignored",
    ]


def test_missing_checkpoint_is_detected_not_spliced(tmp_path: Path) -> None:
    clock = Clock()
    conv = Conversation()
    rec = recorder(conv, clock)
    rec.user_message(conv.add("user", "q"))
    a = conv.add("assistant", "", status="streaming")
    rec.assistant_started(a)
    for part in ["aaa", "bbb", "ccc"]:
        a.content += part
        clock.now += 2
        rec.assistant_progress(a)
    lines = rec.path.read_bytes().splitlines(keepends=True)
    cps = [i for i, line in enumerate(lines) if b'"checkpoint"' in line]
    del lines[cps[1]]  # lose the middle checkpoint ("bbb")
    p = tmp_path / "x.jsonl"
    p.write_bytes(b"".join(lines))
    loaded = load_journal(p)
    assert loaded.messages[-1].content == "aaa"  # never "aaaccc"
    assert "1 reply checkpoint(s) could not be applied" in loaded.load_warnings


def test_every_truncation_point_loads_or_fails_cleanly(tmp_path: Path) -> None:
    data, conv = _journal_bytes()
    first_line = data.index(b"\n") + 1
    for cut in range(0, len(data) + 1, 7):
        try:
            loaded, _ = parse_journal(data[:cut], "x.jsonl")
        except SessionLoadError:
            assert cut < first_line
            continue
        # Whatever survives is a consistent earlier state of the same conversation.
        assert loaded.id == conv.id
        assert len(loaded.messages) <= len(conv.messages)
        for got, want in zip(loaded.messages, conv.messages, strict=False):
            assert got.id == want.id and want.content.startswith(got.content)


@FAST
@given(st.binary(max_size=2000))
def test_any_bytes_load_or_fail_cleanly(data: bytes) -> None:
    try:
        conv, _ = parse_journal(data, "x.jsonl")
    except SessionLoadError as err:
        assert err.path == Path("x.jsonl")
        return
    assert isinstance(conv, Conversation)


_LINE = st.one_of(
    st.binary(max_size=80).filter(lambda b: b"\n" not in b),
    st.builds(
        lambda d: json.dumps(d).encode(),
        st.fixed_dictionaries(
            {"type": st.sampled_from(["message", "checkpoint", "snapshot", "title", "model"])},
            optional={
                "message": st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3),
                "id": st.text(max_size=4),
                "offset": st.integers(-3, 50),
                "text": st.text(max_size=5),
                "title": st.integers() | st.text(max_size=5),
                "conversation": st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
            },
        ),
    ),
)


@pytest.fixture(scope="module")
def sample_journal(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, Conversation]:
    clock = Clock()
    conv = Conversation()
    rec = SessionRecorder(conv, tmp_path_factory.mktemp("journal"), clock=clock)
    full_turn(conv, rec, clock)
    rec.close()
    return rec.path.read_bytes(), conv


@FAST
@given(lines=st.lists(_LINE, max_size=10), where=st.integers(0, 12))
def test_valid_journal_with_hostile_lines_inserted(
    sample_journal: tuple[bytes, Conversation], lines: list[bytes], where: int
) -> None:
    data, conv = sample_journal
    good = data.splitlines()
    at = max(1, min(where, len(good)))  # after the first snapshot
    mixed = b"\n".join(good[:at] + lines + good[at:]) + b"\n"
    loaded, _ = parse_journal(mixed, "x.jsonl")  # must not raise: the snapshot is intact
    assert loaded.id == conv.id


@FAST
@given(
    st.lists(
        st.tuples(st.text(min_size=1, max_size=6), st.floats(0, 1.5)), min_size=1, max_size=30
    ),
    st.booleans(),
)
def test_streaming_property_loss_bounded_by_checkpoints(
    chunks: list[tuple[str, float]], flush: bool
) -> None:
    clock = Clock()
    conv = Conversation()
    rec = SessionRecorder(conv, clock=clock)
    rec.user_message(conv.add("user", "q"))
    a = conv.add("assistant", "", status="streaming")
    rec.assistant_started(a)
    last_written_at = clock.now
    written = ""
    for text, dt in chunks:
        a.content += text
        clock.now += dt
        rec.assistant_progress(a)
        if clock.now - last_written_at >= DEFAULT_CHECKPOINT_INTERVAL:
            last_written_at, written = clock.now, a.content
    if flush:
        rec.flush()
        written = a.content
    got = load_journal(rec.path).messages[-1]
    assert got.content == written  # exactly what the throttle allows, nothing spliced
    assert got.interrupted and got.status == "stopped"
    rec.close()


# -- the session catalogue -----------------------------------------------------------------


def _session(prompt: str, mtime: float | None = None, model: str = "tiny") -> Conversation:
    conv = Conversation()
    rec = recorder(conv)
    rec.model_changed({"name": model})
    rec.user_message(conv.add("user", prompt))
    rec.close()
    if mtime is not None:
        os.utime(rec.path, (mtime, mtime))
    return conv


def test_list_sessions_newest_first_with_broken_ones_flagged() -> None:
    assert list_sessions() == []
    old = _session("old prompt", mtime=1_000_000)
    new = _session("new \x1b[31mprompt\n", mtime=2_000_000)
    broken = locations.sessions_dir() / "broken.jsonl"
    broken.write_bytes(b"\xff\xff")
    os.utime(broken, (3_000_000, 3_000_000))
    rows = list_sessions()
    assert [r.id for r in rows] == ["broken", new.id, old.id]
    assert rows[0].error == "no readable records" and not rows[0].ok
    assert rows[1].first_prompt == "new prompt" and rows[1].model == "tiny"
    assert rows[1].message_count == 1 and rows[1].created == new.created
    assert latest_session_id() == new.id


def test_latest_session_skips_empty_sessions() -> None:
    assert latest_session_id() is None
    conv = _session("hello", mtime=1_000_000)
    empty = Conversation()
    rec = recorder(empty)
    rec.user_message(empty.add("user", "x"))
    empty.messages.clear()
    rec.cleared()
    assert latest_session_id() == conv.id


def test_resolve_session() -> None:
    a = _session("a")
    assert resolve_session(a.id) == locations.sessions_dir() / f"{a.id}.jsonl"
    assert resolve_session(a.id[:-2]) == resolve_session(a.id)  # unique prefix
    path = locations.sessions_dir() / f"{a.id}.jsonl"
    assert resolve_session(str(path)) == path
    with pytest.raises(SessionLoadError, match="no such session"):
        resolve_session("19990101-000000-abcdef")
    with pytest.raises(SessionLoadError, match="no such file"):
        resolve_session("/no/such/file.jsonl")
    with pytest.raises(SessionLoadError, match="NUL"):
        resolve_session("a\0b")
    _session("b")
    with pytest.raises(SessionLoadError, match="more than one"):
        resolve_session(a.id[:4])


def test_rename_and_delete() -> None:
    conv = _session("prompt")
    path = locations.sessions_dir() / f"{conv.id}.jsonl"
    with path.open("ab") as f:
        f.write(b'{"torn')
    rename_session(conv.id, f"New name {TOKEN}")
    loaded = load_journal(path)
    assert loaded.title == "New name hf_***"
    assert [m.content for m in loaded.messages] == ["prompt"]
    assert delete_session(conv.id) == path
    assert not path.exists()
    with pytest.raises(SessionLoadError):
        delete_session(conv.id)
    with pytest.raises(SessionLoadError):
        rename_session("../../etc/passwd", "x")


# -- signals -------------------------------------------------------------------------------


def test_signal_handler_flushes_then_exits_via_callback() -> None:
    conv = Conversation()
    rec = recorder(conv)
    rec.user_message(conv.add("user", "q"))
    a = conv.add("assistant", "", status="streaming")
    rec.assistant_started(a)
    a.content = "pending text"
    rec.assistant_progress(a)  # throttled: not written yet
    codes: list[int] = []
    before = signal.getsignal(signal.SIGUSR1)
    restore = install_signal_flush(lambda: rec, exit=codes.append, signals=[signal.SIGUSR1])
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        deadline = time.monotonic() + 5
        while not codes and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        restore()
    assert codes == [128 + signal.SIGUSR1]
    assert signal.getsignal(signal.SIGUSR1) == before
    assert load_journal(rec.path).messages[-1].content == "pending text"


_CHILD = textwrap.dedent(
    """
    import os, signal, sys, time
    from llama_tui.session.recorder import SessionRecorder, install_signal_flush
    from llama_tui.session.transcript import Conversation

    conv = Conversation(id="drill")
    rec = SessionRecorder(conv)
    install_signal_flush(lambda: rec)
    rec.user_message(conv.add("user", "finished turn"))
    done = conv.add("assistant", "finished reply")
    rec.assistant_finished(done)
    rec.user_message(conv.add("user", "last prompt"))
    reply = conv.add("assistant", "", status="streaming")
    rec.assistant_started(reply)
    reply.content = "partial reply, never checkpointed"
    rec.assistant_progress(reply)  # inside the throttle interval: only in memory
    os.kill(os.getpid(), getattr(signal, sys.argv[1]))
    time.sleep(10)
    print("handler did not exit")
    """
)


def _child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


@pytest.mark.parametrize(("sig", "code"), [("SIGTERM", 143), ("SIGHUP", 129)])
def test_sigterm_and_sighup_flush_in_a_real_process(sig: str, code: int) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, sig],
        env=_child_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == code, proc.stderr
    conv = load_journal(locations.sessions_dir() / "drill.jsonl")
    assert [(m.role, m.content, m.status, m.interrupted) for m in conv.messages] == [
        ("user", "finished turn", "complete", False),
        ("assistant", "finished reply", "complete", False),
        ("user", "last prompt", "complete", False),
        ("assistant", "partial reply, never checkpointed", "stopped", True),
    ]


_STREAMER = textwrap.dedent(
    """
    import os, sys, time
    from llama_tui.session.recorder import SessionRecorder
    from llama_tui.session.transcript import Conversation

    conv = Conversation(id="killed")
    rec = SessionRecorder(conv)
    rec.user_message(conv.add("user", "count"))
    reply = conv.add("assistant", "", status="streaming")
    rec.assistant_started(reply)
    fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    start = time.monotonic()
    print("ready", flush=True)
    i = 0
    while True:
        reply.content += f"{i:06d} "
        rec.assistant_progress(reply)
        i += 1
        os.pwrite(fd, f"{i} {time.monotonic() - start:.6f}".ljust(40).encode(), 0)
        time.sleep(0.005)
    """
)


def test_sigkill_loses_at_most_one_checkpoint_interval(tmp_path: Path) -> None:
    """The crash drill for the journal alone: SIGKILL mid-stream, measure what is lost."""
    progress = tmp_path / "progress"
    proc = subprocess.Popen(
        [sys.executable, "-c", _STREAMER, str(progress)],
        env=_child_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(2.7)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    generated, elapsed = progress.read_text().split()
    n, seconds = int(generated), float(elapsed)
    got = load_journal(locations.sessions_dir() / "killed.jsonl").messages[-1]
    assert got.interrupted and got.status == "stopped"
    saved = len(got.content) // 7
    assert got.content == "".join(f"{i:06d} " for i in range(saved))  # exact, never spliced
    lost_tokens = max(0, n - saved)
    lost_seconds = lost_tokens * seconds / n
    print(f"SIGKILL drill: {n} tokens in {seconds:.2f}s, lost {lost_tokens} = {lost_seconds:.3f}s")
    assert saved > 0
    assert lost_seconds <= DEFAULT_CHECKPOINT_INTERVAL + 0.3


def test_session_package_imports_no_ui_or_ml_libraries() -> None:
    code = (
        "import sys, llama_tui.session.store, llama_tui.session.export;"
        "bad = [m for m in ('textual', 'rich', 'torch', 'transformers') if m in sys.modules];"
        "print(','.join(bad))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=_child_env(), capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""

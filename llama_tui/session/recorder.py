"""Writing the session journal while the conversation happens, and flushing it on signals.

`SessionRecorder` turns UI events (prompt sent, reply started / progressing / finished,
settings, model or title changed) into journal records (format: `journal.py`), each written
whole with one `os.write` on an O_APPEND descriptor and fsynced where it matters: the prompt
before generation starts, every reply checkpoint, every finished reply.

Loss window: checkpoints are throttled to one per `checkpoint_interval` seconds (monotonic
clock, default 1 s). A written record is in the kernel, so SIGKILL loses at most the text
generated since the last checkpoint (under one interval); SIGHUP / SIGTERM lose nothing,
because `install_signal_flush` writes the pending text before exiting. A power cut can also
lose at most one interval: each checkpoint is fsynced.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from llama_tui import locations
from llama_tui.atomic import FILE_MODE, fsync_dir, make_private_dirs, write_all
from llama_tui.session.journal import (
    DEFAULT_CHECKPOINT_INTERVAL,
    SessionLoadError,
    ends_with_newline,
    journal_path,
    read_journal,
    set_aside,
)
from llama_tui.session.records import (
    Record,
    active_rec,
    checkpoint_rec,
    cleared_rec,
    encode_record,
    message_rec,
    model_rec,
    removed_rec,
    reply_finished_rec,
    reply_started_rec,
    settings_rec,
    snapshot_rec,
    state_record,
    title_rec,
)
from llama_tui.session.transcript import Conversation, Message, is_safe_id, new_id
from llama_tui.text import redact

_OPEN_FLAGS = (
    os.O_RDWR  # read: to check the last byte for a torn line
    | os.O_APPEND
    | os.O_CREAT
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_NOFOLLOW", 0)  # never append through a planted symlink
)


class SessionRecorder:
    """Journals one `Conversation` as the UI changes it. Call from one thread (the UI's).

    The file is created on the first message, so starting and quitting the app leaves no
    empty session behind; metadata changes before then are part of the first snapshot.
    The recorder never raises on I/O errors: the in-memory conversation stays the source of
    truth, `error` holds the last failure (for a status line), `on_error` is called once
    when writing starts failing, and the next successful write resynchronises the file with
    a snapshot.
    """

    def __init__(
        self,
        conversation: Conversation,
        directory: Path | None = None,
        *,
        checkpoint_interval: float = DEFAULT_CHECKPOINT_INTERVAL,
        on_error: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not is_safe_id(conversation.id):
            conversation.id = new_id()  # loaded from an untrusted file
        self.conversation = conversation
        self.directory = directory or locations.sessions_dir()
        self.path = journal_path(conversation.id, self.directory)
        self.checkpoint_interval = checkpoint_interval
        self.on_error = on_error
        self.error: str | None = None
        self._clock = clock
        self._fd: int | None = None
        self._closed = False
        self._need_snapshot = False
        self._line_open = False  # a write was cut short: start the next one on a new line
        # The reply being streamed: what the journal already holds of it, and when.
        self._streaming: Message | None = None
        self._recorded_text = ""
        self._recorded_thinking = ""  # a reasoning model's thought, journaled the same way
        self._last_checkpoint = 0.0
        # The state an existing journal must describe to be appended to as it is. Taken now:
        # by the time the file is opened (lazily) the conversation already has a new message.
        self._initial_state = state_record(conversation)
        # Re-entrant: the signal handler runs on the UI thread, possibly inside a write.
        self._lock = threading.RLock()

    # -- public API ----------------------------------------------------------------------

    def user_message(self, msg: Message) -> None:
        """A finished message (normally the prompt): appended and fsynced before generation."""
        self._record(message_rec(msg), sync=True)

    def assistant_started(self, msg: Message) -> None:
        self._streaming = msg
        self._recorded_text = msg.content
        self._recorded_thinking = msg.thinking
        self._last_checkpoint = self._clock()
        self._record(reply_started_rec(msg), sync=True)

    def assistant_progress(self, msg: Message) -> None:
        """Call after every chunk; writes a checkpoint at most once per interval."""
        if self._streaming is not msg:
            self.assistant_started(msg)  # progress without a start: record the start
            return
        if self._clock() - self._last_checkpoint >= self.checkpoint_interval:
            self._checkpoint()

    def assistant_finished(self, msg: Message) -> None:
        """The reply ended (complete / stopped / error): full text, status, stats; fsynced."""
        self._streaming = None
        self._record(reply_finished_rec(msg), sync=True)

    def settings_changed(self, params: dict[str, Any], system_prompt: str) -> None:
        """Also updates the conversation's `settings` and `system_prompt`."""
        self.conversation.settings = dict(params)
        self.conversation.system_prompt = system_prompt
        self._record(settings_rec(params, system_prompt), sync=True, metadata=True)

    def model_changed(self, info: dict[str, Any]) -> None:
        """Also updates the conversation's `model` (ModelInfo fields as a dict)."""
        self.conversation.model = dict(info)
        self._record(model_rec(info), sync=True, metadata=True)

    def title_changed(self, title: str) -> None:
        self.conversation.title = title
        self._record(title_rec(title), sync=True, metadata=True)

    def cleared(self) -> None:
        """The conversation's messages were cleared (the caller empties the list)."""
        self._streaming = None
        self._record(cleared_rec(), sync=True, metadata=True)

    def messages_removed(self, ids: list[str]) -> None:
        """Messages were taken out of the conversation (retry, edit); the caller removes them."""
        if self._streaming is not None and self._streaming.id in ids:
            self._streaming = None
        self._record(removed_rec(ids), sync=True, metadata=True)

    def path_changed(self) -> None:
        """The active path was switched or cut short (the caller changed the conversation):
        the journal records where it ends now."""
        conv = self.conversation
        self._record(active_rec(conv.messages[-1].id if conv.messages else None),
                     sync=True, metadata=True)

    def flush(self) -> None:
        """Write the pending partial reply (if any) and fsync now. Never raises.

        For SIGHUP / SIGTERM handlers and before anything risky.
        """
        with self._lock:
            if self._closed:
                return
            if self._streaming is not None and self._pending():
                self._checkpoint()
            elif self._fd is not None:
                self._sync()

    def close(self) -> None:
        """Flush and close the file. Further calls are ignored. Safe to call twice."""
        with self._lock:
            self.flush()
            self._closed = True
            if self._fd is not None:
                with contextlib.suppress(OSError):
                    os.close(self._fd)
                self._fd = None

    # -- internals -----------------------------------------------------------------------

    def _checkpoint(self) -> None:
        msg = self._streaming
        if msg is None:
            return
        if not self._pending():
            self._last_checkpoint = self._clock()
            return
        old, new = self._recorded_text, msg.content
        offset = _delta_offset(old, new)
        thinking = None
        if msg.thinking != self._recorded_thinking:
            at = _delta_offset(self._recorded_thinking, msg.thinking)
            thinking = (at, msg.thinking[at:])
        if self._record(checkpoint_rec(msg.id, offset, new[offset:], thinking), sync=True):
            self._recorded_text, self._recorded_thinking = new, msg.thinking
        self._last_checkpoint = self._clock()

    def _pending(self) -> bool:
        """The streaming reply has text or thought the journal does not hold yet."""
        msg = self._streaming
        return msg is not None and (msg.content != self._recorded_text
                                    or msg.thinking != self._recorded_thinking)

    def _record(self, rec: Record, *, sync: bool, metadata: bool = False) -> bool:
        """Append one record; True when it (or a snapshot covering it) reached the file."""
        with self._lock:
            if self._closed:
                return False
            if self._fd is None:
                # Nothing to journal yet: a metadata change of an empty, unsaved session is
                # carried by the first snapshot.
                if metadata and not self.conversation.messages and not self.path.exists():
                    return False
                if not self._open():
                    return False
            if self._need_snapshot:
                # Catch up after failed writes: the snapshot holds the current state,
                # including whatever `rec` describes.
                rec = snapshot_rec(self.conversation)
            ok = self._append(rec) and (not sync or self._sync())
            if ok and rec["type"] == "snapshot":
                self._need_snapshot = False
                if self._streaming is not None:
                    self._recorded_text = self._streaming.content
                    self._recorded_thinking = self._streaming.thinking
            return ok

    def _open(self) -> bool:
        try:
            make_private_dirs(self.directory, chmod_existing=True)
            existing = self.path.exists()
            on_disk: Conversation | None = None
            if existing:
                try:
                    on_disk = read_journal(self.path)[0]
                except SessionLoadError:
                    set_aside(self.path)  # keep the damaged file; start a fresh one
                    existing = False
            self._fd = os.open(self.path, _OPEN_FLAGS, FILE_MODE)
            # A crash may have left a torn last line: never glue the next record onto it.
            self._line_open = not ends_with_newline(self._fd)
            if not existing:
                fsync_dir(self.directory)
        except OSError as exc:
            self._failed(exc)
            return False
        # A new file starts with a snapshot; an existing one gets one only if it does not
        # describe this conversation (e.g. a JSON export resumed after its journal was deleted).
        if on_disk is None or state_record(on_disk) != self._initial_state:
            self._need_snapshot = True
        return True

    def _append(self, rec: Record) -> bool:
        assert self._fd is not None
        line = encode_record(self.conversation.id, rec)
        if self._line_open:
            line = b"\n" + line  # terminate the torn line a failed write left behind
        try:
            self._line_open = True
            write_all(self._fd, line)
            self._line_open = False
        except OSError as exc:
            self._need_snapshot = True
            self._failed(exc)
            return False
        return True

    def _sync(self) -> bool:
        assert self._fd is not None
        try:
            os.fsync(self._fd)
        except OSError as exc:
            self._need_snapshot = True
            self._failed(exc)
            return False
        if self.error is not None:
            self.error = None  # recovered
        return True

    def _failed(self, exc: OSError) -> None:
        first = self.error is None
        self.error = redact(f"Cannot write session journal {self.path}: {exc.strerror or exc}")
        if first and self.on_error is not None:
            self.on_error(self.error)


def _delta_offset(old: str, new: str) -> int:
    """Where `new` departs from what was recorded: normally it only grows; if the caller
    rewrote it, from the common prefix, so the record stays exact."""
    return len(old) if new.startswith(old) else _common_prefix_len(old, new)


def _common_prefix_len(a: str, b: str) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def install_signal_flush(
    recorder_getter: Callable[[], SessionRecorder | None],
    exit: Callable[[int], object] | None = None,
    signals: Sequence[int] | None = None,
) -> Callable[[], None]:
    """On SIGHUP (SSH dropped) and SIGTERM: flush the journal, then exit cleanly.

    `recorder_getter` returns the current recorder (it changes when sessions change).
    Exit is `exit(128 + signum)` when given (e.g. the app's own shutdown), else
    `SystemExit(128 + signum)`. The previous handlers come back after the first signal, so a
    second one ends a stuck shutdown at once (when the previous one was the default).
    Main thread only (a `signal` module rule).
    Returns a function that restores the previous handlers.
    """
    if signals is None:
        signals = [s for s in (getattr(signal, "SIGHUP", None), signal.SIGTERM) if s is not None]
    previous = {s: signal.getsignal(s) for s in signals}

    def restore() -> None:
        for s, handler in previous.items():
            with contextlib.suppress(OSError, ValueError, TypeError):
                signal.signal(s, handler)

    def handler(signum: int, frame: FrameType | None) -> None:
        restore()
        recorder = recorder_getter()
        if recorder is not None:
            recorder.flush()
        if exit is not None:
            exit(128 + signum)
            return
        raise SystemExit(128 + signum)

    for s in signals:
        signal.signal(s, handler)
    return restore

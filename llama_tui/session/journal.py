"""The session journal: every conversation, appended to disk as it happens.

One file per session, `sessions_dir()/<id>.jsonl`, append-only JSON lines (mode 0600 in a
0700 directory). Each line is one record, written whole with a single `os.write` on an
O_APPEND descriptor, so a crash can tear at most the last line, which the loader skips.

Records (all carry ``v`` (format version), ``type``, ``ts`` (Unix time) and ``session``):

- ``snapshot``  ``conversation``: the whole `Conversation.to_dict()`. Written first, and
  again to resynchronise after a failed write (disk full) so the file is consistent again.
- ``message``   ``message``: a finished message (the user's prompt), fsynced before
  generation starts. Every message names its ``parent`` (the message it follows; null for
  the first): a parent other than the active path's tip starts a branch there (a retried
  reply, an edited prompt), and the earlier version stays in the tree. Journals written
  before branches existed have no ``parent``: each message follows the one before.
- ``assistant_started``  ``message``: a reply begins (status "streaming").
- ``checkpoint``  ``id``, ``offset``, ``text``: the reply's text is ``text`` appended at
  character ``offset`` of the previously recorded text (and, for a reasoning model's
  thought, ``thinking`` at ``thinking_offset`` of the recorded thought, when it changed).
  Deltas rather than full copies keep a long reply's journal linear in size (full copies
  every second are quadratic: megabytes for one 10k-token reply); the offset makes every
  record self-checking, so a missing or damaged checkpoint is detected and never produces
  spliced text. The final record carries
  the full text anyway, so deltas only ever matter for interrupted replies.
- ``assistant_finished``  ``message``: the full reply with status, stats and error.
- ``settings`` (``settings``, ``system_prompt``), ``model`` (``model``), ``title``
  (``title``), ``cleared`` (messages emptied), ``removed`` (``ids``: messages deleted with
  everything after them; retry and edit wrote this before branches existed).
- ``active``  ``tip``: the active path is now the one from the first message to ``tip``
  (null: empty), written when the user switches branch or an edit takes a prompt back.

Redaction: message text and the system prompt are written exactly (they are the user's own
data, the file is private, and altering them would change what a resumed model sees);
metadata that can echo secrets (error messages, stats, model info, settings, titles) goes
through `text.redact`. Exports redact everything.

This module is the format's files and reader: paths, the defensive reader (`RECORDS`: one
replay handler per type), and the few writes made outside a live session (`append_record`,
used to rename one). What a line holds (a builder per record type, the one line encoding,
redaction) is in `records.py`; live writing, the checkpoint throttle and the loss window are
in `recorder.py`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llama_tui import locations
from llama_tui.atomic import write_all
from llama_tui.core.errors import LlamaTuiError
from llama_tui.session import tree
from llama_tui.session.records import Record, encode_record
from llama_tui.session.transcript import Conversation, Message, is_safe_id, new_id
from llama_tui.text import redact

SUFFIX = ".jsonl"
DEFAULT_CHECKPOINT_INTERVAL = 1.0


class SessionLoadError(LlamaTuiError):
    """A session or export could not be read; `path` says which file."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(
            f"Cannot load session {redact(str(path))}: {redact(reason)}",
            "Check the path, or start a new conversation (llama-tui without --resume).",
        )


def journal_path(session_id: str, directory: Path | None = None) -> Path:
    """Where the journal of `session_id` lives. `ValueError` for an id unsafe as a name."""
    if not is_safe_id(session_id):
        raise ValueError(f"not a session id: {session_id!r}")
    return (directory or locations.sessions_dir()) / f"{session_id}{SUFFIX}"


# -- loading -------------------------------------------------------------------------------


def load_journal(path: Path | str, *, set_aside_unreadable: bool = False) -> Conversation:
    """Rebuild a conversation from its journal. Never crashes on bad data.

    A torn last line, garbage lines and unknown record types are skipped (counted in
    `conversation.load_warnings`). A reply whose last record is a checkpoint (the process
    died while it streamed) is restored with status "stopped" and `interrupted=True`.
    Raises `SessionLoadError` (with the path) when the file cannot be read or holds no
    usable record; with `set_aside_unreadable`, such a file is renamed to `*.corrupt`
    (never overwritten or deleted) and the error names the new path.
    """
    path = Path(path)
    try:
        return read_journal(path)[0]
    except SessionLoadError as err:
        if set_aside_unreadable and path.is_file():
            moved = set_aside(path)
            if moved is not None:
                raise SessionLoadError(moved, f"{err.reason} (kept aside as {moved.name})") from err
        raise


def set_aside(path: Path) -> Path | None:
    """Rename a damaged file to `<name>.corrupt` (or `.corrupt.N`), never replacing one."""
    for n in range(100):
        target = path.with_name(path.name + (".corrupt" if n == 0 else f".corrupt.{n}"))
        if os.path.lexists(target):
            continue
        try:
            os.link(path, target)  # no-clobber, then drop the old name
            path.unlink()
        except OSError:
            return None
        return target
    return None


def read_journal(path: Path) -> tuple[Conversation, int]:
    """`load_journal` without setting aside: (conversation, skipped line count)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SessionLoadError(path, exc.strerror or str(exc)) from None
    return parse_journal(data, path)


def _fallback_id(session: object, path: Path | str) -> str:
    # No snapshot (its line was damaged): take the id from the records, else the file name.
    for candidate in (session, Path(path).name.removesuffix(SUFFIX)):
        if isinstance(candidate, str) and is_safe_id(candidate):
            return candidate
    return new_id()


class _Replay:
    """The conversation being rebuilt from a journal, one record at a time.

    Each record type has one method here (`RECORDS` maps the type to it). A method raises
    `ValueError`, `TypeError`, `KeyError` or `AttributeError` for a malformed record, which
    `parse_journal` counts as a damaged line.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = path
        self.conv: Conversation | None = None
        self.by_id: dict[str, Message] = {}  # every message of the tree
        self.gaps = 0  # checkpoints that could not be applied

    def started(self, rec: dict[str, Any]) -> Conversation:
        """The conversation, created from the records' session id when no snapshot came
        first (its line was damaged)."""
        if self.conv is None:
            self.conv = Conversation(id=_fallback_id(rec.get("session"), self.path))
        return self.conv

    def snapshot(self, rec: dict[str, Any]) -> None:
        snap = Conversation.from_dict(rec["conversation"])
        if not is_safe_id(rec["conversation"].get("id")):
            # A damaged snapshot must not turn the session into a different one.
            snap.id = self.conv.id if self.conv else _fallback_id(rec.get("session"), self.path)
        self.conv = snap
        self.by_id = {m.id: m for m in tree.nodes(snap)}

    def message(self, rec: dict[str, Any]) -> None:
        """``message``, ``assistant_started`` and ``assistant_finished``: a new message
        follows its ``parent`` (a parent other than the path's tip starts a branch there;
        journals from before branches have no parent: the tip), a known one is updated."""
        conv = self.started(rec)
        raw = rec["message"]
        msg = Message.from_dict(raw)
        if rec["type"] == "assistant_started":
            msg.status = "streaming"
        known = self.by_id.get(msg.id)
        if known is not None:
            for f in dataclasses.fields(Message):
                if f.name != "parent":  # where a message sits never changes
                    setattr(known, f.name, getattr(msg, f.name))
            return
        tip = conv.messages[-1].id if conv.messages else None
        if "parent" not in raw or (msg.parent is not None and msg.parent not in self.by_id):
            msg.parent = tip  # an older journal, or its parent's record was lost
        elif msg.parent != tip:
            tree.select(conv, msg.parent, descend=False)
        conv.messages.append(msg)
        self.by_id[msg.id] = msg

    def active(self, rec: dict[str, Any]) -> None:
        """``active``: the path to ``tip`` (exactly, nothing below it) is the active one."""
        conv = self.started(rec)
        tip = rec["tip"]
        if tip is not None and not isinstance(tip, str):
            raise ValueError("bad active record")
        if tip is None or tip in self.by_id:
            tree.select(conv, tip, descend=False)
        else:
            self.gaps += 1

    def checkpoint(self, rec: dict[str, Any]) -> None:
        self.started(rec)
        target = self.by_id.get(rec["id"])
        offset, text = rec["offset"], rec["text"]
        if (
            target is None
            or not isinstance(text, str)
            or isinstance(offset, bool)
            or not isinstance(offset, int)
            or not 0 <= offset <= len(target.content)
        ):
            self.gaps += 1
            return
        target.content = target.content[:offset] + text
        if "thinking" in rec:  # the thought's delta, like the text's
            at, thought = rec.get("thinking_offset"), rec["thinking"]
            if (isinstance(thought, str) and isinstance(at, int) and not isinstance(at, bool)
                    and 0 <= at <= len(target.thinking)):
                target.thinking = target.thinking[:at] + thought
            else:
                self.gaps += 1

    def settings(self, rec: dict[str, Any]) -> None:
        conv = self.started(rec)
        settings, prompt = rec["settings"], rec["system_prompt"]
        if not isinstance(settings, dict) or not isinstance(prompt, str):
            raise ValueError("bad settings record")
        conv.settings, conv.system_prompt = settings, prompt

    def model(self, rec: dict[str, Any]) -> None:
        conv = self.started(rec)
        if not isinstance(rec["model"], dict):
            raise ValueError("bad model record")
        conv.model = rec["model"]

    def title(self, rec: dict[str, Any]) -> None:
        conv = self.started(rec)
        if not isinstance(rec["title"], str):
            raise ValueError("bad title record")
        conv.title = rec["title"]

    def cleared(self, rec: dict[str, Any]) -> None:
        conv = self.started(rec)
        conv.messages, conv.branches = [], []
        self.by_id = {}

    def removed(self, rec: dict[str, Any]) -> None:
        conv = self.started(rec)
        ids = rec["ids"]
        if not isinstance(ids, list):
            raise ValueError("bad removed record")
        for m in tree.remove(conv, {i for i in ids if isinstance(i, str)}):
            self.by_id.pop(m.id, None)

    def result(self, data: bytes) -> Conversation:
        """The rebuilt conversation; a reply still streaming was cut off by the process
        ending, so it is restored as stopped and interrupted."""
        if self.conv is None:
            reason = "the file is empty" if not data.strip() else "no readable records"
            raise SessionLoadError(self.path, reason)
        for m in tree.nodes(self.conv):
            if m.status == "streaming":
                m.status = "stopped"
                m.interrupted = True
        return self.conv


# Every record type the format knows, and how a replay applies it.
RECORDS: dict[str, Callable[[_Replay, dict[str, Any]], None]] = {
    "snapshot": _Replay.snapshot,
    "message": _Replay.message,
    "assistant_started": _Replay.message,
    "assistant_finished": _Replay.message,
    "checkpoint": _Replay.checkpoint,
    "settings": _Replay.settings,
    "model": _Replay.model,
    "title": _Replay.title,
    "cleared": _Replay.cleared,
    "removed": _Replay.removed,
    "active": _Replay.active,
}


def parse_journal(data: bytes, path: Path | str = "<journal>") -> tuple[Conversation, int]:
    """Parse journal bytes: (conversation, number of skipped lines)."""
    import json  # here, not at the top: not needed before the TUI's first paint

    replay = _Replay(path)
    skipped = unknown = 0
    lines = data.split(b"\n")
    for i, raw in enumerate(lines):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
            if not isinstance(rec, dict) or not isinstance(rec.get("type"), str):
                raise ValueError("not a record")
            apply = RECORDS.get(rec["type"])
            if apply is None:
                unknown += 1  # a newer version's record: ignore, keep the rest
                continue
            apply(replay, rec)
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
            # RecursionError: json.loads on deeply nested garbage ("[[[[...").
            if i == len(lines) - 1:
                continue  # the torn last line of a crash: expected, not worth a warning
            skipped += 1
    conv = replay.result(data)
    if skipped:
        conv.load_warnings.append(f"{skipped} damaged line(s) in {Path(path).name} skipped")
    if replay.gaps:
        conv.load_warnings.append(f"{replay.gaps} reply checkpoint(s) could not be applied")
    if unknown:
        conv.load_warnings.append(f"{unknown} record(s) from a newer llama-tui ignored")
    return conv, skipped


def resolve_session(id_or_path: str | Path, directory: Path | None = None) -> Path:
    """The file for `--resume ID|PATH`: an existing path, a session id, or a unique id prefix.

    Raises `SessionLoadError` naming what was asked for when nothing (or more than one
    session) matches.
    """
    text = os.fspath(id_or_path)
    if "\0" in text:
        raise SessionLoadError(repr(text), "the name contains a NUL character")
    path = Path(text).expanduser()
    if path.is_file():
        return path
    directory = directory or locations.sessions_dir()
    if is_safe_id(text) and not text.endswith((SUFFIX, ".json")):
        exact = journal_path(text, directory)
        if exact.is_file():
            return exact
        try:
            journals = [f for f in directory.iterdir() if f.name.endswith(SUFFIX)]
            matches = sorted(f for f in journals if f.name.startswith(text))
        except OSError:
            matches = []
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            names = ", ".join(m.name.removesuffix(SUFFIX) for m in matches[:5])
            raise SessionLoadError(text, f"more than one session starts with it ({names})")
        raise SessionLoadError(text, f"no such session in {directory} and no such file")
    raise SessionLoadError(path, "no such file")


def append_record(path: Path, session_id: str, rec: Record) -> None:
    """Append one record to an existing journal (not one a recorder is writing) and fsync.

    Starts on a new line if the file ends in a torn line, so the record is never glued to
    it. Raises `OSError`.
    """
    fd = os.open(path, os.O_RDWR | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0))
    try:
        line = encode_record(session_id, rec)
        if not ends_with_newline(fd):
            line = b"\n" + line
        write_all(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def ends_with_newline(fd: int) -> bool:
    """True when the file is empty or its last byte is a newline (no torn line to close)."""
    size = os.fstat(fd).st_size
    if size == 0:
        return True
    # lseek + read rather than pread (not on Windows); O_APPEND writes ignore the position.
    os.lseek(fd, size - 1, os.SEEK_SET)
    return os.read(fd, 1) == b"\n"

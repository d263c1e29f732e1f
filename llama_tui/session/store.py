"""Sessions on disk: list, resume, rename, delete; and the session package's public API.

The pieces live in `transcript` (data), `journal` (file format, loading), `recorder`
(journaling a live conversation, signal flush), `export` (Markdown / JSON, save, load) and
`atomic` (crash-safe writes); import them from here.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from llama_tui import locations
from llama_tui.atomic import atomic_write, fsync_dir, make_private_dirs
from llama_tui.session.export import (
    default_export_path,
    from_json,
    load_conversation,
    save_conversation,
    to_json,
    to_markdown,
)
from llama_tui.session.journal import (
    SUFFIX,
    SessionLoadError,
    append_record,
    journal_path,
    load_journal,
    read_journal,
    resolve_session,
)
from llama_tui.session.recorder import SessionRecorder, install_signal_flush
from llama_tui.session.records import title_rec
from llama_tui.text import clean, redact

__all__ = [
    "TITLE_MAX",
    "SessionLoadError",
    "SessionRecorder",
    "SessionSummary",
    "atomic_write",
    "clean_title",
    "default_export_path",
    "delete_session",
    "from_json",
    "install_signal_flush",
    "journal_path",
    "latest_session_id",
    "list_sessions",
    "load_conversation",
    "load_journal",
    "make_private_dirs",
    "rename_session",
    "resolve_session",
    "save_conversation",
    "to_json",
    "to_markdown",
]

_PREVIEW = 200
TITLE_MAX = 100  # a title is one line of the session browser


@dataclass(frozen=True)
class SessionSummary:
    """One row of the session browser. `error` is set (and the rest mostly empty) when the
    journal cannot be read; such sessions are still listed so the user can delete them."""

    id: str
    path: Path
    modified: float
    created: float | None = None
    title: str = ""
    model: str = ""
    first_prompt: str = ""
    message_count: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def _preview(s: str) -> str:
    # Display data: one line, no control characters, no secrets (the UI cleans again).
    return " ".join(redact(clean(s)).split())[:_PREVIEW]


def list_sessions(directory: Path | None = None) -> list[SessionSummary]:
    """Every journal in the sessions directory, newest (last modified) first. Never raises."""
    directory = directory or locations.sessions_dir()
    try:
        files = [f for f in directory.iterdir() if f.name.endswith(SUFFIX)]
    except OSError:
        return []
    out: list[SessionSummary] = []
    for f in files:
        sid = f.name.removesuffix(SUFFIX)
        try:
            modified = f.stat().st_mtime
        except OSError:
            modified = 0.0
        try:
            conv = read_journal(f)[0]
        except SessionLoadError as err:
            out.append(SessionSummary(sid, f, modified, error=err.reason))
            continue
        model = conv.model.get("name") or conv.model.get("spec") or ""
        out.append(
            SessionSummary(
                id=sid,
                path=f,
                modified=modified,
                created=conv.created,
                title=_preview(conv.title),
                model=_preview(model if isinstance(model, str) else str(model)),
                first_prompt=_preview(conv.first_prompt()),
                message_count=len(conv.messages),
            )
        )
    out.sort(key=lambda s: (s.modified, s.id), reverse=True)
    return out


def latest_session_id(directory: Path | None = None) -> str | None:
    """The newest readable session with at least one message (for a bare `--resume`)."""
    for s in list_sessions(directory):
        if s.ok and s.message_count:
            return s.id
    return None


def clean_title(title: str) -> str:
    """A title as stored: sanitised (`text.clean`), one line, at most `TITLE_MAX` chars."""
    return " ".join(clean(title).split())[:TITLE_MAX]


def rename_session(session_id: str, title: str, directory: Path | None = None) -> str:
    """Record a new title in a session's journal (append-only; nothing is rewritten).

    The title goes through `clean_title` and `text.redact`; the record is appended whole
    with one write on an O_APPEND descriptor and fsynced (`journal.append_record`), like the
    recorder's. Returns the title recorded. For the session being recorded right now use
    `SessionRecorder.title_changed` instead (its own descriptor and resynchronisation).
    Raises `SessionLoadError` for an unknown session, `ValueError` for a title that is
    empty once cleaned, `OSError` when the write fails.
    """
    path = _existing(session_id, directory)
    title = redact(clean_title(title))
    if not title:
        raise ValueError("the title is empty")
    append_record(path, session_id, title_rec(title))
    return title


def delete_session(session_id: str, directory: Path | None = None) -> Path:
    """Delete a session's journal (the UI confirms first). Returns the path deleted."""
    path = _existing(session_id, directory)
    path.unlink()
    with contextlib.suppress(OSError):
        fsync_dir(path.parent)
    return path


def _existing(session_id: str, directory: Path | None) -> Path:
    try:
        path = journal_path(session_id, directory)
    except ValueError:
        raise SessionLoadError(session_id, "not a session id") from None
    if not os.path.isfile(path):
        raise SessionLoadError(path, "no such session")
    return path

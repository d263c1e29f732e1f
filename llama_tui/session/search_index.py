"""The search index: the sessions' text in one SQLite file, so a search need not read 1,000
journals.

It lives next to the sessions folder (`data_dir()/search-index.sqlite3`, mode 0600: it holds
the conversations' text) and is only a cache of the journals:

- `refresh` compares every journal's size and mtime (ns) with what the index recorded and
  re-reads only the journals that changed, appeared or went away; a missing index is built
  from scratch, one from another format version (``PRAGMA user_version``) or one SQLite
  cannot read (damaged, not a database) is deleted and built again. Nothing is read from
  the index without a refresh first.
- Each session is one row holding its distinct words, case-folded (`search.word_set`, from
  its messages, title, model and dates);
  a search is SQLite's `instr` over those rows, newest first, stopping once it has enough
  (about 25 MB for 1,000 sessions of 20 turns: tens of milliseconds at worst, see
  benchmarks/session_search.py), then `search.best_match` picks the matching message from
  the session's stored texts. Opening a hit
  checks it again against the journal (`search.locate`): the index is never trusted over
  the journals.
- When the file cannot be opened or written (read-only disk, locked by another instance for
  longer than `BUSY_TIMEOUT_S`), the index lives in memory for this run instead.

One `SearchIndex` is used by one thread at a time. A search looks at its `cancelled`
callback as SQLite works (a progress handler) and raises `SearchInterrupted` once a newer
search replaces it.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

from llama_tui import locations
from llama_tui.atomic import make_private_dirs
from llama_tui.session.journal import SUFFIX, SessionLoadError, read_journal
from llama_tui.session.search import (
    Hit,
    Match,
    best_match,
    conversation_texts,
    display_line,
    journals_newest_first,
    model_name,
    session_matches,
    terms_of,
    word_set,
)
from llama_tui.session.transcript import is_safe_id

INDEX_NAME = "search-index.sqlite3"
SCHEMA_VERSION = 4
BUSY_TIMEOUT_S = 5.0
BATCH = 100  # journals (re)indexed per transaction
FIRST_BATCH = 20  # the newest first, in a small batch: a first build shows results sooner
PROGRESS_STEPS = 20_000  # SQLite steps between two looks at `cancelled`

_SCHEMA = """
CREATE TABLE sessions(
    id TEXT PRIMARY KEY, mtime_ns INTEGER NOT NULL, size INTEGER NOT NULL,
    modified REAL NOT NULL, created REAL, title TEXT NOT NULL, model TEXT NOT NULL,
    first_prompt TEXT NOT NULL, error TEXT, folded TEXT NOT NULL);
CREATE TABLE texts(
    id TEXT NOT NULL, seq INTEGER NOT NULL, message TEXT, body TEXT NOT NULL);
CREATE INDEX texts_by_session ON texts(id, seq);
CREATE INDEX sessions_by_time ON sessions(mtime_ns DESC, id DESC);
"""

Progress = Callable[[int, int], None]


class SearchInterrupted(Exception):
    """A search was given up: its `cancelled` callback said a newer one replaces it."""


def default_index_path(directory: Path | None = None) -> Path:
    """`locations.search_index_file()` for the default sessions folder; beside any other."""
    if directory is None:
        return locations.search_index_file()
    return directory.parent / INDEX_NAME


class SearchIndex:
    """The index of the journals in `directory` (default: the sessions folder)."""

    def __init__(self, directory: Path | None = None, path: Path | None = None) -> None:
        self.directory = directory or locations.sessions_dir()
        self.path = path or default_index_path(self.directory)
        self.in_memory = False
        self.rebuilt_because: str | None = None  # why the file was thrown away, if it was
        self._db: sqlite3.Connection | None = None

    # -- opening ---------------------------------------------------------------------------

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            self._db = self._open()
        return self._db

    def _open(self) -> sqlite3.Connection:
        try:
            return self._open_file()
        except (sqlite3.Error, OSError) as e:
            return self._in_memory(e)

    def _in_memory(self, why: Exception) -> sqlite3.Connection:
        """Unwritable, locked or full: a private index in memory still answers (built
        again each run)."""
        self.in_memory = True
        self.rebuilt_because = f"kept in memory: {why}"
        db = sqlite3.connect(":memory:", check_same_thread=False)
        db.executescript(_SCHEMA)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        return db

    def _open_file(self) -> sqlite3.Connection:
        make_private_dirs(self.path.parent)
        for attempt in range(2):
            # 0600 before SQLite sees it (an older copy too): it holds the conversations' words.
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
            try:
                with contextlib.suppress(AttributeError):  # no fchmod on Windows before 3.13
                    os.fchmod(fd, 0o600)
            finally:
                os.close(fd)
            db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, check_same_thread=False)
            try:
                version = db.execute("PRAGMA user_version").fetchone()[0]
                if version == SCHEMA_VERSION:
                    db.execute("SELECT id, mtime_ns, size, folded FROM sessions LIMIT 1")
                    db.execute("SELECT id, seq, message, body FROM texts LIMIT 1")
                    return db
                tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
                if version == 0 and tables == 0:  # new and empty: create it
                    with db:
                        db.executescript(_SCHEMA)
                        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                    return db
                reason = f"format {version}, not {SCHEMA_VERSION}"
            except sqlite3.DatabaseError as e:
                if isinstance(e, sqlite3.OperationalError) and "locked" in str(e):
                    db.close()
                    raise
                reason = f"unreadable ({e})"
            db.close()
            if attempt:
                break
            self.rebuilt_because = reason
            self._delete_file()
        raise sqlite3.DatabaseError("the index could not be created")

    def _delete_file(self) -> None:
        for suffix in ("", "-journal", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{self.path}{suffix}")

    def close(self) -> None:
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None

    # -- keeping it true to the journals ---------------------------------------------------

    def refresh(self, progress: Progress | None = None) -> int:
        """Bring the index in line with the journals on disk; the number re-read.
        `progress(done, total)` is called after each batch of journals read, newest first.

        A damaged index found here is thrown away and built again; one that cannot be
        written now (locked by another instance for too long, disk full) is replaced by one
        in memory.
        """
        try:
            return self._refresh(progress)
        except sqlite3.OperationalError as e:
            if self.in_memory:
                raise
            self.close()
            self._db = self._in_memory(e)
            return self._refresh(progress)
        except sqlite3.DatabaseError as e:
            self.close()
            self.rebuilt_because = f"unreadable ({e})"
            self._delete_file()
            return self._refresh(progress)

    def _refresh(self, progress: Progress | None) -> int:
        db = self.db
        known = {sid: (m, s) for sid, m, s in db.execute("SELECT id, mtime_ns, size FROM sessions")}
        on_disk = journals_newest_first(self.directory)
        changed = [
            (p, st)
            for p, st in on_disk
            if known.get(p.name.removesuffix(SUFFIX)) != (st.st_mtime_ns, st.st_size)
        ]
        gone = set(known) - {p.name.removesuffix(SUFFIX) for p, _ in on_disk}
        if not changed and not gone:
            return 0
        with db:
            for sid in gone:
                self._forget(sid)
        # Newest first, a transaction per batch: after a first build is interrupted the
        # journals done are kept, and a caller can search the newest while the rest are
        # read (`progress` is called after each batch is committed).
        start, size = 0, FIRST_BATCH
        while start < len(changed):
            with db:
                for path, st in changed[start : start + size]:
                    self._add(path, st)
            start, size = start + size, BATCH
            if progress is not None:
                progress(min(start, len(changed)), len(changed))
        return len(changed)

    def _forget(self, sid: str) -> None:
        self.db.execute("DELETE FROM texts WHERE id = ?", (sid,))
        self.db.execute("DELETE FROM sessions WHERE id = ?", (sid,))

    def _add(self, path: Path, st: os.stat_result) -> None:
        sid = path.name.removesuffix(SUFFIX)
        self._forget(sid)
        row: tuple[object, ...]
        try:
            conv = read_journal(path)[0]
        except SessionLoadError as err:
            row = (sid, st.st_mtime_ns, st.st_size, st.st_mtime, None, "", "", "", err.reason, "")
            self.db.execute("INSERT INTO sessions VALUES (?,?,?,?,?,?,?,?,?,?)", row)
            return
        texts = conversation_texts(conv, sid, st.st_mtime)
        folded = word_set(body for _, body in texts)
        row = (
            sid,
            st.st_mtime_ns,
            st.st_size,
            st.st_mtime,
            conv.created,
            display_line(conv.title, 200),
            display_line(model_name(conv), 200),
            display_line(conv.first_prompt(), 200),
            None,
            folded,
        )
        self.db.execute("INSERT INTO sessions VALUES (?,?,?,?,?,?,?,?,?,?)", row)
        self.db.executemany(
            "INSERT INTO texts(id, seq, message, body) VALUES (?,?,?,?)",
            [(sid, seq, mid, body) for seq, (mid, body) in enumerate(texts) if body],
        )

    # -- asking it -------------------------------------------------------------------------

    def search(
        self,
        query: str,
        limit: int | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> list[Hit]:
        """Sessions matching `query`, newest first (every session for an empty query), at
        most `limit`. Call `refresh` first. Raises `SearchInterrupted` when `cancelled()`
        turns true meanwhile."""
        terms = terms_of(query)
        # SQLite tests each session's folded text (newest first, stopping at `limit`), so
        # the text never has to be copied into Python.
        where = " AND ".join("instr(folded, ?) > 0" for _ in terms) or "1"
        rows = self.db.execute(
            "SELECT id, modified, created, title, model, first_prompt, error FROM sessions "
            f"WHERE {where} ORDER BY mtime_ns DESC, id DESC",
            terms,
        )
        if cancelled is not None:
            self.db.set_progress_handler(lambda: int(cancelled()), PROGRESS_STEPS)
        hits: list[Hit] = []
        try:
            for sid, modified, created, title, model, first, error in rows:
                if limit is not None and len(hits) >= limit:
                    break
                if not is_safe_id(sid):
                    continue  # a forged or damaged row never becomes a file name
                match = self._match(sid, terms) if terms else None
                if terms and match is None:
                    continue
                hits.append(
                    Hit(
                        id=sid,
                        modified=modified,
                        created=created,
                        title=title,
                        model=model,
                        first_prompt=first,
                        message_id=match.message_id if match else None,
                        line=match.line if match else "",
                        error=error,
                    )
                )
        except sqlite3.OperationalError:
            if cancelled is not None and cancelled():
                raise SearchInterrupted from None
            raise
        finally:
            rows.close()
            if cancelled is not None:
                self.db.set_progress_handler(None, 0)
        if cancelled is not None and cancelled():
            raise SearchInterrupted
        return hits

    def _match(self, sid: str, terms: tuple[str, ...]) -> Match | None:
        texts = self.db.execute(
            "SELECT message, body FROM texts WHERE id = ? ORDER BY seq", (sid,)
        ).fetchall()
        if not session_matches((body for _, body in texts), terms):
            return None  # the texts table disagrees with the row: trust neither
        return best_match(texts, terms)

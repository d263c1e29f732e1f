"""``llama-tui --sessions [QUERY]``: the saved sessions, or those matching QUERY, on stdout.

One session per line, newest first, tab-separated: id, date (local ``YYYY-MM-DD HH:MM``,
last written), model, title (or first prompt), and for a query the matching line. Every
field is untrusted text, printed cleaned (no escape sequences or control characters, one
line) and redacted; an unreadable journal is listed with its reason in the title column, so
it can be found and deleted. The matching rules are `session.search`'s, the same as F5's,
through the same index (`session.search_index`: refreshed from the journals first); when
the index cannot be used the journals are read directly.

Exit codes (`cli/console.py`): 0 listed (also an empty list without a query), 1 a query
that matches no session (like grep; the reason on stderr), 130 interrupted, 141 stdout
closed early.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import sys
import time
from pathlib import Path

from llama_tui.cli.console import (
    EXIT_BROKEN_PIPE,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    err,
)
from llama_tui.session.search import Hit, scan_sessions, terms_of
from llama_tui.text import clean, redact


def find(query: str, directory: Path | None = None) -> list[Hit]:
    """Matches of `query` (every session for an empty one), newest first."""
    from llama_tui import locations
    from llama_tui.session.search_index import SearchIndex

    index = SearchIndex(directory)
    try:
        index.refresh()
        return index.search(query)
    except (sqlite3.Error, OSError) as e:
        err(
            f"llama-tui: warning: the search index cannot be used ({e}); reading the "
            "journals instead"
        )
        return list(scan_sessions(directory or locations.sessions_dir(), query))
    finally:
        index.close()


def row(hit: Hit) -> str:
    """One output line (without the newline)."""
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(hit.modified))
    title = f"(unreadable: {hit.error})" if hit.error else hit.title or hit.first_prompt
    fields = [hit.id, when, hit.model or "?", title or "(empty)"]
    if hit.line:
        fields.append(hit.line)
    # Tabs and newlines inside a field would shift the columns: one space instead.
    return "\t".join(" ".join(redact(clean(f)).split()) for f in fields)


def run_sessions(query: str, directory: Path | None = None) -> int:
    """Print the sessions matching `query`; the exit code."""
    try:
        hits = find(query, directory)
    except KeyboardInterrupt:
        err("llama-tui: interrupted")
        return EXIT_INTERRUPTED
    if not hits and terms_of(query):
        err(
            f"llama-tui: no session matches {query!r}.\n"
            "Try fewer or shorter words; `llama-tui --sessions` lists them all."
        )
        return EXIT_ERROR
    try:
        for hit in hits:
            sys.stdout.write(row(hit) + "\n")
        sys.stdout.flush()
    except BrokenPipeError:  # `llama-tui --sessions | head`: fine, and quiet
        with contextlib.suppress(OSError, ValueError, AttributeError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    return EXIT_OK

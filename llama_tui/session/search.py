"""Finding old conversations: what a query means and where in a session it matches.

A query is whitespace-separated terms; a session matches when every term occurs (ignoring
case) somewhere in it: its title, model, date (``YYYY-MM-DD HH:MM``, when it was started
and last written), id, or the text of any message. The matching message is the first one
holding the most terms; its matching line is what lists show.

This module is the one place of those rules: the index (`search_index.py`) narrows the
candidates with SQLite, and then `best_match` decides on the real text; opening a hit
checks it again against the journal itself (`locate`), so an index that is stale, damaged
or forged can only cost a search result, never show text that is not in the session.
`scan_sessions` is the same search with no index at all (the fallback, and the benchmark's
baseline). No textual, no SQLite here.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from llama_tui.session.journal import SUFFIX, SessionLoadError, read_journal
from llama_tui.session.transcript import Conversation, is_safe_id
from llama_tui.text import clean, redact

LINE_WIDTH = 120  # characters of a matching line kept around the first term
MAX_TERMS = 8  # more words than this add nothing but work


def terms_of(query: str) -> tuple[str, ...]:
    """The query's terms, case-folded, duplicates and terms inside longer ones dropped."""
    words = sorted({w.casefold() for w in query.split()}, key=len, reverse=True)
    kept: list[str] = []
    for w in words:
        if not any(w in longer for longer in kept):
            kept.append(w)
    return tuple(kept[:MAX_TERMS])


def date_text(*stamps: float | None) -> str:
    """The dates a session can be found by, as local ``YYYY-MM-DD HH:MM``."""
    out = []
    for t in stamps:
        if t is not None:
            try:
                out.append(time.strftime("%Y-%m-%d %H:%M", time.localtime(t)))
            except (OverflowError, OSError, ValueError):
                continue
    return " ".join(dict.fromkeys(out))


def model_name(conv: Conversation) -> str:
    model = conv.model.get("name") or conv.model.get("spec") or ""
    return model if isinstance(model, str) else str(model)


def meta_text(conv: Conversation, session_id: str, modified: float | None) -> str:
    """What besides the messages a session is found by: title, model, dates, id."""
    return "\n".join((conv.title, model_name(conv), date_text(conv.created, modified), session_id))


def display_line(text: str, width: int = LINE_WIDTH) -> str:
    """Untrusted text as one printable line: controls removed, secrets redacted."""
    return " ".join(redact(clean(text)).split())[:width]


def matching_line(text: str, terms: Sequence[str], width: int = LINE_WIDTH) -> str:
    """The line of `text` where the first term found occurs, cut to about `width` around
    it, cleaned for display (`display_line`)."""
    folded = text.casefold()
    at = next((i for t in terms if (i := folded.find(t)) >= 0), 0)
    start = text.rfind("\n", 0, at) + 1
    end = text.find("\n", at)
    line = text[start:] if end < 0 else text[start:end]
    offset = at - start
    if len(line) > width and offset > width // 3:
        cut = offset - width // 3
        line = "…" + line[cut:]
    return display_line(line, width)


@dataclass(frozen=True)
class Match:
    """Where a session matches: the message (None for its title, model or date) and the
    line to show."""

    message_id: str | None
    line: str


def best_match(texts: Iterable[tuple[str | None, str]], terms: Sequence[str]) -> Match | None:
    """The first of `texts` (message id or None for metadata, text) holding the most terms;
    None when no text holds any. A message is preferred to metadata on a tie."""
    best: tuple[int, int, str | None, str] | None = None
    for message_id, text in texts:
        folded = text.casefold()
        count = sum(1 for t in terms if t in folded)
        if not count:
            continue
        rank = (count, 1 if message_id is not None else 0)
        if best is None or rank > best[:2]:
            best = (*rank, message_id, text)
            if count == len(terms) and message_id is not None:
                break
    if best is None:
        return None
    return Match(best[2], matching_line(best[3], terms))


def word_set(texts: Iterable[str]) -> str:
    """Every distinct word of `texts`, case-folded, one per line. A term never holds
    whitespace, so it occurs in the texts exactly when it occurs in one of these words:
    the same answer as the whole text, from a fraction of it to scan."""
    return "\n".join(dict.fromkeys(w for t in texts for w in t.casefold().split()))


def session_matches(texts: Iterable[str], terms: Sequence[str]) -> bool:
    """Every term occurs in at least one of `texts`."""
    missing = set(terms)
    for text in texts:
        folded = text.casefold()
        missing = {t for t in missing if t not in folded}
        if not missing:
            return True
    return not missing


def conversation_texts(
    conv: Conversation, session_id: str, modified: float | None
) -> list[tuple[str | None, str]]:
    """The searchable texts of a session: its messages in order (the path shown first, then
    the other branches of its tree), then its metadata."""
    messages = [*conv.messages, *conv.branches]
    texts: list[tuple[str | None, str]] = [(m.id, m.content) for m in messages]
    texts.append((None, meta_text(conv, session_id, modified)))
    return texts


def locate(
    conv: Conversation, query: str, message_id: str | None = None, modified: float | None = None
) -> Match | None:
    """Check a hit against the session itself (the journal, just read): the message to
    scroll to. `message_id` (what the index said) is kept when that message still holds
    the terms; otherwise the best match in the journal's text; None when the session no
    longer matches at all. `modified`: the journal's mtime, for a date in the query."""
    terms = terms_of(query)
    if not terms:
        return None
    texts = conversation_texts(conv, conv.id, modified)
    if message_id is not None:
        for mid, text in texts:
            if mid == message_id and all(t in text.casefold() for t in terms):
                return Match(mid, matching_line(text, terms))
    if not session_matches((t for _, t in texts), terms):
        return None
    return best_match(texts, terms)


@dataclass(frozen=True)
class Hit:
    """One session found: what a list shows, and where to open it."""

    id: str
    modified: float
    created: float | None
    title: str
    model: str
    first_prompt: str
    message_id: str | None
    line: str
    error: str | None = None  # the journal cannot be read (listed, so it can be deleted)

    @property
    def date(self) -> str:
        return date_text(self.modified)


def journals_newest_first(directory: Path) -> list[tuple[Path, os.stat_result]]:
    """Every journal in `directory` with its stat, last written first. Never raises."""
    out = []
    try:
        with os.scandir(directory) as entries:
            for e in entries:
                if not e.name.endswith(SUFFIX) or not is_safe_id(e.name.removesuffix(SUFFIX)):
                    continue
                try:
                    if e.is_file():
                        out.append((Path(e.path), e.stat()))
                except OSError:
                    continue
    except OSError:
        return []
    out.sort(key=lambda p: (p[1].st_mtime_ns, p[0].name), reverse=True)
    return out


def hit_from(conv: Conversation, session_id: str, modified: float, match: Match) -> Hit:
    return Hit(
        id=session_id,
        modified=modified,
        created=conv.created,
        title=display_line(conv.title),
        model=display_line(model_name(conv)),
        first_prompt=display_line(conv.first_prompt()),
        message_id=match.message_id,
        line=match.line,
    )


def scan_sessions(directory: Path, query: str) -> Iterator[Hit]:
    """Search the journals themselves, newest first, one at a time (no index): a hit is
    yielded as soon as its journal is read. Unreadable journals are skipped."""
    terms = terms_of(query)
    if not terms:
        return
    for path, st in journals_newest_first(directory):
        try:
            conv = read_journal(path)[0]
        except SessionLoadError:
            continue
        sid = path.name.removesuffix(SUFFIX)
        texts = conversation_texts(conv, sid, st.st_mtime)
        if not session_matches((t for _, t in texts), terms):
            continue
        match = best_match(texts, terms)
        if match is not None:
            yield hit_from(conv, sid, st.st_mtime, match)

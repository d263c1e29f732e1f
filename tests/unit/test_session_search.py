"""Session search: what a query matches, the index (missing, stale, damaged, forged), and
journals that are damaged or hold hostile text."""

from __future__ import annotations

import os
import sqlite3
import stat
import time
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from llama_tui import locations
from llama_tui.session.journal import load_journal
from llama_tui.session.recorder import SessionRecorder
from llama_tui.session.search import (
    best_match,
    locate,
    matching_line,
    scan_sessions,
    session_matches,
    terms_of,
    word_set,
)
from llama_tui.session.search_index import (
    SCHEMA_VERSION,
    SearchIndex,
    SearchInterrupted,
    default_index_path,
)
from llama_tui.session.store import delete_session, rename_session
from llama_tui.session.transcript import Conversation

TOKEN = "hf_" + "A1b2C3d4" * 5


def record(*turns: tuple[str, str], title: str = "", model: str = "") -> Conversation:
    """A journaled conversation of (prompt, reply) turns, as a run of the app leaves it."""
    conv = Conversation(title=title)
    rec = SessionRecorder(conv)
    if model:
        rec.model_changed({"name": model})
    for prompt, reply in turns:
        rec.user_message(conv.add("user", prompt))
        rec.assistant_finished(conv.add("assistant", reply))
    rec.close()
    return conv


def journal(conv: Conversation) -> Path:
    return locations.sessions_dir() / f"{conv.id}.jsonl"


def fresh_index() -> SearchIndex:
    index = SearchIndex()
    index.refresh()
    return index


def ids(index: SearchIndex, query: str) -> list[str]:
    return [h.id for h in index.search(query)]


# -- what a query means ------------------------------------------------------------------------


def test_terms_are_case_folded_and_words_inside_longer_ones_dropped() -> None:
    assert terms_of("  Owl  owls OWL  ") == ("owls",)
    assert terms_of("Straße night") == ("strasse", "night")
    assert terms_of("") == ()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(), max_size=4), st.text(max_size=12))
def test_the_indexed_word_set_answers_as_the_texts_would(texts: list[str], query: str) -> None:
    terms = terms_of(query)
    assume(terms)
    folded = word_set(texts)
    assert all(t in folded for t in terms) == session_matches(texts, terms)


def test_best_match_prefers_the_message_with_every_term() -> None:
    texts = [("a", "owls hunt"), ("b", "owls hunt at night"), (None, "night owls title")]
    match = best_match(texts, terms_of("night owls"))
    assert match is not None and match.message_id == "b"
    assert best_match(texts, terms_of("penguin")) is None


def test_matching_line_is_the_line_of_the_match_cut_around_it() -> None:
    text = "first line\n" + "x " * 200 + "the Quetzal is here " + "y " * 200 + "\nlast"
    line = matching_line(text, ("quetzal",), width=60)
    assert "Quetzal" in line and "\n" not in line and len(line) <= 60
    assert line.startswith("…")


def test_every_term_must_occur_somewhere_in_the_session() -> None:
    both = record(("Tell me about owls", "They hunt."), ("And at night?", "Mostly then."))
    record(("Tell me about owls", "Birds."))
    index = fresh_index()
    assert ids(index, "owls night") == [both.id]  # in two different messages of one session
    hit = index.search("owls night")[0]
    assert hit.message_id == both.messages[0].id  # the first message holding most terms
    assert hit.line == "Tell me about owls"


def test_title_model_date_and_id_are_searched() -> None:
    conv = record(("hello", "hi"), title="Holiday plans", model="SmolLM2-135M-Instruct")
    index = fresh_index()
    assert ids(index, "holiday") == [conv.id]
    assert ids(index, "smollm2") == [conv.id]
    day = time.strftime("%Y-%m-%d", time.localtime(conv.created))
    assert ids(index, day) == [conv.id]
    assert ids(index, conv.id[:15]) == [conv.id]
    hit = index.search("holiday")[0]
    assert hit.message_id is None and "Holiday plans" in hit.line


def test_short_and_non_ascii_terms() -> None:
    conv = record(("Was ist STRASSE?", "Eine Straße. Ω"))
    index = fresh_index()
    assert ids(index, "ω") == [conv.id]
    assert ids(index, "straße") == [conv.id]  # casefold: ß is ss
    assert ids(index, "zz") == []


def test_empty_query_lists_every_session_newest_first() -> None:
    old = record(("one", "1"))
    os.utime(journal(old), (time.time() - 100, time.time() - 100))
    new = record(("two", "2"))
    assert ids(fresh_index(), "") == [new.id, old.id]
    assert ids(fresh_index(), "   ") == [new.id, old.id]


def test_scan_without_an_index_finds_the_same() -> None:
    a = record(("the capybara question", "answer"))
    record(("other", "thing"))
    b = record(("more", "a CAPYBARA reply"))
    indexed = {(h.id, h.message_id, h.line) for h in fresh_index().search("capybara")}
    scanned = {
        (h.id, h.message_id, h.line) for h in scan_sessions(locations.sessions_dir(), "capybara")
    }
    assert indexed == scanned
    assert {h[0] for h in indexed} == {a.id, b.id}


# -- the index follows the journals ------------------------------------------------------------


def test_missing_index_is_built_private_and_then_reused() -> None:
    conv = record(("marmalade", "sweet"))
    path = default_index_path()
    assert path == locations.data_dir() / "search-index.sqlite3" and not path.exists()
    index = SearchIndex()
    assert index.refresh() == 1
    assert ids(index, "marmalade") == [conv.id]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # it holds the conversations' text
    index.close()
    again = SearchIndex()
    assert again.refresh() == 0  # nothing changed: no journal is read again
    assert ids(again, "marmalade") == [conv.id]
    again.close()
    path.chmod(0o644)  # e.g. copied from elsewhere
    fresh_index().close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_stale_entries_follow_changed_new_and_deleted_journals() -> None:
    conv = record(("first words", "reply"))
    gone = record(("doomed words", "reply"))
    index = fresh_index()
    assert ids(index, "words") == [gone.id, conv.id]

    rename_session(conv.id, "Renamed pelican")  # appends: size and mtime change
    delete_session(gone.id)
    new = record(("pelican news", "ok"))
    assert index.refresh() == 2  # the renamed one and the new one, nothing else
    assert ids(index, "pelican") == [new.id, conv.id]
    assert ids(index, "doomed") == []


def test_same_size_rewrite_is_seen_by_its_mtime() -> None:
    conv = record(("alpha", "reply"))
    index = fresh_index()
    path = journal(conv)
    data = path.read_bytes().replace(b"alpha", b"omega")
    st = path.stat()
    path.write_bytes(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000))
    assert index.refresh() == 1
    assert ids(index, "omega") == [conv.id] and ids(index, "alpha") == []


@pytest.mark.parametrize(
    "damage",
    [b"this is not a database", b"SQLite format 3\x00" + b"\xff" * 5000, b""],
    ids=["garbage", "torn-header", "empty"],
)
def test_damaged_index_is_thrown_away_and_rebuilt(damage: bytes) -> None:
    conv = record(("walrus", "tusks"))
    fresh_index().close()
    path = default_index_path()
    path.write_bytes(damage)
    index = SearchIndex()
    index.refresh()
    assert ids(index, "walrus") == [conv.id]
    assert not index.in_memory
    if damage:
        assert index.rebuilt_because is not None


def test_index_of_another_format_is_rebuilt() -> None:
    conv = record(("narwhal", "tusk"))
    fresh_index().close()
    db = sqlite3.connect(default_index_path())
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    index = SearchIndex()
    index.refresh()
    assert "format" in (index.rebuilt_because or "")
    assert ids(index, "narwhal") == [conv.id]


def test_unwritable_index_place_falls_back_to_memory(tmp_path: Path) -> None:
    conv = record(("ocelot", "cat"))
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the index's folder would be")
    index = SearchIndex(path=blocked / "index.sqlite3")
    index.refresh()
    assert index.in_memory
    assert ids(index, "ocelot") == [conv.id]


def test_forged_index_rows_never_become_files_or_results() -> None:
    conv = record(("genuine text", "ok"))
    fresh_index().close()
    db = sqlite3.connect(default_index_path())
    # Another program (or damage) writes a row for a path outside the sessions folder, and
    # text the journal does not hold into a real session's row.
    row = ("../../etc/passwd", 0, 0, time.time(), None, "t", "m", "p", None, "genuine text")
    db.execute("INSERT INTO sessions VALUES (?,?,?,?,?,?,?,?,?,?)", row)
    db.execute("UPDATE sessions SET folded = folded || ' forged' WHERE id = ?", (conv.id,))
    db.commit()
    db.close()
    index = SearchIndex()
    stale_view = index.search("genuine")
    assert [h.id for h in stale_view] == [conv.id]
    # The forged word passes the session filter but no stored text holds it: no hit.
    assert ids(index, "forged") == []
    # And opening checks the journal itself.
    assert locate(load_journal(journal(conv)), "forged") is None


def test_a_search_gives_up_when_cancelled() -> None:
    for i in range(3):
        record((f"kiwi {i}", "bird"))
    index = fresh_index()
    with pytest.raises(SearchInterrupted):
        index.search("kiwi", cancelled=lambda: True)


# -- damaged journals and hostile text ---------------------------------------------------------


def test_damaged_journals_are_listed_and_searched_around() -> None:
    good = record(("emu facts", "They run."))
    torn = record(("emu eggs", "Green."))
    with journal(torn).open("ab") as f:
        f.write(b'{"v":1,"type":"message","message":{"role":"user","content":"emu to')
    bad = locations.sessions_dir() / "20200101-000000-badbad.jsonl"
    bad.write_bytes(b"\x00\xff not json at all\n")
    (locations.sessions_dir() / "..hidden.jsonl").write_text("{}")  # not a session id
    index = fresh_index()
    assert set(ids(index, "emu")) == {good.id, torn.id}
    listed = {h.id: h for h in index.search("")}
    assert set(listed) == {good.id, torn.id, "20200101-000000-badbad"}
    assert listed["20200101-000000-badbad"].error  # listed, so it can be deleted


def test_hostile_text_is_found_but_shown_clean() -> None:
    conv = record(
        (f"secret {TOKEN} \x1b[2J\x1b]52;c;SGk=\x07zebra [bold]x[/] \u202e", "ok"),
        title="\x1b[31mred\x1b[0m title",
        model="m\x07odel",
    )
    hit = fresh_index().search("zebra")[0]
    assert hit.id == conv.id
    for shown in (hit.line, hit.title, hit.model):
        assert "\x1b" not in shown and "\x07" not in shown
    assert TOKEN not in hit.line and "zebra" in hit.line
    assert "[bold]" in hit.line  # literal: the UI shows it without markup


def test_locate_checks_the_journal_not_the_index() -> None:
    conv = record(("a lynx", "b"), ("c", "the LYNX again"))
    loaded = load_journal(journal(conv))
    # The index's message id is kept when it still matches...
    match = locate(loaded, "lynx", conv.messages[3].id)
    assert match is not None and match.message_id == conv.messages[3].id
    # ...and replaced by the journal's own first match when it does not.
    match = locate(loaded, "lynx", "no-such-message")
    assert match is not None and match.message_id == conv.messages[0].id
    assert locate(loaded, "puma") is None


def test_index_locked_by_another_instance_falls_back_to_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import llama_tui.session.search_index as search_index

    first = record(("quokka", "smiles"))
    fresh_index().close()
    second = record(("quokka again", "still"))
    monkeypatch.setattr(search_index, "BUSY_TIMEOUT_S", 0.1)
    other = sqlite3.connect(default_index_path())
    other.execute("BEGIN EXCLUSIVE")  # another llama-tui writing it, for too long
    try:
        index = SearchIndex()
        index.refresh()
        assert index.in_memory and "memory" in (index.rebuilt_because or "")
        assert set(ids(index, "quokka")) == {first.id, second.id}
    finally:
        other.rollback()
        other.close()

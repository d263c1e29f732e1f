"""Markdown / JSON export, save and load: round trips, hostile text, hostile names, faults."""

from __future__ import annotations

import errno
import json
import os
import re
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llama_tui import locations
from llama_tui.session.export import (
    EXPORT_FORMAT,
    default_export_path,
    from_json,
    load_conversation,
    save_conversation,
    to_json,
    to_markdown,
)
from llama_tui.session.journal import SessionLoadError, load_journal
from llama_tui.session.recorder import SessionRecorder
from llama_tui.session.transcript import Conversation

TOKEN = "hf_" + "Zz9Yy8Xx7" * 4
HOSTILE = "a\x1b]52;c;ZXZpbA==\x07b\x1b[2J\x9b31mc\rd\x08e\x00f\u202eg\x7fh"
FAST = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
META = {
    "versions": {"transformers": "5.24.0", "torch": "2.13.0"},
    "host": "gpu-box",
}


def sample() -> Conversation:
    """A journaled conversation with every kind of turn (built through the recorder)."""
    conv = Conversation(title="Paris trip")
    rec = SessionRecorder(conv)
    rec.settings_changed({"temperature": 0.7, "top_p": 0.9, "stop": []}, "Be brief.")
    rec.model_changed(
        {
            "name": "SmolLM2 (demo)",
            "spec": "HuggingFaceTB/SmolLM2-135M-Instruct",
            "revision": "12fd25f",
            "device": "cuda:0 NVIDIA H100",
            "dtype": "bfloat16",
        }
    )
    rec.user_message(conv.add("user", "What is the capital of France? 中文 🙂"))
    a = conv.add("assistant", "", status="streaming")
    rec.assistant_started(a)
    a.content, a.status = "Paris.", "complete"
    a.stats = {"generated_tokens": 3, "decode_tokens_per_s": 41.5, "stop_reason": "eos"}
    rec.assistant_finished(a)
    rec.user_message(conv.add("user", f"escape test {HOSTILE}"))
    b = conv.add("assistant", "", status="streaming")
    rec.assistant_started(b)
    b.content, b.status = "Half an ans", "stopped"
    rec.assistant_finished(b)
    rec.user_message(conv.add("user", "fail please"))
    c = conv.add("assistant", "", status="streaming")
    rec.assistant_started(c)
    c.status, c.error = "error", "CUDA out of memory. Try a shorter context."
    rec.assistant_finished(c)
    rec.user_message(conv.add("user", "last prompt"))
    d = conv.add("assistant", "", status="streaming")
    rec.assistant_started(d)
    d.content = "cut off by kill -9"
    rec.flush()
    return load_journal(rec.path)  # the last reply comes back interrupted


# -- Markdown ------------------------------------------------------------------------------


def test_markdown_header_and_turns() -> None:
    md = to_markdown(sample(), META)
    assert md.startswith("# Paris trip\n")
    for expected in [
        "HuggingFaceTB/SmolLM2-135M-Instruct @ `12fd25f`",
        "cuda:0 NVIDIA H100",
        "bfloat16",
        "temperature=0.7",
        "top_p=0.9",
        "llama-tui 0.1.0",
        "transformers 5.24.0",
        "torch 2.13.0",
        "**host:** gpu-box",
        "## System prompt\n\nBe brief.",
        "## User\n\nWhat is the capital of France? 中文 🙂",
        "## Assistant\n\nParis.",
        "*[stopped]*",
        "*[error: CUDA out of memory. Try a shorter context.]*",
        "## Assistant\n\ncut off by kill -9\n\n*[interrupted:",
    ]:
        assert expected in md
    assert re.search(r"\*\*Date:\*\* \d{4}-\d\d-\d\d \d\d:\d\d UTC", md)


def test_markdown_shows_control_characters_as_placeholders() -> None:
    md = to_markdown(sample())
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]", md)
    assert "a␛]52;c;ZXZpbA==␇b␛[2J\\x9b31mc␍d␈e␀f<U+202E>g␡h" in md


def test_markdown_redacts_tokens_everywhere() -> None:
    conv = Conversation(title=f"t {TOKEN}", system_prompt=TOKEN, model={"spec": TOKEN})
    conv.add("user", f"token {TOKEN}")
    msg = conv.add("assistant", "x", status="error")
    msg.error = f"401 {TOKEN}"
    md = to_markdown(conv, {"note": TOKEN})
    assert TOKEN not in md and "hf_***" in md


@FAST
@given(st.text(), st.text())
def test_markdown_never_contains_raw_controls(title: str, content: str) -> None:
    conv = Conversation(title=title, system_prompt=content)
    conv.add("user", content)
    md = to_markdown(conv)
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]", md)
    md.encode("utf-8")


# -- JSON ----------------------------------------------------------------------------------


def test_json_exact_text_escaped_and_versioned() -> None:
    conv = sample()
    text = to_json(conv, META)
    doc = json.loads(text)
    assert (doc["format"], doc["version"]) == (EXPORT_FORMAT, 1)
    versions = doc["meta"]["versions"]
    assert versions["transformers"] == "5.24.0" and versions["torch"] == "2.13.0"
    assert versions["llama-tui"] == "0.1.0" and "textual" in versions
    assert doc["conversation"]["messages"][2]["content"] == f"escape test {HOSTILE}"
    assert not re.search(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e]", text.replace("\n", ""))
    assert "中文 🙂" in text  # readable, not \u-escaped
    assert from_json(text) == conv


def test_json_redacts_tokens_and_survives_lone_surrogates() -> None:
    conv = Conversation()
    conv.add("user", f"{TOKEN} and a lone surrogate \ud800 here")
    text = to_json(conv)
    assert TOKEN not in text
    text.encode("utf-8")  # strict: no surrogate reaches the file
    assert from_json(text).messages[0].content == "hf_*** and a lone surrogate \ud800 here"


@FAST
@given(st.text(), st.text(max_size=20))
def test_json_round_trip_any_text(content: str, title: str) -> None:
    conv = Conversation(title=title)
    conv.add("user", content)
    assert from_json(to_json(conv).encode("utf-8")).messages == conv.messages


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"{",
        b"[]",
        b'{"format": "other"}',
        b"\xff\xfe\x00",
        b'{"format": "%s", "conversation": 5}',
    ],
)
def test_from_json_rejects_cleanly(data: bytes) -> None:
    data = data.replace(b"%s", EXPORT_FORMAT.encode())
    with pytest.raises(SessionLoadError) as info:
        from_json(data, "x.json")
    assert info.value.path == Path("x.json")


# -- round trips through files -------------------------------------------------------------


def test_round_trip_journal_json_markdown(tmp_path: Path) -> None:
    conv = sample()
    assert load_conversation(conv.id) == conv  # by id, from the journal
    journal = locations.sessions_dir() / f"{conv.id}.jsonl"
    assert load_conversation(str(journal)) == conv
    out = save_conversation(conv, tmp_path / "exports" / "chat.json", META)
    back = load_conversation(out)
    assert back == conv
    assert [(m.status, m.stats, m.interrupted) for m in back.messages] == [
        (m.status, m.stats, m.interrupted) for m in conv.messages
    ]
    assert (back.model, back.settings, back.system_prompt) == (
        conv.model,
        conv.settings,
        conv.system_prompt,
    )
    fixed = {**META, "exported": 0}
    md = save_conversation(back, tmp_path / "exports" / "chat.md", fixed)
    assert md.read_text() == to_markdown(conv, fixed)


def test_export_saved_under_journal_name_still_loads(tmp_path: Path) -> None:
    conv = sample()
    p = tmp_path / "odd.jsonl"
    p.write_text(to_json(conv))
    assert load_conversation(p) == conv


def test_unreadable_journal_in_sessions_dir_is_kept_aside(tmp_path: Path) -> None:
    d = locations.sessions_dir()
    d.mkdir(parents=True)
    (d / "20200101-000000-aaaaaa.jsonl").write_bytes(b"\x00\x01\x02")
    with pytest.raises(SessionLoadError, match="kept aside"):
        load_conversation("20200101-000000-aaaaaa")
    assert (d / "20200101-000000-aaaaaa.jsonl.corrupt").read_bytes() == b"\x00\x01\x02"
    elsewhere = tmp_path / "notes.jsonl"
    elsewhere.write_bytes(b"\x00")
    with pytest.raises(SessionLoadError):
        load_conversation(elsewhere)
    assert elsewhere.exists()  # a user's own file is never renamed


# -- saving: names, refusals, faults -------------------------------------------------------


def test_save_formats_modes_and_parents(tmp_path: Path) -> None:
    conv = sample()
    p = save_conversation(conv, tmp_path / "new" / "deeper" / "chat")
    assert p == tmp_path / "new" / "deeper" / "chat.md"
    assert p.read_text().startswith("# Paris trip")
    assert stat.S_IMODE(p.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "new" / "deeper").stat().st_mode) == 0o700
    j = save_conversation(conv, tmp_path / "chat.JSON")
    assert json.loads(j.read_text())["format"] == EXPORT_FORMAT


def test_save_refuses_existing_file_unless_overwrite(tmp_path: Path) -> None:
    conv = sample()
    p = tmp_path / "chat.md"
    p.write_bytes(b"precious")
    with pytest.raises(FileExistsError) as info:
        save_conversation(conv, p)
    assert info.value.filename == str(p)
    assert p.read_bytes() == b"precious"
    save_conversation(conv, p, overwrite=True)
    assert p.read_text().startswith("# Paris trip")


def test_save_symlink_refused_then_replaced_never_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"do not touch")
    link = tmp_path / "chat.md"
    link.symlink_to(victim)
    with pytest.raises(FileExistsError):
        save_conversation(sample(), link)
    save_conversation(sample(), link, overwrite=True)
    assert victim.read_bytes() == b"do not touch"
    assert not link.is_symlink()


def test_save_into_directory_uses_sanitised_title(tmp_path: Path) -> None:
    conv = sample()
    conv.title = "../../etc/passwd"
    p = save_conversation(conv, tmp_path)
    assert p.parent == tmp_path and p.suffix == ".md"
    assert p.name.endswith("-etc-passwd.md") and not p.name.startswith(".")
    p2 = save_conversation(conv, str(tmp_path) + os.sep)
    assert p2 == tmp_path / (p.name.removesuffix(".md") + "-2.md")


def test_user_typed_dotdot_is_honoured(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    p = save_conversation(sample(), tmp_path / "a" / ".." / "b.md")
    assert p.resolve() == (tmp_path / "b.md").resolve()
    assert (tmp_path / "b.md").exists()


@pytest.mark.parametrize(
    "title", ["../../x", "/", "", "..", ".", "a/b\\c", "nul\x00byte", "x" * 300, "\x1b]0;t\x07"]
)
def test_default_export_path_never_escapes(tmp_path: Path, title: str) -> None:
    conv = Conversation(title=title)
    p = default_export_path(conv, tmp_path)
    assert p.parent == tmp_path
    assert "\0" not in p.name and "/" not in p.name and not p.name.startswith(".")
    assert len(p.name.encode()) <= 255
    save_conversation(conv, p)
    assert p.exists()


@FAST
@given(st.text(max_size=400))
def test_default_export_path_property(title: str) -> None:
    directory = Path("/some/dir")
    p = default_export_path(Conversation(title=title), directory, unique=False)
    assert p.parent == directory and p.name not in (".md", "..md")
    assert "\0" not in p.name and not p.name.startswith(".") and len(p.name.encode()) <= 255


def test_bad_user_typed_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="NUL"):
        save_conversation(sample(), str(tmp_path / "a\0b.md"))
    with pytest.raises(ValueError):
        save_conversation(sample(), "  ")
    out = tmp_path / "out"
    with pytest.raises(OSError) as info:
        save_conversation(sample(), out / ("x" * 300 + ".md"))
    assert info.value.errno == errno.ENAMETOOLONG
    assert os.listdir(out) == []


def _existing_export(tmp_path: Path) -> tuple[Conversation, Path, bytes]:
    conv = sample()
    p = save_conversation(conv, tmp_path / "out" / "chat.md")
    conv.add("user", "one more")
    return conv, p, p.read_bytes()


def test_disk_full_during_save(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conv, p, before = _existing_export(tmp_path)
    snapshot = conv.to_dict()
    real = os.write

    def full(fd: int, data: bytes) -> int:
        if fd > 2:
            real(fd, bytes(data[:100]))
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data)

    with monkeypatch.context() as m:
        m.setattr(os, "write", full)
        with pytest.raises(OSError) as info:
            save_conversation(conv, p, overwrite=True)
    assert info.value.errno == errno.ENOSPC
    assert p.read_bytes() == before  # byte-identical
    assert os.listdir(p.parent) == ["chat.md"]  # no temp file
    assert conv.to_dict() == snapshot  # the in-memory conversation is untouched
    save_conversation(conv, p, overwrite=True)  # retry works
    assert "one more" in p.read_text()


def test_permission_error_during_save(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conv, p, before = _existing_export(tmp_path)

    def replace(src: object, dst: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", str(dst))

    with monkeypatch.context() as m:
        m.setattr(os, "replace", replace)
        with pytest.raises(PermissionError):
            save_conversation(conv, p, overwrite=True)
    assert p.read_bytes() == before
    assert os.listdir(p.parent) == ["chat.md"]
    save_conversation(conv, p, overwrite=True)
    assert "one more" in p.read_text()


# -- per-reply settings, length cuts, versions, default names --------------------------------


def _two_settings() -> Conversation:
    """Two replies made with different settings and system prompts, journaled and reloaded."""
    conv = Conversation(title="Settings change")
    rec = SessionRecorder(conv)
    rec.settings_changed({"temperature": 0.7, "max_new_tokens": 5}, "Be brief.")
    rec.user_message(conv.add("user", "first"))
    a = conv.add("assistant", "One two three four five")
    a.stats = {"generated_tokens": 5, "stop_reason": "length"}
    rec.assistant_finished(a)
    rec.settings_changed({"temperature": 0.2, "max_new_tokens": 5}, "Be verbose.")
    rec.user_message(conv.add("user", "second"))
    rec.assistant_finished(conv.add("assistant", "Done."))
    rec.settings_changed({"temperature": 0.9, "max_new_tokens": 5}, "")
    rec.close()
    return load_journal(rec.path)


def test_markdown_records_per_reply_settings_and_system_prompt() -> None:
    conv = _two_settings()
    assert conv.settings["temperature"] == 0.9  # the latest: what the header used to show
    md = to_markdown(conv, META)
    header, _, turns = md.partition("## User")
    assert "temperature=0.7" in header and "of the first reply" in header
    assert "temperature=0.9" not in md
    assert "## System prompt\n\nBe brief." in header
    second = turns.split("## Assistant")[2]
    assert second.startswith("\n\n*[settings for this reply: temperature=0.2]*")
    assert "*[system prompt for this reply:]*\n\n> Be verbose.\n\nDone." in second
    assert "settings for this reply" not in turns.split("## Assistant")[1]


def test_markdown_without_changes_has_no_per_reply_notes() -> None:
    md = to_markdown(sample(), META)
    assert "for this reply" not in md and "of the first reply" not in md


def test_markdown_marks_replies_cut_at_the_length_limit() -> None:
    md = to_markdown(_two_settings(), META)
    first = md.split("## Assistant")[1]
    assert "One two three four five\n\n*[cut off at the length limit (max_new_tokens)]*" in first
    assert md.count("cut off at the length limit") == 1


def test_every_export_lists_the_same_library_versions() -> None:
    # Headless saves pass no versions of their own; the TUI passes none either now.
    md = to_markdown(sample())
    line = next(ln for ln in md.splitlines() if ln.startswith("- **Versions:**"))
    for dist in ("llama-tui", "transformers", "torch", "textual"):
        assert f"{dist} " in line


def test_export_name_is_date_and_slug(tmp_path: Path) -> None:
    from llama_tui.session.export import export_name

    conv = Conversation(title="What is the capital of France?")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d-what-is-the-capital-of-france\.md", export_name(conv))
    assert export_name(Conversation(title="  ?? ")).endswith("-conversation.md")
    assert " " not in export_name(Conversation(title=f"a b {TOKEN} c"))
    assert TOKEN not in export_name(Conversation(title=f"a {TOKEN}"))

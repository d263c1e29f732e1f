"""The one sanitiser: escape sequences, controls, streaming splits, redaction, file names."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from llama_tui.text import (
    MAX_PENDING,
    StreamCleaner,
    clean,
    has_controls,
    looks_like_token,
    redact,
    safe_filename,
    show_bidi,
    visible_controls,
)


def _controls(s: str) -> list[str]:
    return [c for c in s if unicodedata.category(c) == "Cc" and c not in "\n\t"]


def _chunked(s: str, cuts: list[int]) -> str:
    c = StreamCleaner()
    points = sorted({min(max(x, 0), len(s)) for x in cuts})
    out, start = [], 0
    for p in [*points, len(s)]:
        out.append(c.feed(s[start:p]))
        start = p
    out.append(c.flush())
    return "".join(out)


PAYLOADS = [
    ("a\x1b]52;c;UFdORUQ=\x07b", "ab"),  # OSC 52 clipboard write, BEL-terminated
    ("a\x1b]52;c;UFdORUQ=\x1b\\b", "ab"),  # ... ST-terminated
    ("\x1b]0;EVILTITLE\x1b\\title", "title"),  # window title
    ("\x1b]8;;https://evil\x1b\\link\x1b]8;;\x1b\\", "link"),  # OSC 8 hyperlink
    ("\x1b[2J\x1b[Hclear", "clear"),  # erase + cursor home
    ("\x1b[31mred\x1b[0m", "red"),
    ("\x1b[?1000h\x1b[?1006hmouse", "mouse"),  # mouse mode
    ("\x1bcreset", "reset"),  # RIS
    ("\x1b(Bcharset", "charset"),  # nF escape
    ("\x9b31mC1csi", "C1csi"),  # 8-bit CSI
    ("\x9d0;t\x9cC1osc", "C1osc"),  # 8-bit OSC ... ST
    ("\x90qdcs\x1b\\DCS", "DCS"),
    ("\x1bPqdcs\x1b\\DCS", "DCS"),
    ("\x1b_apc\x1b\\APC", "APC"),
    ("\x1b^pm\x1b\\PM", "PM"),
    ("\x1bXsos\x1b\\SOS", "SOS"),
    ("safe\rEVIL", "safeEVIL"),  # \r cannot return to overwrite
    ("secret\x08\x08\x08\x08\x08\x08public", "secretpublic"),  # backspace
    ("line1\r\nline2", "line1\nline2"),
    ("tab\tand\nnewline", "tab\tand\nnewline"),
    ("bell\x07 nul\x00 del\x7f", "bell nul del"),
    ("\x1b", ""),  # unfinished at the end
    ("x\x1b[", "x"),
    ("x\x1b]52;c;abc", "x"),  # unterminated OSC at the end: dropped whole
]


@pytest.mark.parametrize(("raw", "expected"), PAYLOADS)
def test_payloads_are_removed_whole(raw: str, expected: str) -> None:
    assert clean(raw) == expected
    for i in range(len(raw) + 1):
        assert _chunked(raw, [i]) == expected, i
    assert _chunked(raw, list(range(len(raw)))) == expected  # one character at a time


def test_stray_esc_cannot_swallow_the_rest() -> None:
    tail = "the rest of the reply " * 30
    out = clean("hello \x1b]" + tail)
    assert out.startswith("hello ]the rest")
    assert out.endswith(tail)
    c = StreamCleaner()
    got = c.feed("hello \x1b]")
    for i in range(0, len(tail), 7):
        got += c.feed(tail[i : i + 7])
        assert c.pending <= MAX_PENDING
    got += c.flush()
    assert got == out


def test_long_csi_is_bounded() -> None:
    s = "\x1b[" + "1;" * 400 + "mvisible"
    out = clean(s)
    assert "visible" in out and not _controls(out)


def test_plain_text_fast_path_is_identity() -> None:
    s = "經過一段時間的努力 🙂 naïve e\u0301 [/INST] [b"
    assert clean(s) is s
    assert not has_controls(s)


# Text made mostly of the characters that matter: ESC, C1, terminators, brackets, digits.
_alphabet = st.sampled_from(
    [
        *"\x1b\x9b\x9d\x90\x9c\x07\\[]P_^X();0123456789m?Hc \n\t\r\x08\x00\x7f\x18a",
        "é",
        "中",
        "🙂",
        "\u0301",
    ]
)
_hostile = st.lists(_alphabet, max_size=300).map("".join)
_text = st.one_of(st.text(max_size=300), _hostile)


@settings(max_examples=400, deadline=None)
@given(_text, st.lists(st.integers(min_value=0, max_value=300), max_size=12))
@example("\x1b]" + "a" * 300 + "\x1b[31m", [5, 257, 258, 259])
def test_any_string_any_chunking(s: str, cuts: list[int]) -> None:
    whole = clean(s)
    assert not _controls(whole)
    assert _chunked(s, cuts) == whole
    assert clean(whole) == whole  # idempotent


@settings(max_examples=300, deadline=None)
@given(
    st.text(
        alphabet=st.characters(
            blacklist_categories=("Cc", "Cs"),
        ),
        max_size=200,
    )
)
def test_printable_text_unchanged(s: str) -> None:
    # CJK, emoji, combining marks, bidi marks: only Cc characters are touched.
    assert clean(s) == s
    assert _chunked(s, [1, 3, 7]) == s


@settings(max_examples=200, deadline=None)
@given(_text)
def test_tabs_and_newlines_survive(s: str) -> None:
    out = clean(s)
    # Every \t survives unless it sat inside a removed sequence; at least plain ones do.
    plain = s.replace("\x1b", "").translate({c: None for c in range(0x80, 0xA0)})
    if plain == s:
        assert out.count("\t") == s.count("\t")
        assert out.count("\n") == s.count("\n")


def test_redact() -> None:
    tok = "hf_" + "aB3" * 12
    assert redact(f"token {tok} here") == "token hf_*** here"
    assert tok not in redact(f"Authorization: Bearer {tok}")
    assert redact("Bearer abcdefghijklmnop") == "Bearer ***"
    assert redact("key sk-proj-ABCDEFGHIJKLMNOPqrst") == "key sk-***"
    assert redact("hf_short is fine") == "hf_short is fine"
    assert looks_like_token(tok) and not looks_like_token("meta-llama/Llama-2-7b-hf")


def test_visible_controls() -> None:
    s = "a\x1b[31mred\x07\x9b\x7f\r\nb\tc\rd"
    out = visible_controls(s)
    assert out == "a␛[31mred␇\\x9b␡\nb\tc␍d"
    assert not _controls(out)


def test_show_bidi() -> None:
    s = "if x\u202e:\u2066 # \u2069"
    out = show_bidi(s)
    assert "<U+202E>" in out and "<U+2066>" in out and "<U+2069>" in out
    assert not any(0x202A <= ord(c) <= 0x202E or 0x2066 <= ord(c) <= 0x2069 for c in out)


@pytest.mark.parametrize(
    "name",
    [
        "../../x",
        "/",
        "",
        "..",
        ".",
        "a/b\\c",
        "nul\x00byte",
        "\x1b]0;t\x07x",
        "x" * 300,
        "CON",
        " .hidden. ",
        "a\u202eb",
        "[/INST] [b",
    ],
)
def test_safe_filename(name: str) -> None:
    out = safe_filename(name)
    assert out
    assert "/" not in out and "\\" not in out and "\x00" not in out
    assert ".." not in out and not out.startswith(".")
    assert not _controls(out)
    assert len(out) <= 120
    assert out not in (".", "..")


def test_safe_filename_keeps_extension_and_text() -> None:
    assert safe_filename("My chat: 2024/01.md") == "My chat_ 2024_01.md"
    long = safe_filename("y" * 300 + ".json")
    assert long.endswith(".json") and len(long) <= 120
    assert safe_filename("經過一段時間.md") == "經過一段時間.md"


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=400))
def test_safe_filename_property(name: str) -> None:
    out = safe_filename(name)
    assert out and len(out) <= 120
    assert "/" not in out and "\\" not in out and ".." not in out
    assert not _controls(out)

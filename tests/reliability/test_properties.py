"""Property tests that complement tests/unit (which covers any string / any chunking of the
sanitiser, and random TOML / JSON / journal bytes):

- sanitiser: text interleaved with *complete* hostile sequences comes out as exactly the
  text, for any chunking (nothing of a sequence survives, nothing of the text is lost);
- config loader: every file it reads and every variable at once, with binary, truncated
  and absurdly nested content (RecursionError escaped it before);
- journal / export loaders: the same hostile content.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llama_tui import locations
from llama_tui.config.remembered import remembered_settings_file
from llama_tui.config.settings import load_settings
from llama_tui.session.export import from_json
from llama_tui.session.journal import SessionLoadError, parse_journal
from llama_tui.text import StreamCleaner, clean, has_controls
from tests.reliability.payloads import TERMINAL_PAYLOADS

_SEQS = [p.seq for p in TERMINAL_PAYLOADS if p.id not in ("bell-and-nul", "osc8-link")] + [
    "\x1b[38;2;1;2;3m", "\x1bP1$r0m\x1b\\", "\x1b^privacy\x1b\\", "\x1bX sos \x9c", "\x1b(B",
    "\x1b#8", "\x9b0m", "\x90dcs\x9c", "\x9e pm \x07", "\x9f apc \x18",
]
# Printable text: letters, CJK, emoji, combining marks, tabs and newlines; no controls.
_printable = st.lists(
    st.one_of(
        st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=10),
        st.sampled_from(["\n", "\t", "é", "漢字", "👩‍💻", "e\u0301", "ا", "[/INST]"]),
    ),
    max_size=5,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(_printable, st.sampled_from(_SEQS)), max_size=8),
    _printable,
    st.lists(st.integers(min_value=1, max_value=400), max_size=15),
)
def test_interleaved_sequences_vanish_text_survives(
    parts: list[tuple[str, str]], tail: str, cuts: list[int]
) -> None:
    raw = "".join(t + s for t, s in parts) + tail
    want = "".join(t for t, _ in parts) + tail
    assert clean(raw) == want
    c = StreamCleaner()
    pieces, pos = [], 0
    for cut in sorted(set(cuts)):
        pieces.append(c.feed(raw[pos:cut]))
        pos = max(pos, cut)
    pieces.append(c.feed(raw[pos:]))
    pieces.append(c.flush())
    out = "".join(pieces)
    assert out == want
    assert not has_controls(out)


_nasty = st.one_of(
    st.binary(max_size=300),
    st.sampled_from([
        b"", b"[" * 50_000, b"{" * 50_000, b'{"a":' * 20_000, b"a = " + b"[" * 50_000,
        b"[generation]\n" + b"x = " + b"{ y = " * 5_000, b"\xff\xfe\x00", b"\x1b]52;c;QQ==\x07",
        "model = \"\u202eevil\"\n".encode(),
    ]),
)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(config=_nasty, remembered=_nasty, dotenv=_nasty,
       env_value=st.sampled_from(["[" * 20_000, "[\"a\"", "x", "", "\x00"]))
def test_config_loader_never_crashes_on_any_file_or_variable(
    config: bytes, remembered: bytes, dotenv: bytes, env_value: str, tmp_path: Path
) -> None:
    cfg = locations.config_file()
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_bytes(config)
    remembered_settings_file().write_bytes(remembered)
    (cfg.parent / ".env").write_bytes(dotenv)
    (tmp_path / ".env").write_bytes(dotenv)
    env = {"LLAMA_TUI_STOP": env_value, "LLAMA_TUI_TEMPERATURE": env_value}
    loaded = load_settings(cwd=tmp_path, environ=env)
    assert not loaded.settings.params.problems()
    for w in loaded.warnings:
        assert not has_controls(w.replace("\n", " "))


@settings(max_examples=60, deadline=None)
@given(st.lists(_nasty, max_size=5))
def test_journal_and_export_loaders_never_crash(lines: list[bytes]) -> None:
    header = json.dumps({"type": "session", "session": "20250101-000000-abcdef", "v": 1})
    data = header.encode() + b"\n" + b"\n".join(lines)
    try:
        conv, _skipped = parse_journal(data)
    except SessionLoadError:
        pass
    else:
        for m in conv.messages:
            assert isinstance(m.content, str)
    for blob in lines:
        with contextlib.suppress(SessionLoadError):
            from_json(blob)

"""Sanitising untrusted text for the terminal and for files: the one place that does it.

Model output, prompts, loaded sessions, file names, model ids, exception messages and
model-card text are all untrusted. Textual writes escape sequences in widget content to the
terminal verbatim (Static, Markdown, Log, TextArea alike: an OSC 52 clipboard write or a
window-title change in a reply would reach the user's terminal), so every such string goes
through `clean` (or a `StreamCleaner` for streamed replies) before it reaches a widget, the
clipboard, stdout or a file.

What `clean` removes:
- whole escape sequences: CSI (``ESC [`` / ``0x9b``), OSC (``ESC ]`` / ``0x9d``), DCS, SOS,
  PM, APC (``ESC P X ^ _`` / ``0x90 0x98 0x9e 0x9f``) with their payload up to BEL / ST, and
  two-character and nF escapes (``ESC c``, ``ESC ( B``...);
- every other control character (Unicode category Cc: C0, DEL and C1) except ``\\n`` and
  ``\\t``. ``\\r\\n`` becomes ``\\n``; a lone ``\\r`` and backspace are removed, so neither can
  move the cursor back to hide text.

`clean_paste` (and its incremental form `PasteCleaner`) is `clean` for pasted text: terminals
and tmux's `paste-buffer` send a paste's line ends as ``\r``, which `clean` would drop (joining
the lines), so ``\r\n`` and a lone ``\r`` become ``\n`` first.

`StreamCleaner` gives exactly the same result on any split of the text into chunks: it
holds back an incomplete sequence until it ends. The hold-back is bounded (`MAX_PENDING`
characters): a stray ESC that starts a string sequence which never ends is dropped, and the
text after it is shown, so one bad byte cannot swallow the rest of a reply. At the end of the
text (`flush`), an unfinished sequence is dropped whole.

The other helpers: `redact` (token-shaped secrets), `visible_controls` (Markdown exports
people `cat`), `show_bidi` (Trojan-source bidi overrides in code) and `safe_filename`.
No third-party imports: this module is used everywhere, including before the TUI starts.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

__all__ = [
    "MAX_PENDING",
    "PasteCleaner",
    "StreamCleaner",
    "clean",
    "clean_paste",
    "has_controls",
    "redact",
    "safe_filename",
    "show_bidi",
    "visible_controls",
]

ESC = "\x1b"
BEL = "\x07"
CAN = "\x18"
SUB = "\x1a"
C1_ST = "\x9c"
C1_CSI = "\x9b"
# 8-bit (C1) introducers of string sequences: DCS, SOS, OSC, PM, APC.
C1_STRING_STARTS = frozenset("\x90\x98\x9d\x9e\x9f")
# Second character of a 7-bit string sequence: ESC P (DCS), X (SOS), ] (OSC), ^ (PM), _ (APC).
ESC_STRING_STARTS = frozenset("PX]^_")

# Longest incomplete escape sequence held back while streaming before its introducer is
# treated as a stray byte (dropped) and the text after it is shown.
MAX_PENDING = 256

# Characters that need the state machine: every Cc (C0, DEL, C1) except \t and \n.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")

# States of the escape-sequence parser.
_TEXT = 0
_ESC = 1  # after ESC
_ESC_INTERMEDIATE = 2  # ESC followed by 0x20-0x2f bytes (nF escapes, e.g. ESC ( B)
_CSI = 3  # inside a control sequence
_STRING = 4  # inside OSC / DCS / SOS / PM / APC payload
_STRING_ESC = 5  # ESC seen inside a string: ESC \ ends it, anything else starts over


class StreamCleaner:
    """Incremental `clean`: `feed` chunks as they arrive, `flush` at the end.

    ``"".join(c.feed(x) for x in chunks) + c.flush() == clean("".join(chunks))`` for every
    split of the text. Not thread-safe; use one per stream.
    """

    def __init__(self) -> None:
        self._state = _TEXT
        self._pending: list[str] = []  # the incomplete sequence, introducer first

    def feed(self, chunk: str) -> str:
        """Clean `chunk`, holding back a trailing incomplete escape sequence."""
        out: list[str] = []
        self._run(chunk, out)
        return "".join(out)

    def flush(self) -> str:
        """End of text: drop any unfinished sequence and reset. Returns the remaining text."""
        self._pending.clear()
        self._state = _TEXT
        return ""

    @property
    def pending(self) -> int:
        """Characters currently held back (at most `MAX_PENDING`)."""
        return len(self._pending)

    # -- the state machine --------------------------------------------------------------

    def _run(self, s: str, out: list[str]) -> None:
        i = 0
        n = len(s)
        while i < n:
            if self._state == _TEXT:
                m = _CONTROL.search(s, i)
                if m is None:
                    out.append(s[i:])
                    return
                j = m.start()
                if j > i:
                    out.append(s[i:j])
                self._start(s[j])
                i = j + 1
                continue
            ch = s[i]
            i += 1
            self._step(ch, out)

    def _start(self, ch: str) -> None:
        """A special character in text: start a sequence or drop the control character."""
        if ch == ESC:
            self._state = _ESC
            self._pending = [ch]
        elif ch == C1_CSI:
            self._state = _CSI
            self._pending = [ch]
        elif ch in C1_STRING_STARTS:
            self._state = _STRING
            self._pending = [ch]
        # Any other control character (including \r, BS, BEL, lone C1) is simply dropped.

    def _step(self, ch: str, out: list[str]) -> None:
        """Advance one character inside a sequence."""
        state = self._state
        self._pending.append(ch)
        o = ord(ch)
        if state == _ESC:
            if ch == "[":
                self._state = _CSI
            elif ch in ESC_STRING_STARTS:
                self._state = _STRING
            elif 0x20 <= o <= 0x2F:
                self._state = _ESC_INTERMEDIATE
            elif 0x30 <= o <= 0x7E:
                self._done()  # a two-character escape: ESC c, ESC 7, ESC \ (a lone ST)...
            else:
                # ESC followed by a control or non-ASCII character: drop the ESC alone and
                # look at the character again as ordinary input.
                self._abort_and_rescan(out)
        elif state == _ESC_INTERMEDIATE:
            if 0x20 <= o <= 0x2F:
                pass
            elif 0x30 <= o <= 0x7E:
                self._done()
            else:
                self._abort_and_rescan(out, keep_from=len(self._pending) - 1)
        elif state == _CSI:
            if 0x20 <= o <= 0x3F:  # parameter and intermediate bytes
                pass
            elif 0x40 <= o <= 0x7E:  # final byte
                self._done()
            else:
                # Malformed: the sequence so far is dropped, the odd character re-read.
                self._abort_and_rescan(out, keep_from=len(self._pending) - 1)
        elif state == _STRING:
            if ch in (BEL, C1_ST, CAN, SUB):
                self._done()
            elif ch == ESC:
                self._state = _STRING_ESC
        elif state == _STRING_ESC:
            if ch == "\\":
                self._done()  # ESC \ is ST
            else:
                # ESC inside a string cancels it (as terminals do); this ESC starts anew.
                self._pending = [ESC]
                self._state = _ESC
                self._step(ch, out)
                return
        if len(self._pending) > MAX_PENDING and self._state != _TEXT:
            # Held back too long: the introducer was a stray byte. Drop it, show the rest.
            self._abort_and_rescan(out, keep_from=1)

    def _done(self) -> None:
        self._pending = []
        self._state = _TEXT

    def _abort_and_rescan(self, out: list[str], keep_from: int | None = None) -> None:
        """Drop the sequence's first `keep_from` characters and re-read the rest as input.

        By default only the ESC is dropped and everything after it is re-read.
        """
        start = 1 if keep_from is None else keep_from
        rest = "".join(self._pending[start:])
        self._pending = []
        self._state = _TEXT
        self._run(rest, out)


def clean(s: str) -> str:
    """Remove escape sequences and control characters (except ``\\n`` and ``\\t``) from `s`."""
    if not _CONTROL.search(s):
        return s
    c = StreamCleaner()
    return c.feed(s) + c.flush()


class PasteCleaner:
    """Incremental `clean_paste`, for a paste that arrives in pieces (any split, same result)."""

    def __init__(self) -> None:
        self._cleaner = StreamCleaner()
        self._after_cr = False  # the last piece ended in \r: a leading \n is its CRLF's half

    def feed(self, chunk: str) -> str:
        """Clean `chunk`, line ends as ``\n``; a trailing incomplete sequence is held back."""
        if not chunk:
            return ""
        if self._after_cr and chunk[0] == "\n":
            chunk = chunk[1:]
        self._after_cr = chunk.endswith("\r")
        return self._cleaner.feed(chunk.replace("\r\n", "\n").replace("\r", "\n"))

    def flush(self) -> str:
        """End of the paste: drop an unfinished sequence and reset."""
        self._after_cr = False
        return self._cleaner.flush()


def clean_paste(s: str) -> str:
    """`clean` for pasted text: ``\r\n`` and a lone ``\r`` (a terminal's line end) become ``\n``."""
    c = PasteCleaner()
    return c.feed(s) + c.flush()


def has_controls(s: str) -> bool:
    """True when `s` holds a control character other than ``\\n`` and ``\\t``."""
    return _CONTROL.search(s) is not None


# -- secrets ------------------------------------------------------------------------------

# Hugging Face user / org access tokens (a model spec of this shape is refused, too).
HF_TOKEN_RE = re.compile(r"hf_[A-Za-z0-9]{30,}")

_SECRETS: tuple[tuple[re.Pattern[str], str], ...] = (
    (HF_TOKEN_RE, "hf_***"),
    # OpenAI-style API keys (sk-..., sk-proj-...), as used by OpenAI-compatible servers.
    (re.compile(r"\bsk-[A-Za-z0-9_\-]{16,}"), "sk-***"),
    # Authorization headers echoed in exception text.
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=\-]{8,}"), r"\1 ***"),
)


def redact(s: str, secrets: Iterable[str | None] = ()) -> str:
    """Replace token-shaped strings with placeholders (``hf_***``, ``sk-***``, ``Bearer ***``).

    `secrets` are exact values to hide as ``***`` whatever their shape (the API key a request
    was sent with: a server that echoes request headers would otherwise show it).
    Applied to every error message, log line and export; cheap enough to call everywhere.
    """
    for secret in secrets:
        if secret:
            s = s.replace(secret, "***")
    for pattern, repl in _SECRETS:
        s = pattern.sub(repl, s)
    return s


def looks_like_token(s: str) -> bool:
    """True when `s` contains something `redact` would hide."""
    return any(p.search(s) for p, _ in _SECRETS)


# -- visible placeholders -----------------------------------------------------------------


def _visible(m: re.Match[str]) -> str:
    o = ord(m.group())
    if o < 0x20:
        return chr(0x2400 + o)  # Unicode Control Pictures: ␀ ... ␛ ... ␟
    if o == 0x7F:
        return "\u2421"  # ␡
    return f"\\x{o:02x}"  # C1 has no control pictures: write \x9b etc.


def visible_controls(s: str) -> str:
    """Show control characters as visible placeholders (``␛``, ``␇``, ``\\x9b``).

    For Markdown exports that people `cat`: nothing in the result can drive a terminal, and
    nothing is silently lost. ``\\n`` and ``\\t`` stay; ``\\r\\n`` becomes ``\\n``.
    """
    s = s.replace("\r\n", "\n")
    return _CONTROL.sub(_visible, s)


_BIDI = re.compile("[\u202a-\u202e\u2066-\u2069]")


def show_bidi(s: str) -> str:
    """Make bidi embedding / override / isolate characters visible, e.g. ``<U+202E>``.

    For code blocks: these reorder how source is displayed ("Trojan Source",
    CVE-2021-42574), so code shown to the user must reveal them.
    """
    return _BIDI.sub(lambda m: f"<U+{ord(m.group()):04X}>", s)


# -- file names ---------------------------------------------------------------------------

MAX_FILENAME = 120
_BAD_NAME_CHARS = re.compile(r'[\\/:*?"<>|\x00-\x1f\x7f-\x9f]')
_WINDOWS_RESERVED = frozenset(
    ["CON", "PRN", "AUX", "NUL"]
    + [f"COM{i}" for i in range(1, 10)]
    + [f"LPT{i}" for i in range(1, 10)]
)


def safe_filename(name: str, default: str = "untitled") -> str:
    """A single safe path component from untrusted `name` (a title, a model id, user input).

    No path separators, NUL, controls, bidi characters, leading dots (so never ``.`` or
    ``..``) or trailing dots / spaces; at most `MAX_FILENAME` characters with the extension
    kept where possible; never empty.
    """
    s = unicodedata.normalize("NFC", clean(name))
    s = _BIDI.sub("", s)
    s = _BAD_NAME_CHARS.sub("_", s)
    s = re.sub(r"\s+", " ", s).strip()
    s = re.sub(r"\.{2,}", ".", s)  # never ".." anywhere
    s = s.lstrip(".").rstrip(". ")
    s = re.sub(r"_{2,}", "_", s)
    if len(s) > MAX_FILENAME:
        stem, dot, ext = s.rpartition(".")
        if dot and stem and 0 < len(ext) <= 10:
            s = stem[: MAX_FILENAME - len(ext) - 1].rstrip(". ") + "." + ext
        else:
            s = s[:MAX_FILENAME].rstrip(". ")
    if s.split(".")[0].upper() in _WINDOWS_RESERVED:
        s = "_" + s
    return s or default

"""Capture the exact characters Textual writes to the terminal, and read them back.

Textual's headless driver discards output, and `App._display` skips rendering entirely
when the driver says it is headless. `RecordingDriver` is the headless driver (no real
terminal, no input thread) that says it is *not* headless and records every `write`: the
app then renders each frame exactly as it would for a real terminal (the same
`CompositorUpdate.render_segments` code path) and hands us the string it would have written.

`audit(out)` splits the output into Textual's own control sequences (an allowlist of the
few kinds it emits: SGR colours, cursor positioning, the pointer shape, cursor visibility,
synchronised output) and everything else; anything else that is a control character is a
leak. `Screen` replays the output onto a grid (cursor positioning + text, which is all the
allowlisted output can do) to give what the user would see.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

from rich.cells import cell_len
from textual.app import App
from textual.drivers.headless_driver import HeadlessDriver


class RecordingDriver(HeadlessDriver):
    """A headless driver that records the terminal output of every frame."""

    @property
    def is_headless(self) -> bool:
        return False  # so App._display renders and writes, as with a real terminal

    def write(self, data: str) -> None:
        record = getattr(self._app, "_terminal_output", None)
        if record is not None:
            record.append(data)


def record_terminal(app: App[object]) -> list[str]:
    """Make `app` (not yet running) write its frames into the returned list.

    Run it with ``app.run_test(headless=False, ...)``: `run_test`'s default headless=True
    would pick Textual's own HeadlessDriver.
    """
    out: list[str] = []
    app._terminal_output = out  # type: ignore[attr-defined]
    app.driver_class = RecordingDriver
    return out


# Every sequence Textual 8.2.8 writes in a full-screen frame (checked by hand), and nothing
# else. A payload SGR would match the first pattern, so tests use payload SGRs Textual never
# writes and look for them verbatim as well.
_ALLOWED = re.compile(
    r"\x1b\[[0-9;]*m"  # SGR: colours and attributes
    r"|\x1b\[[0-9]+;[0-9]+H"  # CUP: move the cursor to row;col
    r"|\x1b\]22;[a-z-]+\x07"  # OSC 22: mouse pointer shape
    r"|\x1b\[\?25[hl]"  # cursor visibility
    r"|\x1b\[\?2026[hl]"  # synchronised output
)
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")  # every Cc but \n


@dataclass
class Audit:
    own: list[str] = field(default_factory=list)  # Textual's own sequences
    leaks: list[str] = field(default_factory=list)  # control characters outside them, in context


def audit(out: str) -> Audit:
    """Classify every control character in `out`."""
    result = Audit()
    pos = 0
    for m in _ALLOWED.finditer(out):
        _leaks(out, pos, m.start(), result)
        result.own.append(m.group())
        pos = m.end()
    _leaks(out, pos, len(out), result)
    return result


def _leaks(out: str, start: int, end: int, result: Audit) -> None:
    for m in _CONTROL.finditer(out, start, end):
        i = m.start()
        result.leaks.append(repr(out[max(0, i - 20) : i + 20]))


_TOKEN = re.compile(r"\x1b\[([0-9]+);([0-9]+)H|" + _ALLOWED.pattern + r"|\n|[^\x1b\n]+")


class Screen:
    """Replays allowlisted terminal output onto a `width` x `height` grid."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.rows = [[" "] * width for _ in range(height)]
        self.x = self.y = 0

    def feed(self, out: str) -> Screen:
        for m in _TOKEN.finditer(out):
            if m.group(1) is not None:
                self.y, self.x = int(m.group(1)) - 1, int(m.group(2)) - 1
            elif m.group() == "\n":
                self.y, self.x = self.y + 1, 0
            elif not m.group().startswith("\x1b"):
                self._text(m.group())
        return self

    def _text(self, s: str) -> None:
        for ch in s:
            if unicodedata.combining(ch):
                continue
            w = cell_len(ch)
            if 0 <= self.y < self.height and 0 <= self.x < self.width:
                self.rows[self.y][self.x] = ch
                if w == 2 and self.x + 1 < self.width:
                    self.rows[self.y][self.x + 1] = ""
            self.x += max(w, 1)

    @property
    def text(self) -> str:
        return "\n".join("".join(r).rstrip() for r in self.rows)

    @property
    def flat(self) -> str:
        """All rows joined without breaks or padding (text wrapped over lines reads on)."""
        return "".join("".join(r).strip() for r in self.rows)


def screen_of(out: list[str], width: int, height: int) -> Screen:
    return Screen(width, height).feed("".join(out))

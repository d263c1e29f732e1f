"""Copy text to the user's local clipboard over SSH with OSC 52, or to a file.

Textual's `copy_to_clipboard` writes a bare OSC 52 sequence; inside tmux or GNU screen the
multiplexer swallows it unless it is wrapped in a passthrough (DCS) envelope, so we build
the sequence ourselves. Only sanitised text is ever copied: the caller passes text that went
through `llama_tui.text.clean`, and we clean again here because a clipboard write is exactly
the attack surface OSC 52 injection targets.

Terminals do not report whether the write worked, so the UI also offers writing the text to
a file and shows its path.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from llama_tui.text import clean, safe_filename

# GNU screen drops DCS strings longer than about 768 bytes, so its passthrough is chunked.
_SCREEN_CHUNK = 768


def osc52(text: str) -> str:
    """The bare OSC 52 "set clipboard" sequence for `text` (already clean)."""
    payload = base64.b64encode(clean(text).encode("utf-8")).decode("ascii")
    return f"\x1b]52;c;{payload}\x07"


def wrap_for_multiplexer(seq: str, env: Mapping[str, str] | None = None) -> str:
    """Wrap `seq` so tmux (`$TMUX`) or screen (`$STY`) pass it to the outer terminal.

    tmux: ``ESC P tmux; <seq with every ESC doubled> ESC \\`` (needs `allow-passthrough on`
    in tmux >= 3.3, or `set-clipboard on`, which handles the bare sequence itself).
    screen: ``ESC P <chunk> ESC \\`` per chunk of the sequence.
    """
    env = os.environ if env is None else env
    if env.get("TMUX"):
        return "\x1bPtmux;" + seq.replace("\x1b", "\x1b\x1b") + "\x1b\\"
    if env.get("STY"):
        return "".join(
            "\x1bP" + seq[i : i + _SCREEN_CHUNK] + "\x1b\\"
            for i in range(0, len(seq), _SCREEN_CHUNK)
        )
    return seq


def clipboard_sequence(text: str, env: Mapping[str, str] | None = None) -> str:
    """Everything to write to the terminal to copy `text`."""
    return wrap_for_multiplexer(osc52(text), env)


@dataclass(frozen=True)
class CodeBlock:
    """A fenced code block found in a reply."""

    language: str
    code: str

    @property
    def title(self) -> str:
        first = next((line.strip() for line in self.code.splitlines() if line.strip()), "")
        lang = self.language or "text"
        lines = self.code.count("\n") + (0 if self.code.endswith("\n") else 1)
        return f"{lang}, {lines} line{'s' if lines != 1 else ''}: {first[:50]}"


_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>[^\n]*)$")


def code_blocks(markdown: str) -> list[CodeBlock]:
    """Fenced code blocks of a Markdown text, in order (an unclosed fence runs to the end)."""
    blocks: list[CodeBlock] = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence = m.group("fence")
        language = m.group("info").strip().split(" ")[0] if m.group("info").strip() else ""
        body: list[str] = []
        i += 1
        while i < len(lines):
            closing = lines[i].strip()
            if closing.startswith(fence[0] * len(fence)) and not closing.strip(fence[0]):
                break
            body.append(lines[i])
            i += 1
        blocks.append(CodeBlock(clean(language), clean("\n".join(body) + "\n")))
        i += 1
    return blocks


def write_copy_file(text: str, directory: Path, stem: str) -> Path:
    """Write `text` (cleaned) to a new file in `directory`, never overwriting; return its path.

    The fallback for terminals that ignore OSC 52: the user can `cat` or `scp` the file.
    """
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    base = safe_filename(stem, default="copy")
    for n in range(1000):
        path = directory / (f"{base}.txt" if n == 0 else f"{base}-{n}.txt")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(clean(text))
        return path
    raise FileExistsError(f"too many copy files named {base}-N.txt in {directory}")

"""Files attached to a user message (`/read`, `--file`): the data and the one block rule.

An `Attachment` keeps the file's text itself, not only its path, so a resumed session sends
the model exactly what it saw the first time even if the file has changed or gone since.
`model_text` is the one rule for what the model gets: every attached file in its own
delimited block, named, before the user's own words. `Conversation.history()` applies it,
so the TUI, headless mode, the context meter and retries all send the same text.

Reading files from disk (and refusing binary, oversized or unreadable ones) is the chat
core's business (`llama_tui.chat.attachments`); this module only holds what was read, so
sessions and exports work without it. `Attachment.from_dict` treats its input as untrusted
(a journal or a JSON export can be hand-edited) and sanitises the text again.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from llama_tui.text import clean, clean_paste

__all__ = [
    "MAX_NAME",
    "Attachment",
    "attachments_from",
    "file_block",
    "human_size",
    "label",
    "markdown_files",
    "model_text",
    "one_line_name",
    "sanitise_content",
]

MAX_NAME = 200  # characters of a file's name kept (a name is shown and sent, never used)

_BACKTICKS = re.compile(r"`+")


def one_line_name(name: str) -> str:
    """A file name safe to show and to put in a block header: no controls, one line."""
    flat = " ".join(clean(name).split())
    return flat[:MAX_NAME] or "file"


def sanitise_content(text: str) -> str:
    """A file's text as the model gets it: escape sequences and control characters removed
    like any untrusted text (`text.clean_paste`: CR and CRLF line ends become LF rather than
    joining lines), a UTF-8 byte-order mark dropped."""
    return clean_paste(text.removeprefix("\ufeff"))


@dataclass(frozen=True)
class Attachment:
    """One attached text file: its name as the user gave it, its sanitised text, its size on
    disk, and its token count (None: not counted; `estimated`: chars / 4, no tokenizer)."""

    name: str
    content: str
    size: int
    tokens: int | None = None
    estimated: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "content": self.content,
            "size": self.size,
            "tokens": self.tokens,
            "estimated": self.estimated,
        }

    @classmethod
    def from_dict(cls, d: object) -> Attachment:
        """Parse an untrusted dict; `ValueError` when it is not a usable attachment."""
        if not isinstance(d, dict):
            raise ValueError("attachment is not an object")
        name, content = d.get("name"), d.get("content")
        if not isinstance(name, str) or not isinstance(content, str):
            raise ValueError("attachment has no name or no text")
        size, tokens = _count(d.get("size")), _count(d.get("tokens"))
        text = sanitise_content(content)
        return cls(
            name=one_line_name(name),
            content=text,
            size=size if size is not None else len(text.encode("utf-8", "replace")),
            tokens=tokens,
            estimated=d.get("estimated") is True,
        )


def _count(value: object) -> int | None:
    """A count read from a file: a non-negative int, else None."""
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
    return value if ok and isinstance(value, int) else None


def attachments_from(value: object) -> tuple[Attachment, ...]:
    """A message's ``attachments`` field from a file: absent is none; `ValueError` when it
    is there but not a list of attachments (the message would not be what was sent)."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ValueError("attachments is not a list")
    return tuple(Attachment.from_dict(a) for a in value)


def file_block(a: Attachment) -> str:
    """One file as the model gets it: a header line with its name, then its text in a code
    fence longer than any run of backticks inside it, so no line of the file can end the
    block early (the file is data, not instructions that could close it)."""
    longest = max((len(m.group()) for m in _BACKTICKS.finditer(a.content)), default=0)
    fence = "`" * max(3, longest + 1)
    body = a.content if a.content.endswith("\n") or not a.content else a.content + "\n"
    return f"File {a.name}:\n{fence}\n{body}{fence}"


def model_text(text: str, attachments: Sequence[Attachment]) -> str:
    """The user message as the model gets it: each attached file's block, then the text."""
    if not attachments:
        return text
    return "\n\n".join([*(file_block(a) for a in attachments), *([text] if text else [])])


def human_size(size: int) -> str:
    """1234 -> "1.2 kB" (decimal units, as `ls -h --si` and file managers show them)."""
    if size < 1000:
        return f"{size} B"
    value = float(size)
    for unit in ("kB", "MB", "GB"):
        value /= 1000
        if value < 999.95 or unit == "GB":
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")  # pragma: no cover


def label(a: Attachment) -> str:
    """What a chip or an export says of a file: name, size and tokens ("~" when estimated)."""
    parts = [a.name, human_size(a.size)]
    if a.tokens is not None:
        parts.append(f"{'~' if a.estimated else ''}{a.tokens} tokens")
    return " · ".join(parts)


def markdown_files(attachments: Sequence[Attachment], md: Callable[[str], str]) -> list[str]:
    """Markdown export lines for a message's files: each one folded in a ``<details>`` block
    named by its label, its text in a fence no line of it can close. `md` is the export's
    sanitiser (control characters made visible, secrets hidden); the summary is HTML, so
    it is escaped too."""
    import html  # here: only exports need it; the TUI imports this module before its first paint

    out: list[str] = []
    for a in attachments:
        text = md(a.content)
        longest = max((len(m.group()) for m in _BACKTICKS.finditer(text)), default=0)
        fence = "`" * max(3, longest + 1)
        summary = html.escape(" ".join(md(label(a)).split()))
        body = text if text.endswith("\n") or not text else text + "\n"
        out += [
            f"<details><summary>File {summary}</summary>",
            "",
            fence,
            body + fence,
            "",
            "</details>",
            "",
        ]
    return out

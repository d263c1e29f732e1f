"""Attached files on screen: chips in a user's turn, and the files waiting for the next one.

A chip is one line: ``file NAME · SIZE · N tokens`` (``~N`` when estimated without the
model's tokenizer). Only names and sizes are shown, never the files' text (that goes to the
model, and to exports). Names come from the user's file system or a loaded session and are
untrusted: `session.attachments` already made them one clean line, and they are built into
`Content` here, never parsed as markup.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from textual.content import Content
from textual.widgets import Static

from llama_tui.session.attachments import Attachment, label, one_line_name

__all__ = ["CLEAR_HINT", "PendingFiles", "chip", "with_chips"]

CLEAR_HINT = "/read --clear drops them"


def chip(a: Attachment) -> Content:
    """One file's chip: its base name in bold (the path as given goes to the model and the
    exports; a chip has 80 columns), size and tokens after it."""
    name = one_line_name(a.name).rstrip("/").rsplit("/", 1)[-1] or a.name
    rest = label(a).removeprefix(a.name)
    return Content.assemble(("file ", "dim"), (name, "bold"), (rest, "dim"))


def with_chips(text: str, attachments: Sequence[Attachment]) -> str | Content:
    """A user turn's body: a chip per attached file above the (already cleaned) text."""
    if not attachments:
        return text
    return Content("\n").join([*(chip(a) for a in attachments), Content(text)])


class PendingFiles(Static):
    """Above the input: the files `/read` attached to the next message; hidden when none."""

    DEFAULT_CSS: ClassVar[str] = """
    PendingFiles {
        height: auto;
        max-height: 6;
        padding: 0 2;
        color: $text-muted;
        display: none;
    }
    PendingFiles.-some {
        display: block;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("", markup=False, id=id)

    def show_files(self, files: Sequence[Attachment]) -> None:
        """Show `files` (none: hide)."""
        self.set_class(bool(files), "-some")
        if not files:
            self.update("")
            return
        tokens = sum(a.tokens or 0 for a in files)
        approx = "~" if any(a.estimated for a in files) else ""
        head = Content.styled(
            f"Attached to your next message ({approx}{tokens} tokens; {CLEAR_HINT}):", "dim"
        )
        self.update(Content("\n").join([head, *(chip(a) for a in files)]))

"""`/read`: files attached to the next message, held by the chat screen until it is sent.

``/read PATH...`` (globs too) reads the files off the UI thread, counts their tokens with
the loaded model's tokenizer (holding the model's lock, as the context meter does; an
estimate when no model is loaded yet or a reply holds the tokenizer), and keeps those that
can be attached. Each refused file gets a notice with its cause and fix (the rules are the
chat core's, `llama_tui.chat.attachments`, shared with headless ``--file``); the others are
attached. ``/read`` alone lists what is attached, ``/read --clear`` drops it.

The files wait above the input (`PendingFiles`) and the status bar's context meter shows
their cost (``ctx 120+850/8192``) until the next message takes them (`take`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from llama_tui.session.attachments import Attachment, label

if TYPE_CHECKING:
    from llama_tui.core.backend import Backend
    from llama_tui.ui.chat_screen import ChatScreen

__all__ = ["CLEAR_WORDS", "AttachControl"]

CLEAR_WORDS = ("--clear", "-c")
# How long counting waits for the tokenizer before it estimates (a reply may hold it).
LOCK_WAIT_S = 0.5


class AttachControl:
    """The files waiting for the next message, and the `/read` command."""

    def __init__(self, screen: ChatScreen) -> None:
        self.screen = screen
        self.files: list[Attachment] = []

    async def command(self, arg: str) -> None:
        """`/read PATH...`, `/read` (list) or `/read --clear`."""
        words = arg.split()
        if not words:
            await self._list()
            return
        if words[0] in CLEAR_WORDS:
            count = len(self.files)
            self._set([])
            self.screen.host.say(
                f"Dropped {count} attached file(s)." if count else "No files were attached."
            )
            return
        await self.read(arg)

    async def read(self, arg: str, cwd: Path | None = None) -> None:
        """Attach the files `arg` names; refuse the others with a notice each."""
        from llama_tui.chat.attachments import AttachmentError, expand_paths

        try:  # a glob walks folders: off the UI thread
            targets = await asyncio.to_thread(expand_paths, arg, cwd)
        except AttachmentError as e:
            await self._refused([e])
            return
        max_bytes = self.screen.host.model.settings.attach_max_kb * 1024
        read, refused = await asyncio.to_thread(_read_all, targets, max_bytes)
        read = await asyncio.to_thread(self._count, read)
        added = self._fitting(read, refused)
        self._set([*self.files, *added])
        await self._refused(refused)  # the attached ones show above the input, no toast

    def restore(self, files: Sequence[Attachment]) -> None:
        """A sent prompt comes back to the input (edit: Ctrl+T, /edit): its files wait for
        it again, ahead of any attached since."""
        self._set([*files, *(a for a in self.files if a not in files)])

    def take(self) -> tuple[Attachment, ...]:
        """The files for the message being sent; none wait any more."""
        files = tuple(self.files)
        self._set([])
        return files

    # -- helpers -----------------------------------------------------------------------

    def _count(self, files: list[Attachment]) -> list[Attachment]:
        """Token counts (on a worker thread): the model's tokenizer when it is free."""
        from llama_tui.chat.attachments import count_tokens

        if not files:
            return files
        host = self.screen.host.model
        backend: Backend | None = host.backend
        if backend is None or not host.lock.acquire(timeout=LOCK_WAIT_S):
            return count_tokens(None, files)
        try:
            return count_tokens(backend, files)
        finally:
            host.lock.release()

    def _fitting(self, files: list[Attachment], refused: list[Exception]) -> list[Attachment]:
        """The files that fit the context together with those already attached; each one
        that does not is added to `refused`."""
        from llama_tui.chat.attachments import AttachmentError, check_fits

        context = self.screen.host.model.context_length
        max_new = self.screen.host.prefs.params.max_new_tokens
        added: list[Attachment] = []
        for a in files:
            try:
                check_fits([*self.files, *added, a], context, max_new)
            except AttachmentError as e:
                refused.append(e)
                continue
            added.append(a)
        return added

    def _set(self, files: Sequence[Attachment]) -> None:
        from llama_tui.ui.widgets.attachments import PendingFiles

        self.files = list(files)
        self.screen.query_one(PendingFiles).show_files(self.files)
        self.screen.status.update_facts(context_pending=sum(a.tokens or 0 for a in files))

    async def _list(self) -> None:
        if not self.files:
            await self.screen.note(
                "No files are attached. /read PATH attaches a text file to "
                "your next message (several paths or a glob: several).",
                title="/read",
            )
            return
        lines = [label(a) for a in self.files]
        await self.screen.note(
            "Attached to your next message:\n" + "\n".join(lines) + "\n/read --clear drops them.",
            title="/read",
        )

    async def _refused(self, errors: Sequence[Exception]) -> None:
        for e in errors:
            cause, fix = getattr(e, "cause", str(e)), getattr(e, "fix", "")
            await self.screen.note(f"{cause}\n{fix}".strip(), title="not attached", variant="error")


def _read_all(
    targets: list[tuple[Path, str]], max_bytes: int
) -> tuple[list[Attachment], list[Exception]]:
    """Read each file (worker thread); the refused ones are returned, not raised."""
    from llama_tui.chat.attachments import AttachmentError, read_attachment

    read: list[Attachment] = []
    refused: list[Exception] = []
    for path, name in targets:
        try:
            read.append(read_attachment(path, name, max_bytes))
        except AttachmentError as e:
            refused.append(e)
    return read, refused

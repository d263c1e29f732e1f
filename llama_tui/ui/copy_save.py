"""Saving the conversation and copying text out of the app (OSC 52 or a file).

Saves run off the UI thread (`asyncio.to_thread` on a deep copy of the conversation), never
overwrite without asking, and report failures with the path and the cause while the
conversation stays as it is. Copies carry only sanitised text; inside tmux / screen the
OSC 52 sequence is wrapped so it reaches the user's own terminal.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import os
from pathlib import Path
from typing import Any

from llama_tui import locations
from llama_tui.text import clean
from llama_tui.ui.base import ChatAppBase
from llama_tui.ui.clipboard import clipboard_sequence, code_blocks, write_copy_file
from llama_tui.ui.screens.code_picker import CodePickerScreen
from llama_tui.ui.screens.confirm import ConfirmScreen


class CopySaveControl(ChatAppBase):
    """`/save`, `/copy`, Ctrl+S, Ctrl+Y and F3."""

    # -- save ----------------------------------------------------------------------------------

    async def cmd_save(self, arg: str, *, overwrite: bool = False) -> None:
        from llama_tui.session.export import default_export_path, save_conversation

        conv = self.conversation
        if not conv.messages:
            self.say("Nothing to save yet.")
            return
        # A str, not a Path: Path("newdir/") drops the trailing slash that says "a folder".
        path: Path | str = (
            os.path.expanduser(arg) if arg else default_export_path(conv, Path.cwd())
        )
        snapshot = copy.deepcopy(conv)  # the worker thread must not see later changes
        try:
            written = await asyncio.to_thread(
                save_conversation, snapshot, path, self.export_meta(), overwrite=overwrite
            )
        except FileExistsError:
            def answer(yes: bool | None) -> None:
                if yes:
                    self.run_worker(self.cmd_save(str(path), overwrite=True),
                                    exit_on_error=False)

            self.push_screen(ConfirmScreen(f"{path} already exists. Replace it?",
                                           yes="Replace", no="Keep it"), answer)
            return
        except (OSError, ValueError) as e:
            why = getattr(e, "strerror", None) or str(e)
            self.say(f"Could not save to {path}: {why}. The conversation is unchanged; "
                     "try another path.", severity="error", timeout=10)
            return
        self.say(f"Saved {written}")

    def export_meta(self) -> dict[str, Any]:
        from importlib import metadata

        versions = {}
        for dist in ("transformers", "torch", "textual"):
            with contextlib.suppress(metadata.PackageNotFoundError):
                versions[dist] = metadata.version(dist)
        return {"versions": versions}

    # -- copy ----------------------------------------------------------------------------------

    async def cmd_copy(self, arg: str) -> None:
        """`/copy` last reply, `/copy N` code block N, `... file` to write a file instead."""
        words = arg.split()
        to_file = "file" in words
        numbers = [w for w in words if w.isdigit()]
        reply = self.conversation.last("assistant")
        if reply is None or not reply.content:
            self.say("No reply to copy yet.")
            return
        if numbers:
            blocks = code_blocks(reply.content)
            n = int(numbers[0])
            if not 1 <= n <= len(blocks):
                self.say(f"The last reply has {len(blocks)} code block(s).", severity="warning")
                return
            self.deliver(blocks[n - 1].code, f"code block {n}", to_file)
        else:
            self.deliver(reply.content, "the last reply", to_file)

    def copy_code_block(self) -> None:
        reply = self.conversation.last("assistant")
        blocks = code_blocks(reply.content) if reply else []
        if not blocks:
            self.say("The last reply has no code blocks; Ctrl+Y copies the whole reply.")
            return

        def chosen(choice: tuple[int, str] | None) -> None:
            if choice is not None:
                index, how = choice
                self.deliver(blocks[index].code, f"code block {index + 1}", how == "file")

        self.push_screen(CodePickerScreen(blocks), chosen)

    def deliver(self, text: str, what: str, to_file: bool) -> None:
        text = clean(text)  # only sanitised text ever leaves the app
        if to_file:
            try:
                path = write_copy_file(text, locations.data_dir() / "copies", what)
            except OSError as e:
                self.say(f"Could not write the file: {e}", severity="error")
                return
            self.say(f"Wrote {what} to {path}", timeout=10)
            return
        seq = clipboard_sequence(text)
        self.clipboard_writes.append(seq)
        self._clipboard = text  # what `App.clipboard` reports
        if self._driver is not None:
            # copy_to_clipboard would write a bare OSC 52 that tmux / screen swallow.
            self._driver.write(seq)
        self.say(f"Copied {what} ({len(text)} characters) with OSC 52. Nothing arrived? "
                 "Your terminal may not support it: /copy file writes it to a file.")

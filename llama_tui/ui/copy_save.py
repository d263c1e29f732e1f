"""Saving the conversation and copying text out of the app (clipboard or a file).

Saves go to `locations.save_dir()` unless the user names an absolute path: Ctrl+S (and a
bare `/save`) open a dialog prefilled with `<save dir>/<date>-<title slug>.md`; `/save PATH`
saves at once, a relative PATH inside the save directory. Saves run off the UI thread
(`asyncio.to_thread` on a deep copy of the conversation), never overwrite without asking,
report the absolute path written, and on failure name the path and the cause while the
conversation stays as it is. Copies carry only sanitised text; how they reach the
clipboard (OSC 52, tmux, screen) is `clipboard.py`'s business.
"""

from __future__ import annotations

import asyncio
import copy
import os
from pathlib import Path
from typing import TYPE_CHECKING

from llama_tui import locations
from llama_tui.text import clean
from llama_tui.ui.clipboard import copy_text, write_copy_file
from llama_tui.ui.code_blocks import code_blocks
from llama_tui.ui.screens.code_picker import CodePickerScreen
from llama_tui.ui.screens.confirm import ConfirmScreen
from llama_tui.ui.screens.save_dialog import SaveDialog

if TYPE_CHECKING:
    from llama_tui.ui.chat_screen import ChatScreen

COPY_USAGE = ("Usage: /copy [N] [file]: the last reply, or its code block N; "
              "file writes it to a file instead of the clipboard.")


def resolve_save_path(text: str) -> str:
    """A path the user typed: `~` expanded; a relative one taken inside the save directory
    (never the working directory, often a git checkout). A str, not a Path: a trailing
    slash ("notes/") means "a folder" and Path would drop it."""
    path = os.path.expanduser(text.strip())
    return path if os.path.isabs(path) else os.path.join(locations.save_dir(), path)



# -- save ----------------------------------------------------------------------------------

async def save_command(chat: ChatScreen, arg: str) -> None:
    """`/save PATH` saves there; a bare `/save` (and Ctrl+S) asks where first."""
    if not chat.conversation.messages:
        chat.host.say("Nothing to save yet.")
        return
    if arg.strip():
        await save_to(chat, resolve_save_path(arg))
        return
    from llama_tui.session.export import default_export_path

    folder = locations.save_dir()
    default = default_export_path(chat.conversation, folder)

    def chosen(path: str | None) -> None:
        if path:
            chat.run_worker(save_to(chat, resolve_save_path(path)), exit_on_error=False)

    chat.app.push_screen(SaveDialog(str(default), str(folder)), chosen)

async def save_to(chat: ChatScreen, path: str, *, overwrite: bool = False) -> None:
    """Save to `path` (already resolved); an existing file is replaced only if confirmed."""
    from llama_tui.session.export import save_conversation

    snapshot = copy.deepcopy(chat.conversation)  # the worker thread must not see changes
    try:
        written = await asyncio.to_thread(save_conversation, snapshot, path,
                                          overwrite=overwrite)
    except FileExistsError as e:
        existing = e.filename or path

        def answer(yes: bool | None) -> None:
            if yes:
                chat.run_worker(save_to(chat, path, overwrite=True), exit_on_error=False)

        chat.app.push_screen(ConfirmScreen(f"{existing} already exists. Replace it?",
                                       yes="Replace", no="Keep it"), answer)
        return
    except (OSError, ValueError) as e:
        why = getattr(e, "strerror", None) or str(e)
        chat.host.say(f"Could not save to {path}: {why}. The conversation is unchanged; "
                 "try another path.", severity="error", timeout=10)
        return
    chat.host.say(f"Saved to {Path(written).absolute()}", timeout=10)


# -- copy ----------------------------------------------------------------------------------

async def copy_command(chat: ChatScreen, arg: str) -> None:
    """`/copy` last reply, `/copy N` code block N, `... file` to write a file instead."""
    words = arg.split()
    numbers = [w for w in words if w.isdigit()]
    unknown = [w for w in words if w != "file" and not w.isdigit()]
    if unknown or len(numbers) > 1 or words.count("file") > 1:
        bad = unknown[0] if unknown else arg.strip()
        chat.host.say(f"/copy does not understand {bad!r}. {COPY_USAGE}", severity="warning",
                 timeout=8)
        return
    to_file = "file" in words
    reply = chat.conversation.last("assistant")
    if reply is None or not reply.content:
        chat.host.say("No reply to copy yet.")
        return
    if not numbers:
        await deliver(chat, reply.content, "the last reply", to_file, "reply.md")
        return
    blocks = code_blocks(reply.content)
    n = int(numbers[0])
    if not 1 <= n <= len(blocks):
        chat.host.say(f"The last reply has {len(blocks)} code block(s).", severity="warning")
        return
    block = blocks[n - 1]
    await deliver(chat, block.code, f"code block {n}", to_file, f"code-{n}.{block.extension}")

def pick_code_block(chat: ChatScreen) -> None:
    reply = chat.conversation.last("assistant")
    blocks = code_blocks(reply.content) if reply else []
    if not blocks:
        chat.host.say("The last reply has no code blocks; Ctrl+Y copies the whole reply.")
        return

    def chosen(choice: tuple[int, str] | None) -> None:
        if choice is not None:
            index, how = choice
            block = blocks[index]
            chat.run_worker(
                deliver(chat, block.code, f"code block {index + 1}", how == "file",
                             f"code-{index + 1}.{block.extension}"),
                exit_on_error=False)

    chat.app.push_screen(CodePickerScreen(blocks), chosen)

async def deliver(chat: ChatScreen, text: str, what: str, to_file: bool, name: str) -> None:
    """Copy `text` to the clipboard, or write it to `<save dir>/<date>-<slug>-<name>`."""
    text = clean(text)  # only sanitised text ever leaves the app
    if to_file:
        from llama_tui.session.export import export_name

        stem = export_name(chat.conversation, "")
        try:
            path = await asyncio.to_thread(write_copy_file, text, locations.save_dir(),
                                           f"{stem}-{name}")
        except OSError as e:
            chat.host.say(f"Could not write the file: {e}", severity="error")
            return
        chat.host.say(f"Wrote {what} to {path.absolute()}", timeout=10)
        return
    if os.environ.get("TMUX"):  # asks tmux a few questions: not on the UI thread
        outcome = await asyncio.to_thread(copy_text, text, what)
    else:
        outcome = copy_text(text, what)
    chat.host.write_clipboard(text, outcome.sequence)
    chat.host.say(outcome.message, severity="warning" if outcome.warning else "information",
                  timeout=15 if outcome.warning else 5)

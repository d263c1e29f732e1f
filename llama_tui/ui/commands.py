"""Slash commands: one table, from which dispatch, the palette and `/help` are derived.

A line that starts with `/` is a command and never reaches the model (`//text` sends
`/text`). Each row of `COMMANDS` names its handler (which owner acts: the App for the model,
settings and quitting; the chat screen for the conversation), its usage and help, the key
doing the same, and what the command palette does with it (commands that need an argument
open their dialog instead). Unknown commands get a message listing the known ones.
"""

from __future__ import annotations

import difflib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from llama_tui.text import clean

if TYPE_CHECKING:
    from llama_tui.ui.app import LlamaTuiApp

Handler = Callable[["LlamaTuiApp", str], Awaitable[None]]
PaletteAction = Callable[["LlamaTuiApp"], None]


# -- handlers: each names the owner that acts ----------------------------------------------


async def _help(app: LlamaTuiApp, arg: str) -> None:
    app.action_help()


async def _clear(app: LlamaTuiApp, arg: str) -> None:
    await app.chat.new_conversation()


async def _system(app: LlamaTuiApp, arg: str) -> None:
    await app.prefs.system_command(arg)


async def _set(app: LlamaTuiApp, arg: str) -> None:
    await app.prefs.set_command(arg)


async def _model(app: LlamaTuiApp, arg: str) -> None:
    app.model.command(arg)


async def _retry(app: LlamaTuiApp, arg: str) -> None:
    await app.chat.replies.retry()


async def _continue(app: LlamaTuiApp, arg: str) -> None:
    await app.chat.replies.continue_reply()


async def _edit(app: LlamaTuiApp, arg: str) -> None:
    if arg.strip().lower() == "reply":
        await app.chat.branches.edit_reply()
        return
    # Like Ctrl+T: asks first (the exchange leaves the active path).
    await app.chat.ask_edit_last()


async def _branch(app: LlamaTuiApp, arg: str) -> None:
    await app.chat.branches.command(arg)


async def _branches(app: LlamaTuiApp, arg: str) -> None:
    app.chat.branches.open_picker()


async def _save(app: LlamaTuiApp, arg: str) -> None:
    from llama_tui.ui.copy_save import save_command

    await save_command(app.chat, arg)


async def _copy(app: LlamaTuiApp, arg: str) -> None:
    from llama_tui.ui.copy_save import copy_command

    await copy_command(app.chat, arg)


async def _read(app: LlamaTuiApp, arg: str) -> None:
    await app.chat.attachments.command(arg)


async def _think(app: LlamaTuiApp, arg: str) -> None:
    await app.thinking.command(arg)


def _cycle_thinking(app: LlamaTuiApp) -> None:
    app.thinking.cycle()


async def _inspect(app: LlamaTuiApp, arg: str) -> None:
    from llama_tui.ui.inspect_control import open_inspector

    await open_inspector(app, arg)


async def _settings(app: LlamaTuiApp, arg: str) -> None:
    app.chat.toggle_settings()


async def _sessions(app: LlamaTuiApp, arg: str) -> None:
    app.chat.browse_sessions()


async def _memory(app: LlamaTuiApp, arg: str) -> None:
    await app.model.memory_command()


async def _quit(app: LlamaTuiApp, arg: str) -> None:
    await app.quit_now()


def _open_settings(app: LlamaTuiApp) -> None:
    app.chat.open_settings()


def _ask_to_quit(app: LlamaTuiApp) -> None:
    # Like Ctrl+Q: asks while a reply is being generated.
    app.call_later(app.run_action, "quit_app")


# -- the table ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SlashCommand:
    """One command: `/name`, its handler and how it is offered."""

    name: str
    usage: str
    help: str
    run: Handler
    key: str = ""  # the key binding doing the same, for /help
    palette: PaletteAction | None = None  # the palette's own action; None: `run` bare


COMMANDS: tuple[SlashCommand, ...] = (
    SlashCommand("help", "/help", "keys and commands", _help, "F1"),
    SlashCommand("clear", "/clear", "start a new conversation (the old one stays saved)",
                 _clear),
    SlashCommand("system", "/system TEXT", "set the system prompt; no text shows it", _system,
                 palette=_open_settings),
    SlashCommand("set", "/set KEY VALUE", "change a setting, e.g. /set temperature 0.2; "
                 "/set preset precise|balanced|creative; /set session: a resumed "
                 "session's settings", _set, palette=_open_settings),
    SlashCommand("model", "/model SPEC", "load another model (repo id, folder, .gguf, demo)",
                 _model, "F4"),
    SlashCommand("retry", "/retry", "generate the last reply again (the old one stays as "
                 "another version)", _retry, "Ctrl+R"),
    SlashCommand("continue", "/continue", "continue a stopped or cut-off reply", _continue,
                 "Ctrl+G"),
    SlashCommand("edit", "/edit [reply]", "put the last prompt back in the input to edit; "
                 "/edit reply: edit the model's last reply (Enter keeps it, Ctrl+G continues "
                 "from it)", _edit, "Ctrl+T"),
    SlashCommand("branch", "/branch prev|next", "switch the newest fork to its previous / "
                 "next version", _branch, "Alt+Left / Alt+Right"),
    SlashCommand("branches", "/branches", "the conversation's tree: pick a branch to make "
                 "active", _branches),
    SlashCommand("save", "/save [PATH]", "save as Markdown (.md) or JSON (.json); no PATH "
                 "asks where", _save, "Ctrl+S"),
    SlashCommand("copy", "/copy [N] [file]", "copy the last reply, or its code block N; "
                 "file: write it to a file instead", _copy, "Ctrl+Y"),
    SlashCommand("read", "/read PATH...", "attach text files (several paths or a glob) to "
                 "your next message; no PATH lists them; /read --clear drops them", _read),
    SlashCommand("think", "/think show|hide|fold", "show replies' thinking in full, hide it, "
                 "or fold it to one line (remembered); no word says which", _think, "F6",
                 palette=_cycle_thinking),
    SlashCommand("inspect", "/inspect [N]", "the token inspector: how sure the model was of "
                 "each token of reply N (default the last); Enter on an alternative "
                 "continues from it as a new branch", _inspect, "F8"),
    SlashCommand("settings", "/settings", "show or hide the settings panel", _settings, "F2"),
    SlashCommand("sessions", "/sessions", "browse, search and resume saved sessions",
                 _sessions, "F5"),
    SlashCommand("memory", "/memory", "memory in use, per GPU, and where the model sits",
                 _memory),
    SlashCommand("quit", "/quit", "quit (the conversation is journaled)", _quit, "Ctrl+Q",
                 palette=_ask_to_quit),
)
COMMAND_BY_NAME = {c.name: c for c in COMMANDS}


def parse_command(text: str) -> tuple[str, str] | None:
    """`/set top_p 0.9` -> ("set", "top_p 0.9"); None when `text` is a prompt."""
    stripped = text.strip()
    if not stripped.startswith("/") or stripped.startswith("//"):
        return None
    name, _, arg = stripped[1:].partition(" ")
    if "\n" in name:
        name, _, rest = name.partition("\n")
        arg = rest + (" " + arg if arg else "")
    return name.lower(), arg.strip()


def unescape_prompt(text: str) -> str:
    """`//etc/passwd?` is sent as `/etc/passwd?`."""
    stripped = text.lstrip()
    return stripped[1:] if stripped.startswith("//") else text


def suggestions(name: str) -> list[str]:
    """Commands the user may have meant by `/name`: those it is a prefix of (all of them,
    when several), else the closest spelling."""
    extended = [c.name for c in COMMANDS if c.name.startswith(name)] if name else []
    if extended:
        return extended
    return difflib.get_close_matches(name, list(COMMAND_BY_NAME), n=1)


def unknown_command_text(name: str) -> str:
    """A helpful message for `/name` that is not a command."""
    close = suggestions(name)
    if len(close) == 1:
        hint = f"Did you mean /{close[0]}? "
    elif close:
        *rest, last = ["/" + c for c in close]
        hint = f"Did you mean {', '.join(rest)} or {last}? "
    else:
        hint = ""
    listing = " ".join(f"/{c.name}" for c in COMMANDS)
    return (
        f"Unknown command /{name}. {hint}Nothing was sent to the model.\n"
        f"Commands: {listing}\n"
        "Start a message with // to send a line that begins with /."
    )


async def run_command(app: LlamaTuiApp, name: str, arg: str) -> None:
    """Run `/name arg`; an unknown name gets a note (nothing reaches the model)."""
    command = COMMAND_BY_NAME.get(name)
    if command is None:
        await app.chat.note(unknown_command_text(clean(name)), variant="warning")
        return
    await command.run(app, arg)


def run_from_palette(app: LlamaTuiApp, command: SlashCommand) -> None:
    """A palette entry: the row's palette action, else the command with no argument."""
    if command.palette is not None:
        command.palette(app)
        return
    app.run_worker(command.run(app, ""), group="palette", exit_on_error=False)


def help_lines() -> list[tuple[str, str, str]]:
    """(usage, key, help) rows for the help screen."""
    return [(c.usage, c.key, c.help) for c in COMMANDS]

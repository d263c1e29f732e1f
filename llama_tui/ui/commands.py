"""Slash commands and the same actions in Textual's command palette.

A line that starts with `/` is a command and never reaches the model (`//text` sends
`/text`). Unknown commands get a message listing the known ones. The palette provider offers
every command; those that need an argument open the matching dialog instead.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from textual.command import Provider


@dataclass(frozen=True)
class SlashCommand:
    name: str
    usage: str
    help: str
    key: str = ""  # the key binding doing the same, for /help


COMMANDS: tuple[SlashCommand, ...] = (
    SlashCommand("help", "/help", "keys and commands", "F1"),
    SlashCommand("clear", "/clear", "start a new conversation (the old one stays saved)"),
    SlashCommand("system", "/system TEXT", "set the system prompt; no text shows it"),
    SlashCommand("set", "/set KEY VALUE", "change a setting, e.g. /set temperature 0.2; "
                 "/set preset precise|balanced|creative; /set session: a resumed "
                 "session's settings"),
    SlashCommand("model", "/model SPEC", "load another model (repo id, folder, .gguf, demo)", "F4"),
    SlashCommand("retry", "/retry", "generate the last reply again", "Ctrl+R"),
    SlashCommand("continue", "/continue", "continue a stopped or cut-off reply", "Ctrl+G"),
    SlashCommand("edit", "/edit", "put the last prompt back in the input to edit", "Ctrl+T"),
    SlashCommand("save", "/save [PATH]", "save as Markdown (.md) or JSON (.json); no PATH "
                 "asks where", "Ctrl+S"),
    SlashCommand("copy", "/copy [N] [file]", "copy the last reply, or its code block N; "
                 "file: write it to a file instead", "Ctrl+Y"),
    SlashCommand("settings", "/settings", "show or hide the settings panel", "F2"),
    SlashCommand("sessions", "/sessions", "browse and resume saved sessions", "F5"),
    SlashCommand("memory", "/memory", "memory in use, per GPU, and where the model sits"),
    SlashCommand("quit", "/quit", "quit (the conversation is journaled)", "Ctrl+Q"),
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


def help_lines() -> list[tuple[str, str, str]]:
    """(usage, key, help) rows for the help screen."""
    return [(c.usage, c.key, c.help) for c in COMMANDS]


def palette_provider() -> type[Provider]:
    """`App.COMMANDS` entry: imported when the palette first opens (textual.command costs
    ~40 ms of startup otherwise)."""
    from llama_tui.ui.palette import ChatCommands

    return ChatCommands

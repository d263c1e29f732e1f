"""The command palette's chat entries (Ctrl+P): every slash command, by name and help."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Protocol, cast

from textual.command import DiscoveryHit, Hit, Hits, Provider

from llama_tui.ui.commands import COMMANDS


class CommandRunner(Protocol):
    """What the palette needs from the app."""

    def run_palette_command(self, name: str) -> None: ...


class ChatCommands(Provider):
    """Command-palette entries for every chat command."""

    def _runner(self) -> Callable[[str], None]:
        return cast("CommandRunner", self.app).run_palette_command

    async def discover(self) -> Hits:
        run = self._runner()
        for c in COMMANDS:
            yield DiscoveryHit(c.usage, partial(run, c.name), help=c.help)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        run = self._runner()
        for c in COMMANDS:
            text = f"{c.usage} {c.help}"
            score = matcher.match(text)
            if score > 0:
                yield Hit(score, matcher.highlight(text), partial(run, c.name), help=c.help)


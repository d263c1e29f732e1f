"""The command palette (Ctrl+P): every slash command by name and help, and the theme picker.

It is the app's only palette provider: Textual's generic entries are left out (its Quit
would exit mid-reply without asking; its Keys panel and Screenshot duplicate or clutter
F1), and our Quit goes through the same confirmation as Ctrl+Q.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from typing import TYPE_CHECKING, cast

from textual.command import DiscoveryHit, Hit, Hits, Provider

from llama_tui.ui.commands import COMMANDS, run_from_palette

if TYPE_CHECKING:
    from llama_tui.ui.app import LlamaTuiApp


class ChatCommands(Provider):
    """Command-palette entries: the chat commands (from the command table) and "Theme"."""

    def _entries(self) -> Iterator[tuple[str, str, Callable[[], object]]]:
        """(shown name, help, callback) for each entry."""
        app = cast("LlamaTuiApp", self.app)
        for c in COMMANDS:
            yield c.usage, c.help, partial(run_from_palette, app, c)
        yield "Theme", "change the colour theme", app.action_change_theme

    async def discover(self) -> Hits:
        for name, help_text, callback in self._entries():
            yield DiscoveryHit(name, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, help_text, callback in self._entries():
            # Matched on name and help; the help is shown once, on its own line.
            score = max(matcher.match(name), matcher.match(f"{name} {help_text}") * 0.5)
            if score > 0:
                yield Hit(score, matcher.highlight(name), callback, help=help_text)

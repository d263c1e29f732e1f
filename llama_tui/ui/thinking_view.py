"""How replies' thinking is shown: fold (default), show or hide, and remembering the choice.

One choice for the whole transcript (`widgets/thinking.py` styles every thought from a class
on the chat screen). F6 goes fold -> show -> hide -> fold; `/think show|hide|fold` picks one
(`/think` alone says which is in use). The choice is written to ``remembered.json`` as the
panel's settings are (`config.remembered`, key ``thinking``, with the config.toml value it
overrides: a later edit of config.toml wins), so the next launch starts with it;
config.toml's ``thinking`` or ``LLAMA_TUI_THINKING`` give the default.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from llama_tui.core.thinking import THINKING_VIEWS
from llama_tui.ui.widgets.thinking import ThinkingBlock, set_view

if TYPE_CHECKING:
    from llama_tui.ui.app import LlamaTuiApp

__all__ = ["THINK_KEY", "ThinkingView"]

log = logging.getLogger(__name__)

THINK_KEY = "F6"  # a function key: tmux, screen and SSH pass it through unchanged
_WHAT = {"fold": "folded to one line", "show": "shown in full", "hide": "hidden"}
_USAGE = "/think show|hide|fold"


class ThinkingView:
    """The view of thoughts in use, applied to the chat screen and remembered."""

    def __init__(self, app: LlamaTuiApp) -> None:
        self.app = app
        chosen = app.loaded.settings.thinking
        self.view = chosen if chosen in THINKING_VIEWS else "fold"
        set_view(app.chat, self.view)

    def cycle(self) -> None:
        """The key: fold -> show -> hide -> fold."""
        following = THINKING_VIEWS[(THINKING_VIEWS.index(self.view) + 1) % len(THINKING_VIEWS)]
        self.choose(following)

    async def command(self, arg: str) -> None:
        """`/think show|hide|fold`; bare, which view is in use."""
        word = arg.strip().lower()
        if not word:
            self.app.say(f"Thinking is {_WHAT[self.view]}. {_USAGE} or {THINK_KEY} changes it.")
            return
        if word not in THINKING_VIEWS:
            await self.app.chat.note(
                f"/think: unknown view {word!r}; use {_USAGE}.", variant="warning"
            )
            return
        self.choose(word)

    def choose(self, view: str) -> None:
        """Use `view` now and remember it for the next launch."""
        self.view = view
        set_view(self.app.chat, view)
        for block in self.app.chat.query(ThinkingBlock):
            block.show_text()  # a thought streaming while folded was not rendered
        self.app.say(f"Thinking {_WHAT[view]} ({THINK_KEY} or {_USAGE}).")
        self._remember(view)

    def _remember(self, view: str) -> None:
        """Like the panel's settings: the config.toml value it overrides is recorded (an edit
        of config.toml afterwards wins), and going back to that value forgets it."""
        from llama_tui.config.remembered import base_entry, update_remembered
        from llama_tui.config.settings import config_file_values

        try:
            files = config_file_values(self.app.loaded.config_path)
            below = files.get("thinking", "fold")
            entry = None if view == below else base_entry("thinking", view, files)
            update_remembered({"thinking": entry}, files)
        except (OSError, ValueError) as e:
            log.warning("could not remember the thinking view: %s", e)
            self.app.say(f"Could not remember the thinking view: {e}", severity="warning")

"""Keys chosen to survive tmux, screen and terminals: edit-last, transcript scrolling, quit.

Every binding was checked against what multiplexers and terminals take by default (README's
keys section has the table): Ctrl+B is tmux's prefix and Ctrl+A screen's, so edit-last is
Ctrl+T, and it asks before it removes the last exchange. PgUp / PgDn and Ctrl+Home /
Ctrl+End scroll the transcript while the prompt has focus (the prompt passes PgUp / PgDn
on); Shift+PgUp and Ctrl+PgUp are left alone, many terminals keep them for themselves.
Terminal input itself is read with the mended parser of `terminal_input`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from textual.actions import SkipAction
from textual.binding import Binding, BindingType

from llama_tui.ui.chat_control import ChatControl
from llama_tui.ui.screens.confirm import ConfirmScreen

if TYPE_CHECKING:
    from textual.driver import Driver

EDIT_QUESTION = (
    "Edit the last prompt? It goes back into the input, and the last exchange "
    "(that prompt and its reply) is removed from the conversation."
)


class KeyControl(ChatControl):
    """Edit-last with confirmation, transcript scrolling from the prompt, a quit that asks."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+t", "edit_last", "Edit last prompt", show=False, priority=True),
        # Not priority: a focused list or dialog keeps its own PgUp; the prompt passes it on.
        Binding("pageup", "scroll_transcript('page_up')", "Scroll up", show=False),
        Binding("pagedown", "scroll_transcript('page_down')", "Scroll down", show=False),
        Binding("ctrl+home", "scroll_transcript('home')", "Scroll to top", show=False),
        Binding("ctrl+end", "scroll_transcript('end')", "Scroll to bottom", show=False),
    ]

    def get_driver_class(self) -> type[Driver]:
        """Textual's driver, reading keys with the mended parser (`terminal_input`)."""
        from llama_tui.ui.terminal_input import input_driver

        return input_driver(super().get_driver_class())

    async def action_edit_last(self) -> None:
        """Ctrl+T: put the last prompt back in the input, once the user agrees to drop it."""
        if self.generating or not any(m.role == "user" for m in self.conversation.messages):
            await self.edit_last()  # says why there is nothing to edit now
            return

        def answer(yes: bool | None) -> None:
            if yes:
                if self.prompt.text.strip():  # an unsent draft stays reachable with Up
                    self.prompt.remember(self.prompt.text)
                self.run_worker(self.edit_last(), exit_on_error=False)

        self.push_screen(ConfirmScreen(EDIT_QUESTION, yes="Edit", no="Keep", kind="-edit"), answer)

    def action_scroll_transcript(self, where: str) -> None:
        """PgUp / PgDn / Ctrl+Home / Ctrl+End scroll the conversation while typing."""
        if self.screen is not self.screen_stack[0]:
            raise SkipAction()  # a dialog is open: the key is not for the transcript
        t = self.transcript
        if where == "page_up":
            t.scroll_page_up(animate=False)
        elif where == "page_down":
            t.scroll_page_down(animate=False)
        elif where == "home":
            t.scroll_home(animate=False)
        else:
            t.scroll_end(animate=False)

    async def action_quit(self) -> None:
        """Textual's own quit action (any route to it) asks during a reply, like Ctrl+Q."""
        await self.run_action("quit_app")

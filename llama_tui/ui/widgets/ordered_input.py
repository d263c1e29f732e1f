"""Text fields that apply editing keys in the order they arrive (Textualize/textual#6605).

In Textual 8 a text widget inserts a printable key at once, in its own `_on_key`, but the
editing keys (Backspace, Delete, arrows, Home / End, Ctrl+W, ...) are its BINDINGS, and
bindings only run once the key has bubbled from the widget through every ancestor's message
queue back to the App (`App._on_key` -> `_check_bindings`). Keys and pastes that arrive
together (a paste after a Backspace, a fast burst, typing over a laggy link) are all
forwarded to the widget before that trip ends, so a Backspace lands after the characters
typed after it: "abc", Backspace, "X" gives "abc" instead of "abX", and Backspace before a
paste eats the paste's end. The bytes and our parser's events are in order; only this trip
reorders them.

`KeyOrder` runs the widget's own non-priority bindings inline, where the key is handled, the
way the App would (same keymap, same `run_action`), and stops the key so the App does not
run it again. Keys bound only on ancestors (Tab to move focus, the app's shortcuts) still
take the long way. The fix upstream (textual PR #6631, open) does the same inside Textual;
drop this when it ships.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual import events
from textual.widget import Widget
from textual.widgets import Input, TextArea

# A plain mixin at run time: Textual takes a widget's CSS (type names, DEFAULT_CSS, component
# classes) from its first DOMNode base, which must stay the Textual widget. Type checkers see
# a Widget so that `super().handle_key` and the widget's attributes are checked.
if TYPE_CHECKING:
    _MixinBase = Widget
else:
    _MixinBase = object


class KeyOrder(_MixinBase):
    """Mixin (put it before the Textual widget class): own bindings run in key order."""

    async def handle_key(self, event: events.Key) -> bool:
        # Reached after every `_on_key` in the class chain, unless one of them took the key
        # (prevent_default): a printable key was inserted, or a subclass used it.
        if await super().handle_key(event):
            return True
        if self.loading:  # the App's binding chain skips a loading widget too
            return False
        bindings = self._bindings.copy()
        if self.app._keymap:
            bindings.apply_keymap(self.app._keymap)  # clashes: the App reports those
        for binding in bindings.key_to_bindings.get(event.key, ()):
            if not binding.priority and await self.app.run_action(binding.action, self):
                event.stop()
                return True
        return False


class OrderedInput(KeyOrder, Input):
    """Textual's `Input` with editing keys applied in order."""


class OrderedTextArea(KeyOrder, TextArea):
    """Textual's `TextArea` with editing keys applied in order."""

"""Stop strings over streamed text, for the local and the remote backend alike.

`StopFilter` takes the text of a reply in pieces and passes on what may be shown: everything
up to the first stop string, never the string itself. The end of the text that could still
grow into a stop string is held back until it cannot, or until `flush()`.

It also keeps a reply from ending in U+FFFD. A reply cut by the token limit inside a
multi-byte character ends in that character's bytes decoded as U+FFFD (a server sends them so
in its last chunk; a local decode of the last ids gives the same). A trailing run of U+FFFD is
held until more text follows (then it was really in the reply) and dropped by `flush()`: at
the end, an incomplete character cannot be told from bytes the model got wrong, and neither
is text worth showing or saving.
"""

from __future__ import annotations

from collections.abc import Iterable

REPLACEMENT = "\ufffd"


class StopFilter:
    """Emit streamed text up to the first stop string; hold back what may still become one."""

    def __init__(self, stops: Iterable[str] = ()) -> None:
        # An empty stop string would match at once and stop every reply before it starts.
        self._stops = tuple(s for s in stops if s)
        self._held = ""
        self.stopped = False

    def push(self, text: str) -> str:
        """Add the next piece; return the text that is safe to show now (may be empty)."""
        if self.stopped or not text:
            return ""
        buf = self._held + text
        hits = [i for i in (buf.find(s) for s in self._stops) if i >= 0]
        if hits:
            self.stopped = True
            self._held = ""
            return buf[: min(hits)]
        keep = max(len(buf) - len(buf.rstrip(REPLACEMENT)), _stop_prefix_len(buf, self._stops))
        self._held = buf[len(buf) - keep :]
        return buf[: len(buf) - keep]

    def flush(self) -> str:
        """The end of the reply: what was held back, without a trailing U+FFFD."""
        held, self._held = self._held, ""
        return "" if self.stopped else held.rstrip(REPLACEMENT)


def _stop_prefix_len(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest end of `text` that is a proper prefix of some stop string."""
    if not stops:
        return 0
    longest = min(len(text), max(len(s) for s in stops) - 1)
    for k in range(longest, 0, -1):
        tail = text[-k:]
        if any(s.startswith(tail) for s in stops):
            return k
    return 0

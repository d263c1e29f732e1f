"""Reading the terminal: Textual's xterm parser, mended for two things real terminals send.

1. Alt+Enter. Terminals and tmux send it as ESC CR. Textual 8's parser finds no key for the
   two-character sequence and re-issues it one character at a time with an "alt" flag, but
   CR maps to the ready-made `enter` key, which ignores the flag: Alt+Enter arrives as plain
   Enter and sends the message. `InputParser` names the sequence `alt+enter`.

2. Escape sequences inside a bracketed paste. Text copied from a coloured terminal carries
   them. Textual's parser, inside a paste, treats everything after such an ESC as a key
   sequence it cannot finish: those characters come out as separate key presses (a BEL as
   Ctrl+G, which continues the reply), before the `Paste` event that holds the rest, so the
   text is reordered. `InputParser` cleans the paste's text before Textual's parser sees
   it (`llama_tui.text.PasteCleaner`: sequences and controls removed in place, CR line ends
   made ``\\n``), so the only ESC inside a paste is the one that closes it.

`InputDriver` is Textual's `LinuxDriver` reading with `InputParser`; `input_driver` swaps
it in for the stock Linux / macOS driver and leaves any other driver as it is.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import sys
from codecs import getincrementaldecoder
from collections.abc import Iterable, Iterator

from textual import events
from textual._loop import loop_last
from textual._parser import ParseError
from textual._xterm_parser import XTermParser
from textual.driver import Driver
from textual.message import Message

PASTE_START = "\x1b[200~"
PASTE_END = "\x1b[201~"
ALT_ENTER = "\x1b\r"


class InputParser(XTermParser):
    """Textual's parser, with Alt+Enter named and each bracketed paste cleaned first."""

    def __init__(self, debug: bool = False) -> None:
        from llama_tui.text import PasteCleaner

        super().__init__(debug)
        self._in_paste = False
        self._seen = ""  # outside a paste: the last characters passed on (a split start marker)
        self._held = ""  # inside a paste: a tail that may be the start of the end marker
        self._paste = PasteCleaner()

    def feed(self, data: str) -> Iterable[Message]:
        if not data:  # end of input
            return super().feed(data)
        return self._feed(data)

    def _feed(self, data: str) -> Iterator[Message]:
        while data:
            if not self._in_paste:
                text = self._seen + data
                at = text.find(PASTE_START)
                if at < 0:
                    self._seen = text[-(len(PASTE_START) - 1):]
                    yield from super().feed(data)
                    return
                end = at + len(PASTE_START) - len(self._seen)  # just after the marker, in data
                yield from super().feed(data[:end])
                data, self._seen, self._in_paste = data[end:], "", True
            else:
                text = self._held + data
                at = text.find(PASTE_END)
                if at < 0:
                    keep = _marker_prefix_len(text, PASTE_END)
                    self._held = text[len(text) - keep:]
                    yield from self._pass(self._paste.feed(text[: len(text) - keep]))
                    return
                body = self._paste.feed(text[:at]) + self._paste.flush()
                yield from super().feed(body + PASTE_END)
                data, self._held, self._in_paste = text[at + len(PASTE_END):], "", False

    def _pass(self, text: str) -> Iterable[Message]:
        # An empty string would tell Textual's parser that the input has ended.
        return super().feed(text) if text else ()

    def _sequence_to_key_events(self, sequence: str, alt: bool = False) -> Iterable[events.Key]:
        if sequence == ALT_ENTER:
            return [events.Key("alt+enter", None)]
        return super()._sequence_to_key_events(sequence, alt)


def _marker_prefix_len(text: str, marker: str) -> int:
    """Length of the longest end of `text` that begins `marker` (it may finish next read)."""
    for n in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:n]):
            return n
    return 0


if sys.platform != "win32":
    from textual.drivers.linux_driver import LinuxDriver

    class InputDriver(LinuxDriver):
        """`LinuxDriver` whose input thread parses with `InputParser`."""

        def run_input_thread(self) -> None:
            # LinuxDriver.run_input_thread as of Textual 8.2.8, with InputParser.
            selector = selectors.SelectSelector()
            selector.register(self.fileno, selectors.EVENT_READ)
            parser = InputParser(self._debug)
            decode = getincrementaldecoder("utf-8")().decode

            def process(ready: list[tuple[selectors.SelectorKey, int]], final: bool) -> None:
                for last, (_key, mask) in loop_last(ready):
                    if mask & selectors.EVENT_READ:
                        data = decode(os.read(self.fileno, 4096), final=final and last)
                        if not data:
                            break
                        for event in parser.feed(data):
                            self.process_message(event)
                for event in parser.tick():
                    self.process_message(event)

            try:
                while not self.exit_event.is_set():
                    process(selector.select(0.1), False)
                selector.unregister(self.fileno)
                process(selector.select(0.1), True)
            finally:
                selector.close()
                with contextlib.suppress(EOFError, ParseError):
                    for _event in parser.feed(""):
                        pass


def input_driver(driver: type[Driver]) -> type[Driver]:
    """`InputDriver` in place of Textual's stock Linux / macOS driver; any other unchanged."""
    if sys.platform != "win32" and driver is LinuxDriver:
        return InputDriver
    return driver

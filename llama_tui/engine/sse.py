"""An incremental parser for server-sent events (the `text/event-stream` format).

OpenAI-compatible servers stream chat completions as SSE: `data: {json}` lines, a blank line
after each event, `: keep-alive` comments, and a final `data: [DONE]`. Bytes arrive in
arbitrary pieces (a read can end mid-line, mid-CRLF or inside a multi-byte UTF-8 character),
so the parser keeps state between `feed()` calls and returns only complete events.

It follows the WHATWG rules that matter for chat servers: lines end with CRLF, LF or CR;
one space after the colon is stripped; several `data:` lines join with "\\n"; a line with no
colon is a field with an empty value; unknown fields are ignored; an event is dispatched at a
blank line, and an unterminated event at the end of the stream is dropped (it may be cut off).
Pure Python, no I/O: unit tests drive it byte by byte.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

# A line longer than this without a newline is not a chat stream: fail instead of buffering
# a misbehaving server's output without bound.
MAX_LINE_CHARS = 8 * 1024 * 1024


class SSEError(ValueError):
    """The byte stream is not valid server-sent events (for example, a runaway line)."""


@dataclass(frozen=True)
class SSEEvent:
    """One dispatched event. `data` is the joined `data:` lines (no trailing newline)."""

    data: str
    event: str = "message"
    id: str | None = None
    retry_ms: int | None = None


class SSEParser:
    """Feed bytes in; get complete events out. One parser per response stream."""

    def __init__(self, max_line_chars: int = MAX_LINE_CHARS) -> None:
        # errors="replace": the SSE spec decodes with replacement rather than failing, and a
        # bad byte in one token must not lose the rest of the reply.
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""
        self._max_line_chars = max_line_chars
        self._data: list[str] = []
        self._event = ""
        self._id: str | None = None
        self._retry: int | None = None
        self._skip_lf = False  # the previous piece ended with CR: a leading LF belongs to it
        self._first_line = True

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Parse one piece of the body; return the events it completed (maybe none)."""
        return self._consume(self._decoder.decode(chunk))

    def close(self) -> list[SSEEvent]:
        """End of stream: flush the decoder. An event without its blank line is dropped."""
        events = self._consume(self._decoder.decode(b"", final=True))
        # A final line without a line ending still counts as a line (it may complete fields
        # of an event that is then dropped, which is the spec's behaviour for a cut stream).
        if self._buffer:
            self._process_line(self._buffer, events)
            self._buffer = ""
        self._reset_event()
        return events

    @property
    def pending(self) -> bool:
        """True when part of an event has been read but not dispatched yet."""
        return bool(self._buffer) or bool(self._data)

    def _consume(self, text: str) -> list[SSEEvent]:
        events: list[SSEEvent] = []
        if not text:
            return events
        if self._skip_lf:
            self._skip_lf = False
            if text.startswith("\n"):
                text = text[1:]
        buf = self._buffer + text
        start = 0
        n = len(buf)
        while start < n:
            cr = buf.find("\r", start)
            lf = buf.find("\n", start)
            if cr < 0 and lf < 0:
                break
            end = lf if cr < 0 else cr if lf < 0 else min(cr, lf)
            line = buf[start:end]
            if buf[end] == "\r":
                if end + 1 < n:
                    start = end + 2 if buf[end + 1] == "\n" else end + 1
                else:
                    # CR at the very end: the LF of a CRLF may arrive in the next read.
                    self._skip_lf = True
                    start = end + 1
            else:
                start = end + 1
            self._process_line(line, events)
        self._buffer = buf[start:]
        if len(self._buffer) > self._max_line_chars:
            raise SSEError(f"an event-stream line exceeded {self._max_line_chars} characters")
        return events

    def _process_line(self, line: str, events: list[SSEEvent]) -> None:
        if self._first_line:
            self._first_line = False
            # The spec allows (and ignores) a byte-order mark before the first line.
            line = line.removeprefix("\ufeff")
        if line == "":
            # Per the spec only `data:` lines make an event; `event:` alone is discarded.
            if self._data:
                events.append(
                    SSEEvent(
                        data="\n".join(self._data),
                        event=self._event or "message",
                        id=self._id,
                        retry_ms=self._retry,
                    )
                )
            self._reset_event()
            return
        if line.startswith(":"):
            return  # a comment: servers send these as keep-alives
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self._id = value
        elif name == "retry" and value.isdigit():
            self._retry = int(value)
        # Any other field name is ignored, as the spec requires.

    def _reset_event(self) -> None:
        self._data = []
        self._event = ""

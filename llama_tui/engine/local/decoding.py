"""Token ids to text while they stream: whole characters only, stop strings applied.

Runs on the hot path of generation (once per batch of ids), so each step decodes a few ids of
a sliding window, never the whole reply.
"""

from __future__ import annotations

from collections.abc import Callable

from llama_tui.engine.stops import REPLACEMENT, StopFilter

# Prompt ids decoded in front of the reply so that SentencePiece-style decoders keep the reply's
# leading space ("Once upon a time" + " there"), which they strip at the start of a decode.
CONTEXT_IDS = 4
# Ids before the window are dropped once there are this many: they are never decoded again.
TRIM_AFTER_IDS = 64


class IncrementalDecoder:
    """Turns a growing list of token ids into text chunks that are whole characters.

    Offset-based decode of a sliding window (the approach vLLM uses): decode `ids[prefix:]` and
    `ids[prefix:read]`, emit the difference, and advance only when the new text does not end in
    U+FFFD, i.e. when no multi-byte character is still incomplete. A 10k-token reply costs the
    same per token as a short one.

    Stop strings and the end of the reply go through `StopFilter`, the rule the remote backend
    uses too: the stop string is never emitted, and the reply never ends in U+FFFD.
    """

    def __init__(
        self,
        decode: Callable[[list[int]], str],
        context_ids: list[int],
        stop: tuple[str, ...] = (),
    ) -> None:
        self._decode = decode
        self._ids: list[int] = list(context_ids[-CONTEXT_IDS:])
        self._prefix = 0
        self._read = len(self._ids)
        self._prefix_text: str | None = None
        self._filter = StopFilter(stop)
        self.text_parts: list[str] = []  # everything emitted, for the final reply text

    @property
    def stopped(self) -> bool:
        """A stop string was seen: nothing more is emitted."""
        return self._filter.stopped

    def _window_texts(self) -> tuple[str, str]:
        if self._prefix_text is None:
            self._prefix_text = self._decode(self._ids[self._prefix : self._read])
        return self._prefix_text, self._decode(self._ids[self._prefix :])

    def push(self, ids: list[int]) -> str:
        """Add new token ids; return the text that is safe to show now (may be empty)."""
        if self.stopped:
            return ""
        self._ids.extend(ids)
        prefix_text, new_text = self._window_texts()
        if len(new_text) <= len(prefix_text) or new_text.endswith(REPLACEMENT):
            return ""  # an incomplete character (or nothing visible yet): wait for more ids
        delta = new_text[len(prefix_text) :]
        self._prefix, self._read = self._read, len(self._ids)
        self._prefix_text = None
        if self._prefix > TRIM_AFTER_IDS:
            del self._ids[: self._prefix]
            self._read -= self._prefix
            self._prefix = 0
        return self._emit(self._filter.push(delta))

    def flush(self) -> str:
        """The end of generation: emit whatever is left, except a trailing U+FFFD."""
        if self.stopped:
            return ""
        prefix_text, new_text = self._window_texts()
        delta = new_text[len(prefix_text) :] if len(new_text) > len(prefix_text) else ""
        self._prefix = self._read = len(self._ids)
        self._prefix_text = None
        return self._emit(self._filter.push(delta) + self._filter.flush())

    def _emit(self, out: str) -> str:
        if out:
            self.text_parts.append(out)
        return out

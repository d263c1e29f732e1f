"""The status bar's context meter: how many tokens the conversation takes, in bounded time.

Counting a whole history is templating plus tokenizing all of it: 0.5 s for 2,000 messages
(81k tokens) of the demo model on 2 cores, on every refresh of the meter, holding the model
lock that the next reply waits for. What the meter must show exactly is the part that can
still fit the context: `used_tokens` counts exactly (`Backend.count_tokens`) the system
message and the newest messages whose text could make up the context window, and adds the
older messages at the counted part's tokens per character. A history that fits is counted
whole, exactly as before; a longer one costs one context's worth of tokenizing, however long
it grows, and its figure (far above the window anyway) is exact up to that estimate.
"""

from __future__ import annotations

from collections.abc import Sequence

from llama_tui.core.backend import Backend, ChatMessage

__all__ = ["CHARS_PER_TOKEN_BOUND", "used_tokens"]

# No tokenizer we ship packs more characters than this into one token on average, so
# `context_max * CHARS_PER_TOKEN_BOUND` characters of messages cover the whole window.
CHARS_PER_TOKEN_BOUND = 8


def used_tokens(backend: Backend, history: Sequence[ChatMessage], context_max: int | None) -> int:
    """Tokens `history` takes as the model's prompt (see the module docstring)."""
    start = _tail_start(history, context_max)
    if start is None:
        return backend.count_tokens(history)
    head = list(history[:1]) if history[0].role == "system" else []
    tail = history[start:]
    counted = backend.count_tokens([*head, *tail])
    tail_chars = sum(_chars(m) for m in tail)
    older_chars = sum(_chars(m) for m in history[len(head) : start])
    return counted + round(older_chars * counted / max(tail_chars, 1))


def _tail_start(history: Sequence[ChatMessage], context_max: int | None) -> int | None:
    """Where the counted tail begins (a user message, as chat templates want), or None when
    the whole history is to be counted."""
    if not context_max or len(history) < 4:
        return None
    budget = context_max * CHARS_PER_TOKEN_BOUND
    first = 1 if history[0].role == "system" else 0
    start, chars = len(history), 0
    while start > first and chars <= budget:
        start -= 1
        chars += _chars(history[start])
    while start < len(history) and history[start].role != "user":
        start += 1
    if start <= first or start >= len(history):
        return None
    return start


def _chars(m: ChatMessage) -> int:
    return len(m.content) + len(getattr(m, "reasoning", None) or "")

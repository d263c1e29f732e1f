"""A reply's per-token logprobs on their way into its message, and the figures shown of them.

The backend appends `core.tokens.TokenLog` records to its `Generation` while the reply
streams; `stream_reply` hands the log over in the request's `TokenSlot`, and `ReplyRun`
files it into the message (`Message.tokens`, compact) when the reply ends, cut to the text
the message kept (a stop string, a stopped reply) and after the earlier part of a continued
reply. No UI here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llama_tui.core.tokens import TokenLog, compact_summary, load_compact, merge, to_compact

if TYPE_CHECKING:
    from llama_tui.session.transcript import Message

__all__ = ["TokenSlot", "confidence_text", "message_tokens", "reply_tokens"]


class TokenSlot:
    """Where the worker leaves the generation's token log for the owner's thread."""

    def __init__(self) -> None:
        self.log: TokenLog | None = None


def reply_tokens(
    earlier: dict[str, Any] | None, log: TokenLog | None, msg: Message, prefix_chars: int
) -> dict[str, Any] | None:
    """The compact token log `msg` keeps: `earlier` (a continued reply's first part), then
    `log` cut to the text this part added. A reply with a thought keeps every token (its
    text holds the thought's markers, which the message does not)."""
    if log is None:
        return earlier
    if not getattr(msg, "thinking", ""):
        log = log.cut_to(msg.content[prefix_chars:])
    merged = merge(load_compact(earlier), log)
    if merged is None or (not merged.tokens and merged.unavailable is None):
        return earlier
    return to_compact(merged)


def message_tokens(msg: Message) -> TokenLog | None:
    """The token log a message holds, or None (none recorded, or damaged)."""
    return load_compact(msg.tokens)


def confidence_text(stored: dict[str, Any] | None) -> str:
    """``p mean 81% min 4%`` for the footer of a reply holding `stored` (its compact token
    log); "" without numbers."""
    summary = compact_summary(stored)
    if summary is None:
        return ""
    mean, low = summary
    return f"p mean {_pct(mean)} min {_pct(low)}"


def _pct(p: float) -> str:
    return f"{p * 100:.0f}%" if p >= 0.01 else f"{p * 100:.1f}%"

"""The line under a finished reply: its speed, or why it ended (stopped, cut off, error).

One function for a reply that just finished and for one shown again from a saved session.
Plain text, never markup (an error's cause can hold model or server text).
"""

from __future__ import annotations

from typing import Literal

from llama_tui.core.backend import GenerationStats, StopReason
from llama_tui.session.transcript import Message, MessageStatus

__all__ = ["CONTINUE_HINT", "FooterVariant", "assisted_note", "footer_for", "message_footer"]

CONTINUE_HINT = "Ctrl+G or /continue to go on"

FooterVariant = Literal["ok", "stopped", "length", "error"]


def assisted_note(stats: GenerationStats | None) -> str:
    """"prompt lookup 2.4 tok/step": how a reply was assisted (engine/local/assisted.py) and
    the tokens its main model accepted per step (1.0: no guess was right); "" when not."""
    if stats is None or not stats.assisted:
        return ""
    if not stats.assisted_steps:
        return stats.assisted
    part = stats.generated_tokens - stats.earlier_tokens  # the steps are the last part's
    return f"{stats.assisted} {part / stats.assisted_steps:.1f} tok/step"


def _speed(stats: GenerationStats | None) -> str:
    if stats is None or not stats.generated_tokens:
        return ""
    n = stats.generated_tokens
    speed = f"{n} token{'s' if n != 1 else ''}"
    if stats.thinking_tokens:  # a thinking model: how much of it was thought
        thought = min(stats.thinking_tokens, n)
        speed += f" ({thought} thinking, {n - thought} answer)"
    if stats.decode_tokens_per_s:
        speed += f" · {stats.decode_tokens_per_s:.1f} tok/s"
        if stats.earlier_tokens:  # continued: the speed is the last part's only
            speed += f" for the last {n - stats.earlier_tokens}"
        if stats.assisted:
            speed += f" · {assisted_note(stats)}"
    if stats.ttft_s is not None and stats.prompt_tokens:
        # Prefill apart from decode: with KV reuse only the new part of the prompt runs.
        fresh = max(0, stats.prompt_tokens - stats.reused_prompt_tokens)
        cached = f", {stats.reused_prompt_tokens} cached" if stats.reused_prompt_tokens else ""
        speed += f" · prompt {fresh} new{cached}, first token {stats.ttft_s:.2f} s"
    return speed


def footer_for(
    status: MessageStatus,
    stats: GenerationStats | None,
    cause: str | None = None,
    fix: str = "",
    *,
    interrupted: bool = False,
    confidence: str = "",
) -> tuple[str, FooterVariant]:
    """(footer text, variant) under a reply that ended with `status`.

    `interrupted`: a stopped reply that was being written when the app ended (restored
    from the journal). `confidence`: its mean and minimum token probability
    (`chat.tokens.confidence_text`), shown after the speed."""
    speed = _speed(stats)
    if speed and confidence:
        speed += f" · {confidence}"
    if status == "error":
        return f"✗ error: {cause or 'generation failed'}" + (f"\n{fix}" if fix else ""), "error"
    if status == "stopped":
        why = "■ interrupted (the app ended)" if interrupted else "■ stopped"
        return why + (f" · {speed}" if speed else "") + f" · {CONTINUE_HINT}", "stopped"
    if stats is not None and stats.stop_reason == StopReason.LENGTH:
        return f"… cut off at the length limit · {speed} · {CONTINUE_HINT}", "length"
    return speed, "ok"


def message_footer(msg: Message) -> tuple[str, FooterVariant]:
    """The footer of a reply shown again (a resumed or opened session). A stopped one
    shows no figures: what matters when reading it back is that it can be continued."""
    # chat.tokens is imported with the first reply shown, not before the TUI's first paint.
    from llama_tui.chat.tokens import confidence_text

    status: MessageStatus = "complete" if msg.status == "streaming" else msg.status
    stats = None if status == "stopped" else GenerationStats.from_dict(msg.stats)
    return footer_for(status, stats, msg.error, interrupted=msg.interrupted,
                      confidence=confidence_text(msg.tokens))

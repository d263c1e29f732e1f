"""A reply with a hand-written token log, for the inspector's UI tests (the numbers from the
engine are tested in tests/engine/test_logprobs.py)."""

from __future__ import annotations

import math

from llama_tui.core.tokens import TokenChoice, TokenLog, TokenLogprob, to_compact
from llama_tui.session.transcript import Conversation

# (text, probability, [(alternative, probability), ...]): the chosen one is listed first
# where it was the most likely.
STEPS: list[tuple[str, float, list[tuple[str, float]]]] = [
    ("The", 0.92, [("The", 0.92), ("Paris", 0.05), ("It", 0.02)]),
    (" capital", 0.81, [(" capital", 0.81), (" city", 0.11), (" answer", 0.04)]),
    (" of", 0.99, [(" of", 0.99), (" is", 0.005), (",", 0.002)]),
    (" France", 0.97, [(" France", 0.97), (" french", 0.01), (" the", 0.01)]),
    (" is", 0.95, [(" is", 0.95), (",", 0.03), (" has", 0.01)]),
    (" Paris", 0.43, [(" Paris", 0.43), (" Lyon", 0.31), (" Marseille", 0.12)]),
    (".", 0.66, [(".", 0.66), (",", 0.22), ("!", 0.05)]),
    ("\n", 0.35, [("\n", 0.35), (" It", 0.33), ("<", 0.1)]),
    ("It", 0.61, [("It", 0.61), ("The", 0.2), ("Paris", 0.1)]),
    (" is", 0.7, [(" is", 0.7), (" has", 0.2), (" was", 0.05)]),
    (" famous", 0.04, [(" known", 0.52), (" home", 0.21), (" a", 0.11)]),
    (" for", 0.93, [(" for", 0.93), (" as", 0.05), (" by", 0.01)]),
    (" the", 0.88, [(" the", 0.88), (" its", 0.08), (" art", 0.01)]),
    (" Eiffel", 0.74, [(" Eiffel", 0.74), (" Louvre", 0.15), (" food", 0.03)]),
    (" Tower", 0.98, [(" Tower", 0.98), (" tower", 0.015), ("Tower", 0.001)]),
    (".", 0.9, [(".", 0.9), (" and", 0.08), (",", 0.01)]),
    ("", 0.85, [("", 0.85), ("\n", 0.1), (" It", 0.02)]),
]
REPLY = "".join(text for text, _, _ in STEPS)


def token_log() -> TokenLog:
    ids = {}
    tokens = []
    for text, p, alts in STEPS:
        top = tuple(TokenChoice(ids.setdefault(a, len(ids) + 10), a, math.log(q)) for a, q in alts)
        tokens.append(TokenLogprob(ids.setdefault(text, len(ids) + 10), text, math.log(p), top))
    return TokenLog(3, "generate", tokens)


def session_with_tokens(
    prompt: str = "What is the capital of France?",
    reply_text: str = REPLY,
    log: TokenLog | None = None,
    thinking: str = "",
) -> Conversation:
    """A finished one-turn conversation whose reply holds `log` (default `token_log()`),
    journaled."""
    from llama_tui.session.recorder import SessionRecorder

    conv = Conversation()
    rec = SessionRecorder(conv)
    rec.user_message(conv.add("user", prompt))
    reply = conv.add("assistant", reply_text)
    reply.thinking = thinking
    reply.tokens = to_compact(log if log is not None else token_log())
    rec.assistant_finished(reply)
    rec.close()
    return conv

"""``--logprobs K`` with ``--json``: the reply's tokens in the JSON object.

    "tokens": [{"text": " Paris", "id": 7042, "logprob": -0.105,
                "top": [{"text": " Paris", "id": 7042, "logprob": -0.105}, ...]}, ...]

One entry per generated token, in order (their texts make up the reply; the last may be the
end-of-reply token, whose text is ""). ``logprob`` is the model's own log-probability of the
token (natural log, before temperature, top-k/top-p and penalties; see `core.tokens`),
rounded to 1/1000 as the session stores it; ``top`` holds the K most likely tokens at that
position. ``sampled_logprob`` is added where the token was drawn from a reshaped
distribution (sampling with temperature, filters or a penalty). ``id`` is null for a remote
server, which names tokens by text. When a server sends no logprobs, ``tokens`` is null and
``tokens_unavailable`` says why; nothing is made up.
"""

from __future__ import annotations

from typing import Any

from llama_tui.core.tokens import TokenChoice, TokenLogprob, load_compact
from llama_tui.text import clean

__all__ = ["tokens_json"]


def _choice(c: TokenChoice | TokenLogprob) -> dict[str, Any]:
    # The texts are model output: control characters are made visible like the reply's.
    return {"text": clean(c.text), "id": c.id, "logprob": round(c.logprob, 3)}


def tokens_json(stored: dict[str, Any] | None) -> dict[str, Any]:
    """The ``tokens`` key (and ``tokens_unavailable`` when there are none) for a reply whose
    message holds `stored` (its compact token log)."""
    log = load_compact(stored)
    if log is None:
        return {"tokens": None, "tokens_unavailable": "no token data was recorded"}
    if log.unavailable:
        return {"tokens": None, "tokens_unavailable": clean(log.unavailable)}
    out: list[dict[str, Any]] = []
    for t in log.tokens:
        entry = _choice(t)
        entry["top"] = [_choice(c) for c in t.top]
        if t.sampled_logprob is not None:
            entry["sampled_logprob"] = round(t.sampled_logprob, 3)
        out.append(entry)
    return {"tokens": out}

"""Per-token logprobs from an OpenAI-compatible server: asking for them, reading them.

Asked for with ``logprobs: true, top_logprobs: K`` (OpenAI, vLLM, llama.cpp's server, SGLang
accept it). A streamed chunk then carries ``choices[0].logprobs.content``: one entry per
token, ``{"token", "logprob", "bytes", "top_logprobs": [{"token", "logprob", ...}]}``. The
numbers are the server's (vLLM and llama.cpp report the model's own distribution, as we do
locally; see `core.tokens`); ids are unknown (None). A server that ignores the request sends
none, and one that refuses it is asked again without it: either way the reply's token log
says so (`unavailable`) and no number is made up.

Everything here comes from the network: entries that are not well formed are skipped, text
is kept as sent (the UI cleans what it shows), logprobs must be finite and are capped at 0.
"""

from __future__ import annotations

import math
from typing import Any

from llama_tui.core.tokens import MAX_K, TokenChoice, TokenLogprob

__all__ = ["NO_LOGPROBS", "REFUSED", "choice_tokens", "request_fields"]

NO_LOGPROBS = "the server sent no token logprobs (it does not support them, or ignores the request)"
REFUSED = "the server refused the request for token logprobs"
# A chunk carries a token or a few; more entries than this in one event is not a real reply.
MAX_ENTRIES_PER_EVENT = 4096


def request_fields(k: int) -> dict[str, Any]:
    """The request body's fields asking for `k` alternatives per token ({} when off)."""
    if k <= 0:
        return {}
    return {"logprobs": True, "top_logprobs": min(k, MAX_K)}


def _logprob(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    f = float(value)
    if math.isnan(f):
        return None
    return min(0.0, max(f, -1e4)) if math.isfinite(f) else -1e4


def _text(entry: dict[str, Any]) -> str | None:
    token = entry.get("token")
    return token if isinstance(token, str) else None


def choice_tokens(choice: dict[str, Any], k: int) -> list[TokenLogprob]:
    """The tokens one streamed choice carries (empty when it has no usable logprobs)."""
    lp = choice.get("logprobs")
    content = lp.get("content") if isinstance(lp, dict) else None
    if not isinstance(content, list):
        return []
    out: list[TokenLogprob] = []
    for entry in content[:MAX_ENTRIES_PER_EVENT]:
        if not isinstance(entry, dict):
            continue
        text, value = _text(entry), _logprob(entry.get("logprob"))
        if text is None or value is None:
            continue
        top: list[TokenChoice] = []
        raw_top = entry.get("top_logprobs")
        for alt in raw_top[: max(k, 0)] if isinstance(raw_top, list) else []:
            if isinstance(alt, dict):
                alt_text, alt_value = _text(alt), _logprob(alt.get("logprob"))
                if alt_text is not None and alt_value is not None:
                    top.append(TokenChoice(None, alt_text, alt_value))
        top.sort(key=lambda c: -c.logprob)
        out.append(TokenLogprob(None, text, value, tuple(top)))
    return out

"""Per-token log-probabilities of a reply: the records every backend produces, and the compact
form a message stores them in.

What the numbers mean (one rule for every path): `logprob` and the alternatives' logprobs are
the model's own distribution for that position, the log-softmax of its raw logits, *before*
repetition penalty, temperature, top-k, top-p and min-p. That is "how sure the model was",
comparable between replies made with different settings, and what a forward pass over the
finished sequence gives (the tests check it to 1e-4 on the tiny model). When a token was
sampled from a distribution that differs from the model's (temperature != 1, a filter or a
penalty), `sampled_logprob` also holds its logprob under the distribution it was actually
drawn from; the inspector shows both. Greedy replies have none (the pick was certain). A
remote server's numbers are whatever it reports (vLLM and llama.cpp report the model's);
where a server sends none, `TokenLog.unavailable` says so and no number is ever made up.

Storage (`to_compact` / `from_compact`): columnar arrays with logprobs as whole numbers of
1/1000 nat (a probability is then exact to 0.1% of itself), token texts in a table of the
distinct (id, text) pieces, so a reply of 10k tokens with top-5 alternatives stays around
50 bytes per token in the journal (benchmarks/logprobs_cost.py measures it). `from_compact`
treats its input as untrusted (files can be damaged or hand-edited).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

TokenSource = Literal["generate", "fast", "remote"]
SOURCES: tuple[str, ...] = ("generate", "fast", "remote")

# Whole numbers per nat in storage; logprobs below FLOOR are stored as FLOOR.
SCALE = 1000
FLOOR = -100.0
MAX_K = 20  # the most alternatives a reply records (the setting's bound)
COMPACT_VERSION = 1


@dataclass(frozen=True)
class TokenChoice:
    """One candidate for a position: its id (None when a server gives none), text, logprob."""

    id: int | None
    text: str
    logprob: float

    @property
    def prob(self) -> float:
        return math.exp(self.logprob)


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token: the choice made and the top-k alternatives, most likely first
    (the chosen token is among them when it was in the top k)."""

    id: int | None
    text: str
    logprob: float
    top: tuple[TokenChoice, ...] = ()
    sampled_logprob: float | None = None  # see the module docstring

    @property
    def prob(self) -> float:
        return math.exp(self.logprob)


@dataclass
class TokenLog:
    """The tokens of one reply (appended while it streams), and where they came from."""

    k: int
    source: TokenSource
    tokens: list[TokenLogprob] = field(default_factory=list)
    # Why there are no numbers (a server that does not send logprobs); None when there are.
    unavailable: str | None = None

    def text(self) -> str:
        return "".join(t.text for t in self.tokens)

    def summary(self) -> tuple[float, float] | None:
        """(mean, min) token probability, or None without tokens."""
        if not self.tokens:
            return None
        probs = [t.prob for t in self.tokens]
        return sum(probs) / len(probs), min(probs)

    def cut_to(self, content: str) -> TokenLog:
        """The tokens that make up `content` (a reply cut at a stop string, or stopped while
        tokens were in flight): whole tokens while their text fits, the one that crosses
        the end shortened to it; an empty-text token (the end of the reply) stays only
        when everything before it was kept."""
        kept: list[TokenLogprob] = []
        pos = 0
        for tok in self.tokens:
            if pos >= len(content) and tok.text:
                break
            end = pos + len(tok.text)
            if content[pos:end] == tok.text:
                kept.append(tok)
                pos = end
                continue
            rest = content[pos:]
            if rest and tok.text.startswith(rest):
                kept.append(TokenLogprob(tok.id, rest, tok.logprob, tok.top, tok.sampled_logprob))
            break
        return TokenLog(self.k, self.source, kept, self.unavailable)


def _q(value: float) -> int:
    return round(max(value, FLOOR) * SCALE) if math.isfinite(value) else int(FLOOR * SCALE)


def to_compact(log: TokenLog) -> dict[str, Any]:
    """`log` as a message stores it (see the module docstring)."""
    piece_index: dict[tuple[int | None, str], int] = {}
    pid: list[int | None] = []
    ptext: list[str] = []

    def piece(i: int | None, text: str) -> int:
        key = (i, text)
        n = piece_index.get(key)
        if n is None:
            n = piece_index[key] = len(pid)
            pid.append(i)
            ptext.append(text)
        return n

    k = max(0, min(log.k, MAX_K))
    tok: list[int] = []
    lp: list[int] = []
    alt: list[int] = []
    alp: list[int] = []
    slp: list[int | None] = []
    for t in log.tokens:
        tok.append(piece(t.id, t.text))
        lp.append(_q(t.logprob))
        top = t.top[:k]
        for c in top:
            alt.append(piece(c.id, c.text))
            alp.append(_q(c.logprob))
        for _ in range(k - len(top)):
            alt.append(-1)
            alp.append(0)
        slp.append(None if t.sampled_logprob is None else _q(t.sampled_logprob))
    out: dict[str, Any] = {
        "v": COMPACT_VERSION,
        "k": k,
        "src": log.source,
        "scale": SCALE,
        "pid": pid,
        "ptext": ptext,
        "tok": tok,
        "lp": lp,
        "alt": alt,
        "alp": alp,
    }
    if any(s is not None for s in slp):
        out["slp"] = slp
    if log.unavailable:
        out["unavailable"] = log.unavailable
    return out


def _int_list(d: dict[str, Any], key: str, length: int | None = None) -> list[int]:
    value = d.get(key)
    if not isinstance(value, list) or any(
        isinstance(v, bool) or not isinstance(v, int) for v in value
    ):
        raise ValueError(f"tokens: {key} is not a list of whole numbers")
    if length is not None and len(value) != length:
        raise ValueError(f"tokens: {key} has {len(value)} entries, not {length}")
    return value


def from_compact(d: object) -> TokenLog:
    """Parse an untrusted stored token log; `ValueError` when it is not usable."""
    if not isinstance(d, dict) or d.get("v") != COMPACT_VERSION:
        raise ValueError("tokens: not a token log of a known version")
    k, source, scale = d.get("k"), d.get("src"), d.get("scale")
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= MAX_K:
        raise ValueError("tokens: bad k")
    if source not in SOURCES:
        raise ValueError("tokens: bad source")
    if isinstance(scale, bool) or not isinstance(scale, int) or scale <= 0:
        raise ValueError("tokens: bad scale")
    ptext = d.get("ptext")
    if not isinstance(ptext, list) or not all(isinstance(t, str) for t in ptext):
        raise ValueError("tokens: ptext is not a list of text")
    raw_pid = d.get("pid")
    if not isinstance(raw_pid, list) or len(raw_pid) != len(ptext):
        raise ValueError("tokens: pid does not match ptext")
    pid: list[int | None] = []
    for i in raw_pid:
        if i is not None and (isinstance(i, bool) or not isinstance(i, int) or i < 0):
            raise ValueError("tokens: bad token id")
        pid.append(i)
    tok = _int_list(d, "tok")
    n = len(tok)
    lp = _int_list(d, "lp", n)
    alt = _int_list(d, "alt", n * k)
    alp = _int_list(d, "alp", n * k)
    raw_slp = d.get("slp")
    slp: list[int | None] = [None] * n
    if raw_slp is not None:
        if (
            not isinstance(raw_slp, list)
            or len(raw_slp) != n
            or any(
                s is not None and (isinstance(s, bool) or not isinstance(s, int)) for s in raw_slp
            )
        ):
            raise ValueError("tokens: bad slp")
        slp = raw_slp
    pieces = len(pid)
    if any(not 0 <= t < pieces for t in tok) or any(not -1 <= a < pieces for a in alt):
        raise ValueError("tokens: a piece index is out of range")

    def value(q: int) -> float:
        return min(0.0, q / scale)

    tokens: list[TokenLogprob] = []
    for j in range(n):
        top = tuple(
            TokenChoice(pid[a], ptext[a], value(alp[j * k + m]))
            for m in range(k)
            if (a := alt[j * k + m]) >= 0
        )
        s = slp[j]
        t = tok[j]
        tokens.append(
            TokenLogprob(pid[t], ptext[t], value(lp[j]), top, None if s is None else value(s))
        )
    unavailable = d.get("unavailable")
    return TokenLog(
        k, source, tokens, unavailable if isinstance(unavailable, str) and unavailable else None
    )


def merge(first: TokenLog | None, second: TokenLog | None) -> TokenLog | None:
    """A continued reply's tokens: the earlier part's, then the new part's."""
    if first is None or not first.tokens:
        return second
    if second is None:
        return first
    return TokenLog(
        max(first.k, second.k),
        second.source,
        first.tokens + second.tokens,
        second.unavailable or first.unavailable,
    )


def compact_or_none(value: object) -> dict[str, Any] | None:
    """A stored token log kept as read when its shape is plausible (a message never fails to
    load over it); `from_compact` checks every value where the log is used."""
    if not isinstance(value, dict) or value.get("v") != COMPACT_VERSION:
        return None
    tok, alt, k = value.get("tok"), value.get("alt"), value.get("k")
    if not isinstance(tok, list) or not isinstance(alt, list) or not isinstance(k, int):
        return None
    return value if len(alt) == len(tok) * k else None


def load_compact(value: object) -> TokenLog | None:
    """`from_compact`, or None when `value` is missing or damaged."""
    if value is None:
        return None
    try:
        return from_compact(value)
    except ValueError:
        return None


def compact_summary(value: object) -> tuple[float, float] | None:
    """(mean, min) token probability of a stored log, read from its logprobs alone (cheap
    enough for every footer of a long session); None when there are none or they are bad."""
    if not isinstance(value, dict):
        return None
    lp, scale = value.get("lp"), value.get("scale")
    if not isinstance(lp, list) or not lp or isinstance(scale, bool) or not isinstance(scale, int):
        return None
    if scale <= 0 or any(isinstance(q, bool) or not isinstance(q, int) for q in lp):
        return None
    probs = [math.exp(min(0.0, q / scale)) for q in lp]
    return sum(probs) / len(probs), min(probs)

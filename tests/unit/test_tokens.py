"""The compact token log a reply stores: round trip through the message, the journal's JSON
and an export; damaged input is refused, never trusted; and its size per token."""

from __future__ import annotations

import json
import math
import random

import pytest

from llama_tui.core.tokens import (
    TokenChoice,
    TokenLog,
    TokenLogprob,
    compact_or_none,
    from_compact,
    load_compact,
    merge,
    to_compact,
)
from llama_tui.session.transcript import Conversation, Message


def sample_log(n: int, k: int = 5, seed: int = 0, vocab: int = 49152) -> TokenLog:
    rng = random.Random(seed)
    words = [" the", " a", " dog", " cat", "é", "\n", " Paris", "日本", "", "\x1b[31m"]
    tokens = []
    for _ in range(n):
        top = []
        for m in range(k):
            i = rng.randrange(vocab)
            top.append(TokenChoice(i, rng.choice(words), -abs(rng.gauss(0, 2)) - m))
        chosen = top[0]
        tokens.append(
            TokenLogprob(
                chosen.id,
                chosen.text,
                chosen.logprob,
                tuple(top),
                -abs(rng.gauss(0, 1)) if rng.random() < 0.5 else None,
            )
        )
    return TokenLog(k, "generate", tokens)


def assert_close(a: TokenLog, b: TokenLog) -> None:
    assert (a.k, a.source, a.unavailable) == (b.k, b.source, b.unavailable)
    assert len(a.tokens) == len(b.tokens)
    for x, y in zip(a.tokens, b.tokens, strict=True):
        assert (x.id, x.text) == (y.id, y.text)
        assert math.isclose(x.logprob, y.logprob, abs_tol=5e-4)
        assert (x.sampled_logprob is None) == (y.sampled_logprob is None)
        assert [(c.id, c.text) for c in x.top] == [(c.id, c.text) for c in y.top]
        for c, d in zip(x.top, y.top, strict=True):
            assert math.isclose(c.logprob, d.logprob, abs_tol=5e-4)


def test_round_trip_through_message_journal_json_and_export() -> None:
    log = sample_log(200)
    conv = Conversation()
    msg = conv.add("assistant", log.text())
    msg.tokens = to_compact(log)
    # the journal and JSON exports store Conversation.to_dict as JSON
    text = json.dumps(conv.to_dict(), ensure_ascii=True)
    back = Conversation.from_dict(json.loads(text))
    restored = load_compact(back.messages[0].tokens)
    assert restored is not None
    assert_close(log, restored)


def test_short_top_lists_and_remote_ids() -> None:
    log = TokenLog(
        3,
        "remote",
        [
            TokenLogprob(None, "Hi", -0.1, (TokenChoice(None, "Hi", -0.1),)),
            TokenLogprob(None, "!", -2.5, ()),
        ],
    )
    back = from_compact(json.loads(json.dumps(to_compact(log))))
    assert_close(log, back)
    assert back.tokens[1].top == ()


def test_unavailable_is_kept() -> None:
    log = TokenLog(5, "remote", [], unavailable="the server sends no logprobs")
    back = from_compact(to_compact(log))
    assert back.unavailable == "the server sends no logprobs" and back.tokens == []


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d.update(v=2),
        lambda d: d.update(k=-1),
        lambda d: d.update(k=True),
        lambda d: d.update(src="elsewhere"),
        lambda d: d.update(scale=0),
        lambda d: d["tok"].append(10**9),
        lambda d: d["lp"].pop(),
        lambda d: d["alt"].__setitem__(0, -7),
        lambda d: d["alp"].__setitem__(0, "x"),
        lambda d: d["pid"].__setitem__(0, -3),
        lambda d: d["ptext"].__setitem__(0, 5),
        lambda d: d.update(slp=[1.5]),
        lambda d: d.update(tok="nope"),
    ],
)
def test_damaged_logs_are_refused(damage: object) -> None:
    d = to_compact(sample_log(4))
    damage(d)  # type: ignore[operator]
    with pytest.raises(ValueError):
        from_compact(d)
    assert load_compact(d) is None


def test_a_damaged_log_never_loses_the_message() -> None:
    msg = Message.from_dict(
        {"role": "assistant", "content": "hi", "tokens": {"v": 1, "k": 2, "tok": [0], "alt": [1]}}
    )
    assert msg.content == "hi" and msg.tokens is None
    assert compact_or_none("junk") is None
    assert Message.from_dict({"role": "assistant", "content": "x"}).tokens is None


def test_logprobs_are_never_positive_or_infinite() -> None:
    log = TokenLog(1, "fast", [TokenLogprob(1, "a", float("-inf"), (TokenChoice(1, "a", 0.0),))])
    d = to_compact(log)
    d["lp"][0] = 5000  # hand-edited to a probability above 1
    back = from_compact(d)
    assert back.tokens[0].logprob == 0.0
    assert from_compact(to_compact(log)).tokens[0].logprob == -100.0


def test_cut_to_the_kept_text() -> None:
    toks = [TokenLogprob(i, t, -0.5) for i, t in enumerate(["Hel", "lo", " wor", "ld", "!\n\n"])]
    log = TokenLog(0, "generate", [*toks, TokenLogprob(9, "", -0.1)])
    assert [t.text for t in log.cut_to("Hello world!").tokens] == ["Hel", "lo", " wor", "ld", "!"]
    assert [t.text for t in log.cut_to("Hello wo").tokens] == ["Hel", "lo", " wo"]
    whole = log.cut_to("Hello world!\n\n").tokens
    assert len(whole) == 6 and whole[-1].text == ""


def test_merge_for_a_continued_reply() -> None:
    a, b = sample_log(3, seed=1), sample_log(2, seed=2)
    merged = merge(a, b)
    assert merged is not None and len(merged.tokens) == 5
    assert merge(None, b) is b and merge(a, None) is a


def test_bytes_per_token_stay_small() -> None:
    """A 10k-token reply with top-5 alternatives, as the journal writes it (ASCII JSON)."""
    log = sample_log(10_000, k=5, vocab=2000)  # a reply reuses a few thousand distinct pieces
    size = len(json.dumps(to_compact(log), ensure_ascii=True, separators=(",", ":")))
    assert size / 10_000 < 100

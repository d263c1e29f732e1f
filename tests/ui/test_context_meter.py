"""The context meter counts in bounded time (`ui/context_meter.py`): a history that fits the
context is counted whole and exactly; a long one has its newest context's worth counted by
the real tokenizer and the rest estimated at the same tokens per character."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from llama_tui.core.backend import ChatMessage, LoadOptions
from llama_tui.ui.context_meter import CHARS_PER_TOKEN_BOUND, used_tokens


def history(turns: int, *, system: str = "Be brief.") -> list[ChatMessage]:
    out = [ChatMessage("system", system)] if system else []
    for i in range(turns):
        out.append(ChatMessage("user", f"Question {i}: how does topic {i} work, in short?"))
        out.append(ChatMessage("assistant", f"Topic {i} works like this: " + "words " * 30))
    return out


class Counting:
    """A backend's token counting: the tiny Llama's real tokenizer and template, and what
    it was asked to count."""

    def __init__(self, backend: object) -> None:
        self.backend = backend
        self.asked: list[list[ChatMessage]] = []

    def count_tokens(self, h: Sequence[ChatMessage]) -> int:
        self.asked.append(list(h))
        return self.backend.count_tokens(h)  # type: ignore[attr-defined, no-any-return]


def tiny_backend(path: Path) -> object:
    from llama_tui.engine.local.backend import LocalBackend

    b = LocalBackend(str(path), LoadOptions(device="cpu", dtype="float32", compile=False))
    b.load()
    return b


def test_the_meter_counts_a_short_history_whole_and_a_long_one_in_bounded_time(
    tiny_model_dir: Path,
) -> None:
    real = tiny_backend(tiny_model_dir)
    counting = Counting(real)
    short = history(5)
    assert used_tokens(counting, short, 4096) == real.count_tokens(short)  # type: ignore[arg-type, attr-defined]
    assert counting.asked == [short]  # whole: exact

    long = history(400)
    exact = real.count_tokens(long)  # type: ignore[attr-defined]
    counting.asked.clear()
    context = 512
    used = used_tokens(counting, long, context)  # type: ignore[arg-type]
    (asked,) = counting.asked
    assert asked[0] == long[0]  # the system message is always counted
    assert asked[1].role == "user"  # the counted tail starts at a prompt, as templates want
    assert asked[-1] == long[-1]  # and ends with the newest message
    chars = sum(len(m.content) for m in asked)
    assert chars <= (context + 200) * CHARS_PER_TOKEN_BOUND  # a context's worth, not 800 messages
    assert len(asked) < len(long) // 4
    assert abs(used - exact) / exact < 0.05  # the older part's estimate is close

    # More history does not mean more tokenizing: the counted part stays the same size.
    counting.asked.clear()
    used_tokens(counting, history(2000), context)  # type: ignore[arg-type]
    assert len(counting.asked[0]) == len(asked)

"""The thinking splitter (`core.thinking`) and the thought's count and time (`chat.thinking`)."""

from __future__ import annotations

import pytest

from llama_tui.chat.footer import footer_for
from llama_tui.chat.thinking import ThoughtTracker, resume_phase, split_text
from llama_tui.config.values import check_setting
from llama_tui.core.backend import GenerationStats
from llama_tui.core.params import InvalidValue
from llama_tui.core.thinking import Piece, ThinkFormat, ThinkSplitter
from llama_tui.session.export import from_json, to_json, to_markdown
from llama_tui.session.transcript import Conversation, Message

FMT = ThinkFormat()


def _split(chunks: list[str], fmt: ThinkFormat = FMT, phase: str = "start") -> tuple[str, str]:
    splitter = ThinkSplitter(fmt, phase)  # type: ignore[arg-type]
    pieces = [p for c in chunks for p in splitter.feed(c)] + splitter.flush()
    thinking = "".join(p.text for p in pieces if p.thinking)
    answer = "".join(p.text for p in pieces if not p.thinking)
    return thinking, answer


@pytest.mark.parametrize("size", [1, 2, 3, 5, 100])
def test_markers_split_at_any_chunk_boundary(size: int) -> None:
    text = "<think>\nLet me see: 2+2.\n</think>\n\nIt is 4."
    chunks = [text[i : i + size] for i in range(0, len(text), size)]
    assert _split(chunks) == ("\nLet me see: 2+2.\n", "\n\nIt is 4.")


def test_everything_but_the_markers_is_kept_exactly() -> None:
    thinking, answer = _split(["<think>a < b </thin", "k but </think>x </think> y"])
    assert FMT.inline(thinking, answer) == "<think>a < b </think but </think>x </think> y"


def test_a_reply_without_a_thought_is_all_answer() -> None:
    assert _split(["Hello", " <think> is a tag"]) == ("", "Hello <think> is a tag")
    assert _split(["  ", "\n", "plain"]) == ("", "  \nplain")
    assert _split(["<th", "is is not a thought"]) == ("", "<this is not a thought")


def test_open_marker_after_leading_whitespace() -> None:
    assert _split(["\n", " <think>", "hm</think>ok"]) == ("hm", "ok")


def test_generation_prompt_opened_the_thought() -> None:
    fmt = ThinkFormat(opens_in_prompt=True)
    tracker = ThoughtTracker(fmt)
    pieces = tracker.feed("\nhmm</think>Answer", 3)
    assert pieces == [Piece("\nhmm", True), Piece("Answer", False)]


def test_an_unclosed_thought_stays_thinking_and_a_cut_marker_is_text() -> None:
    assert _split(["<think>still going </th"]) == ("still going </th", "")


def test_continued_answer_cannot_open_a_thought() -> None:
    assert _split(["<think>x</think>"], phase="answer") == ("", "<think>x</think>")
    assert _split(["more</think>done"], phase="thinking") == ("more", "done")
    assert resume_phase("thought", "") == "thinking"
    assert resume_phase("thought", "answer") == "answer"
    assert resume_phase("", "answer") == "answer"


def test_other_marker_pairs() -> None:
    fmt = ThinkFormat("<|START_THINKING|>", "<|END_THINKING|>")
    assert _split(["<|START_THINK", "ING|>x<|END_", "THINKING|>y"], fmt) == ("x", "y")


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_tracker_counts_the_thought_and_times_it() -> None:
    clock = _Clock()
    tracker = ThoughtTracker(FMT, clock=clock)
    assert tracker.feed("<think>", 1) == []
    clock.now = 101.0
    assert tracker.feed("one", 2) == [Piece("one", True)]
    assert tracker.tokens == 2
    clock.now = 102.5
    tracker.feed(" two", 3)
    tracker.feed("</think>", 4)
    assert tracker.closed and tracker.tokens == 4
    clock.now = 110.0
    tracker.feed("The answer", 5)
    assert tracker.tokens == 4
    stats = tracker.stats(GenerationStats(generated_tokens=5))
    assert stats is not None
    assert stats.thinking_tokens == 4 and stats.thinking_s == pytest.approx(2.5)
    assert GenerationStats.from_dict(stats.to_dict()) == stats


def test_close_and_answer_in_one_chunk_counts_the_answer_token_apart() -> None:
    tracker = ThoughtTracker(FMT)
    tracker.feed("<think>a", 2)
    tracker.feed("b</think>c", 5)
    assert tracker.tokens == 4


def test_tracker_without_a_format_passes_text_through() -> None:
    tracker = ThoughtTracker(None)
    assert tracker.feed("<think>x</think>", 3) == [Piece("<think>x</think>", False)]
    stats = GenerationStats(generated_tokens=3)
    assert tracker.stats(stats) is stats


# -- saving: the message, the JSON export, the Markdown export --------------------------------


def _thought_conversation() -> Conversation:
    conv = Conversation(title="Sum")
    conv.add("user", "2+2?")
    reply = conv.add("assistant", "\n\nIt is 4.")
    reply.thinking = "\nTwo and two. </details><b>x</b>\n"
    reply.stats = GenerationStats(generated_tokens=12, thinking_tokens=9, thinking_s=0.8).to_dict()
    return conv


def test_message_keeps_its_thinking() -> None:
    msg = _thought_conversation().messages[-1]
    again = Message.from_dict(msg.to_dict())
    assert again.thinking == msg.thinking
    assert Message.from_dict({**msg.to_dict(), "thinking": 42}).thinking == ""
    assert Message.from_dict({"role": "assistant", "content": "old file"}).thinking == ""
    history = _thought_conversation().history()
    assert history[-1].reasoning == msg.thinking and history[-1].content == "\n\nIt is 4."


def test_json_export_keeps_and_markdown_folds_the_thought() -> None:
    conv = _thought_conversation()
    assert from_json(to_json(conv)).messages[-1].thinking == conv.messages[-1].thinking
    md = to_markdown(conv)
    block = md[md.index("<details>") : md.index("It is 4.")]
    assert "<summary>Thought for 9 tokens, 0.8 s</summary>" in block
    assert "Two and two." in block
    # The thought's own text cannot close the block early.
    assert block.count("</details>") == 1 and "&lt;/details>" in block
    assert md.index("<details>") < md.index("It is 4.")


def test_footer_splits_thinking_from_answer_tokens() -> None:
    stats = GenerationStats(generated_tokens=12, thinking_tokens=9, decode_tokens_per_s=20.0)
    text, _ = footer_for("complete", stats)
    assert text.startswith("12 tokens (9 thinking, 3 answer) · 20.0 tok/s")
    assert footer_for("complete", GenerationStats(generated_tokens=3))[0] == "3 tokens"


def test_thinking_view_setting_is_checked() -> None:
    assert check_setting("thinking", " Show ") == "show"
    with pytest.raises(InvalidValue, match="fold, show or hide"):
        check_setting("thinking", "loud")


def test_split_text_of_a_whole_reply() -> None:
    assert split_text("<think>\nhm</think>\n\nok", FMT) == ("\nhm", "\n\nok")
    assert split_text("plain answer", FMT) == ("", "plain answer")
    assert split_text("<think>x</think>y", None) == ("", "<think>x</think>y")
    assert split_text("x</think>y", ThinkFormat(opens_in_prompt=True)) == ("x", "y")

"""The token inspector in the app: `/inspect [N]` and F8 open it, the cursor moves token by
token, the side list shows the alternatives, and Enter on one continues the reply from it as
a new branch (the original unchanged). The real engine (tiny Llama) for the path users take,
a hand-written token log for the exact figures, and an SVG snapshot at 80x24."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import OptionList, Static

from llama_tui.chat.tokens import message_tokens
from llama_tui.core.params import GenerationParams
from llama_tui.ui.screens.inspector import InspectorScreen, TokenText
from llama_tui.ui.widgets.turns import AssistantTurn, UserTurn
from tests.ui.fakes import FakeBackend
from tests.ui.helpers import make_app, ready, real_app, reply_done, send, until
from tests.ui.token_fixtures import REPLY, session_with_tokens

SIZE = (80, 24)


def _info(app: Any) -> str:
    return str(app.screen.query_one("#token-info", Static).render())


def _options(app: Any) -> list[str]:
    options = app.screen.query_one("#alternatives", OptionList)
    return [str(options.get_option_at_index(i).prompt) for i in range(options.option_count)]


@pytest.mark.asyncio
async def test_inspect_moves_and_lists_alternatives() -> None:
    conv = session_with_tokens()
    app = make_app(FakeBackend(), resume=conv.id)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "/inspect")
        await until(pilot, lambda: isinstance(app.screen, InspectorScreen))
        assert "token 1/17" in _info(app) and '"The"' in _info(app)
        for _ in range(5):
            await pilot.press("right")
        assert "token 6/17" in _info(app) and "p 43.0%" in _info(app)
        assert _options(app) == [
            '•   43.0% " Paris"',
            '    31.0% " Lyon"',
            '    12.0% " Marseille"',
        ]
        await pilot.press("n")  # the next token below 20%
        assert "token 11/17" in _info(app) and "(not in the top 3)" in _info(app)
        await pilot.press("p")  # none before it below 20%: stays
        assert "token 11/17" in _info(app)
        await pilot.press("end")
        assert "token 17/17" in _info(app) and "∎ end" in _info(app)
        await pilot.press("left", "home")
        assert "token 1/17" in _info(app)
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, InspectorScreen))


@pytest.mark.asyncio
async def test_enter_on_an_alternative_asks_for_a_fork(monkeypatch: pytest.MonkeyPatch) -> None:
    conv = session_with_tokens()
    app = make_app(FakeBackend(), resume=conv.id)
    asked: list[tuple[str, str]] = []
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)

        async def fork(message_id: str, prefix: str) -> None:
            asked.append((message_id, prefix))

        monkeypatch.setattr(app.chat, "fork_and_continue", fork)
        await pilot.press("f8")
        await until(pilot, lambda: isinstance(app.screen, InspectorScreen))
        for _ in range(5):
            await pilot.press("right")
        await pilot.press("down", "enter")  # " Lyon" instead of " Paris"
        await until(pilot, lambda: asked)
    reply = app.chat_state.conversation.messages[-1]
    assert asked == [(reply.id, "The capital of France is Lyon")]


@pytest.mark.asyncio
async def test_replies_without_numbers_say_why() -> None:
    app = make_app(FakeBackend(replies=[["Hello there."]]))
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await send(pilot, "/inspect")
        await until(pilot, lambda: "no reply to inspect" in _notes(app))
        await send(pilot, "Hi")
        await reply_done(pilot)
        await send(pilot, "/inspect 3")
        await until(pilot, lambda: "There is no reply 3" in _notes(app))
        await send(pilot, "/inspect 1")
        await until(pilot, lambda: isinstance(app.screen, InspectorScreen))
        text = str(app.screen.query_one("#inspector-empty", Static).render())
        assert "no token probabilities: none were recorded" in text


def _notes(app: Any) -> str:
    return " ".join(str(n.render()) for n in app.chat.query(".notice Static, .notice"))


@pytest.mark.asyncio
async def test_on_the_real_engine_a_picked_alternative_becomes_a_new_branch(
    tiny_model_dir: Path,
) -> None:
    params = GenerationParams(do_sample=False, max_new_tokens=8, logprobs=4)
    app = real_app(tiny_model_dir, params)
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        await send(pilot, "Tell me about dogs")
        await reply_done(pilot)
        conv = app.chat_state.conversation
        original = conv.messages[-1]
        original_text = original.content
        log = message_tokens(original)
        assert log is not None and log.text().startswith(original_text)
        assert (
            "p mean" in str(app.chat.query(AssistantTurn).last().query(".footer").first().render())
            if app.chat.query(".footer")
            else True
        )
        await send(pilot, "/inspect")
        await until(pilot, lambda: isinstance(app.screen, InspectorScreen))
        await pilot.press("right", "right", "down", "enter")  # token 3, second alternative
        await until(pilot, lambda: conv.messages[-1] is not original)
        await reply_done(pilot)
        new = conv.messages[-1]
        forced = log.tokens[0].text + log.tokens[1].text + log.tokens[2].top[1].text
        assert new.content.startswith(forced) and new.content != original_text
        assert original.content == original_text and original in conv.branches
        titles = [
            str(t.border_title)
            for t in app.chat.transcript.query(".turn")
            if isinstance(t, (UserTurn, AssistantTurn))
        ]
        assert titles[-1].endswith("2/2")
        # the new branch's tokens are the ones it generated after the forced text
        new_log = message_tokens(new)
        assert new_log is not None and new.content.endswith(new_log.text()[: len(new.content)])


def test_snapshot_80x24(snap_compare: Any) -> None:
    conv = session_with_tokens()

    async def run_before(pilot: Pilot[int]) -> None:
        await ready(pilot)
        await send(pilot, "/inspect")
        await until(pilot, lambda: isinstance(pilot.app.screen, InspectorScreen))
        for _ in range(5):
            await pilot.press("right")
        await pilot.press("down")
        await pilot.pause()

    app = make_app(FakeBackend(), resume=conv.id)
    assert snap_compare(app, run_before=run_before, terminal_size=SIZE)


def test_reply_text_is_the_fixture() -> None:
    assert REPLY.startswith("The capital of France is Paris.")
    assert TokenText  # the widget the inspector draws with


@pytest.mark.asyncio
async def test_a_thought_is_shown_but_not_forked_from(monkeypatch: pytest.MonkeyPatch) -> None:
    from llama_tui.core.tokens import TokenChoice, TokenLog, TokenLogprob

    def tok(text: str, alt: str) -> TokenLogprob:
        return TokenLogprob(1, text, -0.1, (TokenChoice(1, text, -0.1), TokenChoice(2, alt, -2.5)))

    log = TokenLog(
        2,
        "generate",
        [
            tok("<think>", "x"),
            tok("hm", "ok"),
            tok("</think>", "y"),
            tok("Yes", "No"),
            tok(".", "!"),
        ],
    )
    conv = session_with_tokens(reply_text="Yes.", log=log, thinking="hm")
    app = make_app(FakeBackend(), resume=conv.id)
    asked: list[str] = []
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)

        async def fork(message_id: str, prefix: str) -> None:
            asked.append(prefix)

        monkeypatch.setattr(app.chat, "fork_and_continue", fork)
        await send(pilot, "/inspect")
        await until(pilot, lambda: isinstance(app.screen, InspectorScreen))
        await pilot.press("right", "down", "enter")  # inside the thought: refused
        await pilot.pause()
        assert isinstance(app.screen, InspectorScreen) and not asked
        await pilot.press("right", "right", "right", "down", "enter")  # "." -> "!"
        await until(pilot, lambda: asked)
    assert asked == ["Yes!"]


@pytest.mark.asyncio
async def test_underline_below_a_threshold_in_the_transcript() -> None:
    from llama_tui.ui.token_underline import LowTokenText

    conv = session_with_tokens()
    app = make_app(FakeBackend(replies=[["No numbers here."]]), resume=conv.id)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        turn = app.chat.query(AssistantTurn).first()
        assert not turn.query(LowTokenText)  # off by default
        await send(pilot, "/inspect underline 20")
        await until(pilot, lambda: turn.query(LowTokenText))
        shown = turn.query_one(LowTokenText).render()
        assert str(shown) == REPLY and not turn.markdown.display
        underlined = [str(shown)[s.start : s.end] for s in shown.spans if s.style.underline]
        assert underlined == [" famous"]  # the one token below 20%
        # a new reply without token data keeps its Markdown
        await send(pilot, "Hi")
        await reply_done(pilot)
        last = app.chat.query(AssistantTurn).last()
        assert not last.query(LowTokenText) and last.markdown.display
        await send(pilot, "/inspect underline 150")
        await until(pilot, lambda: "N from 1 to 100" in _notes(app))
        await send(pilot, "/inspect underline off")
        await until(pilot, lambda: not turn.query(LowTokenText))
        assert turn.markdown.display

"""docs/reliability.md rows 1-4: hostile text cannot drive the terminal, inject markup or
open links.

Every test runs the real app (`create_app` with the scripted fake backend) and asserts on
the exact characters Textual writes to the terminal (`terminal.RecordingDriver`), not on
widget text: the only control sequences allowed in the output are Textual's own (colours,
cursor positioning, pointer shape), no parameter of a payload sequence appears, and the
visible text around each payload is on the screen.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from textual import events
from textual.pilot import Pilot

from llama_tui.core.errors import GenerationError
from llama_tui.ui.app import LlamaTuiApp
from llama_tui.ui.screens.confirm import ConfirmScreen
from llama_tui.ui.widgets.prompt_input import PromptInput
from tests.reliability.payloads import (
    HIDING_PAYLOADS,
    MARKUP_PAYLOADS,
    TERMINAL_PAYLOADS,
    Payload,
    chunkings,
)
from tests.reliability.terminal import audit, record_terminal, screen_of
from tests.ui.fakes import FakeBackend
from tests.ui.helpers import make_app, ready, reply_done, reply_text, until

pytestmark = pytest.mark.asyncio

W, H = 100, 30


async def send(pilot: Pilot[int], text: str) -> None:
    """Submit `text` as the prompt input does on Enter, without drawing it in the input first.

    (tests.ui.helpers.send loads the raw text into the TextArea, which then draws it: what a
    paste does; `test_paste_into_the_prompt_is_sanitised` covers that path.)
    """
    app = pilot.app
    assert isinstance(app, LlamaTuiApp)
    app.chat.prompt.post_message(PromptInput.Submitted(app.chat.prompt, text))
    await pilot.pause()


def assert_clean(out: list[str], payload: Payload | None = None) -> None:
    text = "".join(out)
    assert text, "nothing was rendered: the recording driver is not in use"
    result = audit(text)
    assert not result.leaks, f"control characters reached the terminal: {result.leaks[:5]}"
    for bit in payload.residue if payload else ():
        assert bit not in text, f"payload residue {bit!r} reached the terminal"


# -- row 1: escape sequences in streamed model output ------------------------------------


@pytest.mark.parametrize("how", ["whole", "per-char", "random"])
@pytest.mark.parametrize("payload", TERMINAL_PAYLOADS, ids=lambda p: p.id)
async def test_escape_sequences_in_streamed_output(payload: Payload, how: str) -> None:
    reply = f"BEFOREMARK {payload.seq} AFTERMARK"
    backend = FakeBackend(replies=[chunkings(reply, how, seed=len(payload.seq))])
    app = make_app(backend)
    out = record_terminal(app)
    async with app.run_test(headless=False, size=(W, H)) as pilot:
        await ready(pilot)
        await send(pilot, "hi")
        await reply_done(pilot)
        await pilot.pause()
        # the journal keeps exact text
        assert app.chat_state.conversation.messages[-1].content == reply
    assert_clean(out, payload)
    shown = screen_of(out, W, H).text
    assert "BEFOREMARK" in shown and "AFTERMARK" in shown, shown


async def test_stream_is_clean_while_streaming_not_only_at_the_end() -> None:
    """Frames rendered mid-stream (sequence split over chunks, not yet complete) are clean."""
    seqs = "".join(p.seq for p in TERMINAL_PAYLOADS)
    reply = "START " + seqs + " END"
    parts = chunkings(reply, "per-char")
    backend = FakeBackend(replies=[parts], hold_after=len(parts) // 2)
    app = make_app(backend)
    out = record_terminal(app)
    async with app.run_test(headless=False, size=(W, H)) as pilot:
        await ready(pilot)
        await send(pilot, "hi")
        await until(pilot, lambda: backend.held.is_set())
        await until(pilot, lambda: reply_text(app))
        for _ in range(5):
            await pilot.pause(0.05)
        mid = len(out)
        backend.release()
        await reply_done(pilot)
    assert mid > 0
    assert_clean(out[:mid])
    for p in TERMINAL_PAYLOADS:
        assert_clean(out, p)


@pytest.mark.parametrize(("name", "raw", "visible"), HIDING_PAYLOADS,
                         ids=[h[0] for h in HIDING_PAYLOADS])
async def test_cr_and_backspace_cannot_hide_text(name: str, raw: str, visible: str) -> None:
    backend = FakeBackend(replies=[chunkings(raw, "per-char")])
    app = make_app(backend)
    out = record_terminal(app)
    async with app.run_test(headless=False, size=(W, H)) as pilot:
        await ready(pilot)
        await send(pilot, raw)  # the user's own turn too
        await reply_done(pilot)
    assert_clean(out)
    shown = screen_of(out, W, H).text
    assert shown.count(visible) >= 2, shown  # the prompt and the reply


@pytest.mark.parametrize("how", ["escapes", "hiding"])
async def test_paste_into_the_prompt_is_sanitised(how: str) -> None:
    """A bracketed paste (text copied from a web page or a log) is drawn by the TextArea."""
    if how == "escapes":
        text = "PASTEA " + "".join(p.seq for p in TERMINAL_PAYLOADS) + " PASTEB"
    else:
        text = "".join(raw for _n, raw, _v in HIDING_PAYLOADS)
    app = make_app(FakeBackend())
    out = record_terminal(app)
    async with app.run_test(headless=False, size=(W, H)) as pilot:
        await ready(pilot)
        app.chat.prompt.focus()
        app.post_message(events.Paste(text))  # as the driver does: to the focused widget
        await until(pilot, lambda: bool(app.chat.prompt.text))
        await pilot.pause(0.1)
    for p in TERMINAL_PAYLOADS:
        assert_clean(out, p)


# -- every other surface: input, errors, file names, model ids, resumed sessions --------


@pytest.mark.parametrize("payload", TERMINAL_PAYLOADS, ids=lambda p: p.id)
async def test_escape_sequences_on_every_surface(
    payload: Payload, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    seq = payload.seq
    backend = FakeBackend(
        replies=[[f"reply {seq} text"]],
        stream_error=GenerationError(f"boom {seq} cause", f"fix {seq} it"),
    )
    app = make_app(backend)
    out = record_terminal(app)
    async with app.run_test(headless=False, size=(W, H), notifications=True) as pilot:
        await ready(pilot)
        await send(pilot, f"prompt {seq} typed")  # user input
        await reply_done(pilot)  # the error footer
        assert app.chat_state.conversation.messages[-1].status == "error"
        await send(pilot, f"/save {tmp_path}/name{seq}.md")  # a file name, in a toast
        await pilot.pause()
        await send(pilot, f"/model org/model{seq}x")  # a model id, in a notice
        await until(pilot, lambda: app.model.load_error is not None)
        await send(pilot, f"/set temperature {seq}")  # a setting value, in a notice
        await pilot.pause(0.1)
    # No residue check here: error texts may show a repr of the id ('\\x1b]52;...'),
    # harmless printable text. No control character may get through.
    assert_clean(out)
    home = tmp_path / "llama_tui_home"  # the isolated config / data dirs (conftest)
    saved = [p for p in tmp_path.rglob("*") if p.is_file() and home not in p.parents]
    if "\0" in seq:
        assert saved == []  # refused with a message, nothing written
        return
    # The typed path is honoured ('/' in an OSC 8 URL makes folders), but no component of
    # what was created holds a control character (an `ls` would replay it).
    assert len(saved) == 1, saved
    rel = str(saved[0].relative_to(tmp_path))
    assert not audit(rel).leaks, rel


async def test_resumed_session_with_escape_sequences(tmp_path: Path) -> None:
    """A journal on disk (another machine, an old version, an attacker) is untrusted too."""
    from llama_tui.session.recorder import SessionRecorder
    from llama_tui.session.transcript import Conversation

    seqs = "".join(p.seq for p in TERMINAL_PAYLOADS)
    conv = Conversation(title=f"title {seqs}")
    conv.model = {"spec": f"org/m{seqs}"}
    rec = SessionRecorder(conv)
    rec.user_message(conv.add("user", f"question {seqs} MARKQ"))
    reply = conv.add("assistant", f"answer {seqs} MARKA")
    rec.assistant_started(reply)
    rec.assistant_finished(reply)
    rec.close()

    app = make_app(FakeBackend(), resume=conv.id)
    out = record_terminal(app)
    async with app.run_test(headless=False, size=(W, H), notifications=True) as pilot:
        await ready(pilot)
        await pilot.press("f5")  # the session browser lists its title / first prompt
        await pilot.pause(0.2)
    for p in TERMINAL_PAYLOADS:
        assert_clean(out, p)
    shown = screen_of(out, W, H).text
    assert "MARKQ" in "".join(out) and "MARKA" in "".join(out), shown


# -- row 2: markup-shaped text ------------------------------------------------------------


@pytest.mark.parametrize("markup", MARKUP_PAYLOADS)
async def test_markup_is_shown_literally_everywhere(
    markup: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    backend = FakeBackend(
        replies=[[f"R1 {markup} R2"], [f"S1 {markup} S2"]],
    )
    app = make_app(backend)
    opened: list[str] = []
    monkeypatch.setattr(app, "open_url", lambda url, **kw: opened.append(url))
    out = record_terminal(app)
    async with app.run_test(headless=False, size=(W, H), notifications=True) as pilot:
        await ready(pilot)
        await send(pilot, f"U1 {markup} U2")
        await reply_done(pilot)
        backend.stream_error = GenerationError(f"E1 {markup} E2", "fix")
        await send(pilot, "again")
        await reply_done(pilot)
        await send(pilot, f"/save {tmp_path}/f{markup}.md")
        await send(pilot, f"/set top_k {markup}")
        await pilot.pause(0.1)
        shown = screen_of(out, W, H).flat
        # Click every place the literal text is shown: no action may run, no link open.
        grid = screen_of(out, W, H)
        for y, row in enumerate(grid.rows):
            line = "".join(c or "" for c in row)
            x = line.find(markup)
            if x >= 0:
                await pilot.click(offset=(x + len(markup) // 2, y))
                await pilot.pause()
        assert app.is_running and app.return_code is None
        assert app._exception is None
    assert_clean(out)
    assert not opened
    flat = "".join(shown.split())
    want = "".join(markup.split())
    # The user turn, the reply and the error footer show it literally.
    assert flat.count(want) >= 3, shown


@pytest.mark.parametrize("markup", MARKUP_PAYLOADS)
async def test_markup_in_failed_model_id_notice_title(markup: str) -> None:
    """`/model SPEC` that fails: the notice's title 'could not load SPEC' shows it literally."""
    app = make_app(FakeBackend())
    out = record_terminal(app)
    async with app.run_test(headless=False, size=(W, H)) as pilot:
        await ready(pilot)
        await send(pilot, f"/model x{markup}")
        await until(pilot, lambda: app.model.load_error is not None)
        await pilot.pause(0.1)
        assert app._exception is None
        rows = ["".join(c or "" for c in r) for r in screen_of(out, W, H).rows]
    assert_clean(out)
    assert any(f"could not load x{markup}" in r for r in rows), "\n".join(rows)


# -- row 3: links in Markdown output ----------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "label", "url"),
    [
        ("See [the docs](https://real.example/docs?q=1) now", "the docs",
         "https://real.example/docs?q=1"),
        ("Go [https://good.example](https://evil.example/steal) now", "https://good.example",
         "https://evil.example/steal"),
        ("Read [this](https://a.example/p?next=//evil.example&x=1) now", "this",
         "https://a.example/p?next=//evil.example&x=1"),
    ],
    ids=["plain", "deceptive-label", "query"],
)
async def test_markdown_links_need_confirmation_and_show_real_url(
    reply: str, label: str, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app(FakeBackend(replies=[[reply], [reply]]))
    opened: list[str] = []
    monkeypatch.setattr(app, "open_url", lambda u, **kw: opened.append(u))
    out = record_terminal(app)
    async with app.run_test(headless=False, size=(W, H)) as pilot:
        await ready(pilot)
        await send(pilot, "links please")
        await reply_done(pilot)
        # No terminal-level hyperlink (OSC 8) either: a terminal would open it on Ctrl+click.
        assert "\x1b]8;" not in "".join(out)

        async def click_label() -> None:
            grid = screen_of(out, W, H)
            for y, row in enumerate(grid.rows):
                x = "".join(c or "" for c in row).find(label)
                if x >= 0:
                    await pilot.click(offset=(x + 1, y))
                    await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
                    return
            raise AssertionError(f"{label!r} not on screen:\n{grid.text}")

        await click_label()
        assert not opened
        dialog = "".join(screen_of(out, W, H).flat.split())
        assert "".join(url.split()) in dialog  # the real target, not the label
        await pilot.press("n")
        await until(pilot, lambda: not isinstance(app.screen, ConfirmScreen))
        assert not opened
        await click_label()
        await pilot.press("enter")  # "Cancel" has focus for links: Enter does not open
        await until(pilot, lambda: not isinstance(app.screen, ConfirmScreen))
        assert not opened
        await click_label()
        await pilot.press("y")
        await until(pilot, lambda: bool(opened))
    assert opened == [url]
    assert_clean(out)


# -- row 4: saved transcripts ---------------------------------------------------------------


@pytest.mark.parametrize("payload", TERMINAL_PAYLOADS, ids=lambda p: p.id)
async def test_saved_markdown_shows_placeholders_json_keeps_exact_text(
    payload: Payload, tmp_path: Path
) -> None:
    raw = f"A {payload.seq} B"
    app = make_app(FakeBackend(replies=[chunkings(raw, "per-char")]))
    async with app.run_test(size=(W, H)) as pilot:
        await ready(pilot)
        await send(pilot, f"Q {payload.seq} Q")
        await reply_done(pilot)
        await send(pilot, f"/save {tmp_path / 'out.md'}")
        await send(pilot, f"/save {tmp_path / 'out.json'}")
        await until(pilot, lambda: (tmp_path / "out.json").exists()
                    and (tmp_path / "out.md").exists())
    md = (tmp_path / "out.md").read_text(encoding="utf-8")
    assert not audit(md.replace("\n", " ")).leaks and "\t" not in payload.seq
    if any(c in payload.seq for c in "\x1b\x07\x00"):
        assert any(p in md for p in ("␛", "␇", "␀"))
    if any("\x80" <= c <= "\x9f" for c in payload.seq):
        assert "\\x9" in md
    data = json.loads((tmp_path / "out.json").read_text(encoding="utf-8"))
    contents = [m["content"] for m in data["conversation"]["messages"]]
    assert raw in contents and f"Q {payload.seq} Q" in contents
    assert "\x1b" not in (tmp_path / "out.json").read_text(encoding="utf-8")

"""Thinking models on both backends: detection, the split, history, stats, the journal.

Local: the tiny random Llama with think tokens and a real template shape (Qwen3's, DeepSeek-
R1's) built here. The random model never writes ``</think>`` by itself, so a whole reply is
made with the R1 template (its generation prompt opens the thought), and the split of a
finished thought is checked on the real tokenizer's stream. Remote: a loopback server that
streams ``reasoning_content`` / ``reasoning``, through the real HTTP client.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from llama_tui.chat.reply import run_reply
from llama_tui.chat.state import ChatState
from llama_tui.chat.thinking import ThoughtTracker
from llama_tui.core.backend import ChatMessage, GenerationStats, LoadOptions
from llama_tui.core.params import GenerationParams
from llama_tui.core.thinking import ThinkFormat
from llama_tui.engine.local.backend import LocalBackend
from llama_tui.engine.local.chat_format import ChatFormatter
from llama_tui.engine.local.decoding import IncrementalDecoder
from llama_tui.engine.local.thinking import detect_thinking, marker_decoder
from llama_tui.engine.remote.backend import RemoteBackend
from llama_tui.session.journal import load_journal
from llama_tui.session.recorder import SessionRecorder
from llama_tui.session.transcript import Conversation
from tests.engine.remote_server import (
    Received,
    ScriptedServer,
    TransformersServer,
    models_list,
    send_json,
    serving_missing,
    start_sse,
    transformers_server,
    wait_for_disconnect,
)
from tests.engine.thinking_models import (
    QWEN3_TEMPLATE,
    R1_TEMPLATE,
    build_thinking_model,
    reasoning_delta,
    reasoning_script,
    sent_messages,
    with_response_template,
)

GREEDY = GenerationParams(do_sample=False, top_k=0, max_new_tokens=6)


@pytest.fixture(scope="module")
def qwen_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_thinking_model(tiny_model_dir, tmp_path_factory.mktemp("qwen3ish"), QWEN3_TEMPLATE)


@pytest.fixture(scope="module")
def r1_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_thinking_model(tiny_model_dir, tmp_path_factory.mktemp("r1ish"), R1_TEMPLATE)


def _tokenizer(path: Path) -> object:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def _state(tmp_path: Path) -> ChatState:
    conv = Conversation()
    recorder = SessionRecorder(conv, tmp_path / "sessions", checkpoint_interval=0.0)
    return ChatState(conv, GREEDY, "", recorder)


# -- detection ------------------------------------------------------------------------------


def test_detected_from_template_and_tokenizer(
    qwen_dir: Path, r1_dir: Path, tiny_model_dir: Path
) -> None:
    qwen = detect_thinking(_tokenizer(qwen_dir))
    assert qwen is not None and qwen.key == "reasoning_content"
    assert qwen.fmt == ThinkFormat("<think>", "</think>", opens_in_prompt=False)
    r1 = detect_thinking(_tokenizer(r1_dir))
    assert r1 is not None and r1.key is None  # inline: its template splits the content
    assert r1.fmt.opens_in_prompt  # its generation prompt writes "<think>\n"
    assert detect_thinking(_tokenizer(tiny_model_dir)) is None


# -- history: the template decides ----------------------------------------------------------


def _rendered(path: Path, history: tuple[ChatMessage, ...]) -> str:
    tok = _tokenizer(path)
    ids = ChatFormatter(tok).encode(history)
    return str(tok.decode(ids))  # type: ignore[attr-defined]


def test_qwen3_template_leaves_earlier_thoughts_out(qwen_dir: Path) -> None:
    history = (
        ChatMessage("user", "What is 2+2?"),
        ChatMessage("assistant", "It is 4.", reasoning="\nadd two and two\n"),
        ChatMessage("user", "And 3+3?"),
    )
    prompt = _rendered(qwen_dir, history)
    assert "It is 4." in prompt and "add two and two" not in prompt
    # The reply being continued keeps its unfinished thought open for the model.
    going = (history[0], ChatMessage("assistant", "", reasoning="\nadd two"))
    assert _rendered(qwen_dir, going).endswith("<|im_start|>assistant\n<think>\nadd two")
    done = (history[0], ChatMessage("assistant", "\n\nIt is", reasoning="\nadd two\n"))
    assert _rendered(qwen_dir, done).endswith("<think>\nadd two\n</think>\n\nIt is")


def test_qwen3_template_keeps_the_thought_of_the_current_turn(qwen_dir: Path) -> None:
    # After the last user message (tool calls, say), Qwen3's template keeps it.
    history = (
        ChatMessage("user", "Q"),
        ChatMessage("assistant", "partial answer", reasoning="\nmy thought\n"),
        ChatMessage("assistant", "more"),
    )
    prompt = _rendered(qwen_dir, history)
    assert "<think>\nmy thought\n</think>\n\npartial answer" in prompt


def test_r1_template_cuts_earlier_thoughts_itself(r1_dir: Path) -> None:
    history = (
        ChatMessage("user", "Q1"),
        ChatMessage("assistant", "\n\nA1", reasoning="\nsecret plan\n"),
        ChatMessage("user", "Q2"),
    )
    prompt = _rendered(r1_dir, history)
    assert "A1" in prompt and "secret plan" not in prompt
    assert prompt.endswith("<|im_start|>assistant\n<think>\n")


def test_a_template_that_keeps_thoughts_gets_them_inline(qwen_dir: Path, tmp_path: Path) -> None:
    # The tiny model's plain ChatML template with think tokens: nothing is stripped here.
    from tests.tiny_model import CHAT_TEMPLATE

    keeper = build_thinking_model(qwen_dir, tmp_path / "keeper", CHAT_TEMPLATE)
    history = (
        ChatMessage("user", "Q1"),
        ChatMessage("assistant", "A1", reasoning="kept thought"),
        ChatMessage("user", "Q2"),
    )
    assert "<think>kept thought</think>A1" in _rendered(keeper, history)


# -- the split on a real tokenizer's stream --------------------------------------------------


def test_the_split_on_the_real_token_stream(qwen_dir: Path) -> None:
    tok = _tokenizer(qwen_dir)
    reply = "<think>\nTwo and two make four.\n</think>\n\nIt is 4."
    ids = tok(reply, add_special_tokens=False)["input_ids"]  # type: ignore[operator]
    close_at = ids.index(tok.convert_tokens_to_ids("</think>"))  # type: ignore[attr-defined]

    def decode(chunk: list[int]) -> str:  # as the local backend decodes
        return str(tok.decode(chunk, skip_special_tokens=True))  # type: ignore[attr-defined]

    decoder = IncrementalDecoder(decode, [], ())
    tracker = ThoughtTracker(detect_thinking(tok).fmt)  # type: ignore[union-attr]
    pieces = []
    for n, token in enumerate(ids, start=1):  # one token per chunk, as the engine streams
        pieces += tracker.feed(decoder.push([token]), n)
    pieces += tracker.flush(len(ids))
    assert "".join(p.text for p in pieces if p.thinking) == "\nTwo and two make four.\n"
    assert "".join(p.text for p in pieces if not p.thinking) == "\n\nIt is 4."
    assert tracker.tokens == close_at + 1  # the markers count as thinking tokens


# -- a whole reply on the local engine --------------------------------------------------------


@pytest.mark.parametrize("path", ["generate", "fast"])
def test_local_reply_opened_by_the_template_is_a_thought(
    r1_dir: Path, tmp_path: Path, path: str
) -> None:
    """Both decode paths (transformers' generate, and the FastDecoder) stream the thought."""
    options = LoadOptions(device="cpu", dtype="float32", compile=path == "fast")
    backend = LocalBackend(str(r1_dir), options, fast_path="eager" if path == "fast" else "off")
    backend.load()
    assert backend.fast_path_active == (path == "fast")
    try:
        assert backend.info is not None and backend.info.thinking is not None
        state = _state(tmp_path)
        shown: list[str] = []
        outcome = run_reply(state, backend, "Hi", on_chunk=shown.append)
    finally:
        backend.close()
    msg = outcome.message
    stats = outcome.stats
    assert stats is not None and stats.generated_tokens == GREEDY.max_new_tokens
    # The random model never closes its thought: everything it wrote is thinking.
    assert msg.thinking and msg.content == "" and shown == []
    assert "<think>" not in msg.thinking
    assert stats.thinking_tokens == stats.generated_tokens and stats.thinking_s is not None
    again = load_journal(state.recorder.path)  # type: ignore[union-attr]
    assert again.messages[-1].thinking == msg.thinking
    saved = GenerationStats.from_dict(again.messages[-1].stats)
    assert saved is not None and saved.thinking_tokens == stats.thinking_tokens


# -- the remote backend ---------------------------------------------------------------------


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_remote_reasoning_fields_become_the_thought(tmp_path: Path, field: str) -> None:
    script = reasoning_script(["Let me", " think", "."], ["The answer", " is 4."], field=field)
    with ScriptedServer(script) as srv:
        backend = RemoteBackend(srv.url)
        backend.load()
        state = _state(tmp_path)
        shown: list[str] = []
        first = run_reply(state, backend, "2+2?", on_chunk=shown.append)
        run_reply(state, backend, "And 3+3?")
        sent = sent_messages(srv)
    msg = first.message
    assert msg.thinking == "Let me think." and msg.content == "The answer is 4."
    assert "".join(shown) == "The answer is 4."  # the answer alone reaches the output
    stats = first.stats
    assert stats is not None and stats.generated_tokens == 5 and stats.thinking_tokens == 3
    # The thought is not sent back: the server's template gets the answer alone.
    assert sent[1][1] == {"role": "assistant", "content": "The answer is 4."}
    assert all("reasoning" not in str(m) for m in sent[1])


def test_remote_inline_think_tags_are_split_too(tmp_path: Path) -> None:
    # A server without a reasoning parser (llama.cpp's --reasoning-format none) streams them.
    script = reasoning_script([], ["<think>", "hmm", "</think>", "\n\nDone."])
    with ScriptedServer(script) as srv:
        backend = RemoteBackend(srv.url)
        backend.load()
        outcome = run_reply(_state(tmp_path), backend, "Go")
    assert outcome.message.thinking == "hmm" and outcome.message.content == "\n\nDone."


def test_remote_cancel_during_the_thought_keeps_it(tmp_path: Path) -> None:
    """Cancelled (Esc) while the server is still thinking: the thought so far is kept, the
    reply is stopped, and the connection is closed (which stops the server)."""
    cancel = threading.Event()

    def script(srv: ScriptedServer, h: BaseHTTPRequestHandler, req: Received) -> None:
        if req.path == "/v1/models":
            send_json(h, 200, models_list("thinker"))
            return
        start_sse(h)
        for piece in ("one", " two"):
            h.wfile.write(reasoning_delta(piece))
        h.wfile.flush()
        wait_for_disconnect(srv, h, 30)  # still thinking, until the client goes away

    with ScriptedServer(script) as srv:
        backend = RemoteBackend(srv.url)
        backend.load()
        state = _state(tmp_path)

        def esc_once_thought_arrived() -> None:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                msgs = state.conversation.messages
                if msgs and msgs[-1].thinking == "one two":
                    break
                time.sleep(0.01)
            cancel.set()

        presser = threading.Thread(target=esc_once_thought_arrived, daemon=True)
        presser.start()
        outcome = run_reply(state, backend, "Go", cancel=cancel)
        presser.join(5)
        assert srv.client_gone.wait(10)
    assert outcome.status == "stopped"
    assert outcome.message.thinking == "one two" and outcome.message.content == ""
    reloaded = load_journal(state.recorder.path)  # type: ignore[union-attr]
    assert reloaded.messages[-1].thinking == "one two"


def test_headless_prints_the_answer_and_json_adds_the_thought(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import json

    from llama_tui.cli import main as cli

    script = reasoning_script(["Paris is", " the capital."], ["Paris"])
    with ScriptedServer(script) as srv:
        assert cli.main(["--prompt", "Capital?", "--server", srv.url]) == 0
        out, _ = capsys.readouterr()
        assert out == "Paris\n"  # stdout is the answer alone, as without a thought
        assert cli.main(["--prompt", "Capital?", "--server", srv.url, "--json"]) == 0
        obj = json.loads(capsys.readouterr().out)
    assert obj["reply"] == "Paris" and obj["thinking"] == "Paris is the capital."
    assert obj["stats"]["thinking_tokens"] == 2 and obj["stats"]["new_tokens"] == 3


@pytest.fixture(scope="module")
def thinking_tserve(
    r1_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TransformersServer]:
    """`transformers serve` on the R1-style tiny model, streaming `reasoning_content`."""
    reason = serving_missing()
    if reason:
        pytest.skip(reason)
    model = tmp_path_factory.mktemp("served") / "r1"
    shutil.copytree(r1_dir, model)
    with transformers_server(
        with_response_template(model), tmp_path_factory.mktemp("tserve") / "log.txt"
    ) as server:
        yield server


def test_transformers_serve_reasoning_content_is_the_thought(
    thinking_tserve: TransformersServer, tmp_path: Path
) -> None:
    """A real OpenAI-compatible server: its `reasoning_content` deltas become the thought."""
    backend = RemoteBackend(thinking_tserve.url)
    backend.load()
    state = _state(tmp_path)
    shown: list[str] = []
    first = run_reply(state, backend, "Hi", on_chunk=shown.append)
    run_reply(state, backend, "Again")
    msg, stats = first.message, first.stats
    # The template opened the thought and the random model never closes it.
    assert msg.thinking and msg.content == "" and shown == []
    assert "<think>" not in msg.thinking and "</think>" not in msg.thinking
    assert stats is not None and 0 < stats.thinking_tokens <= stats.generated_tokens
    assert state.conversation.messages[-1].thinking  # the second reply thought as well


def test_special_think_tokens_are_kept_when_decoding(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Where the tokenizer counts the markers special, the reply's decode keeps them (and
    only them): otherwise the thought would run into the answer."""
    special = build_thinking_model(
        tiny_model_dir, tmp_path / "special", QWEN3_TEMPLATE, special=True
    )
    tok = _tokenizer(special)
    history = detect_thinking(tok)
    assert history is not None
    decode = marker_decoder(tok, history)
    assert decode is not None
    assert marker_decoder(_tokenizer(tmp_path / "special"), None) is None
    ids = tok("<think>hm</think>ok<|im_end|>", add_special_tokens=False)["input_ids"]  # type: ignore[operator]
    plain = str(tok.decode(ids, skip_special_tokens=True))  # type: ignore[attr-defined]
    assert "<think>" not in plain  # what the usual decode would show: no way to split
    assert decode(ids) == "<think>hm</think>ok"
    tracker = ThoughtTracker(history.fmt)
    pieces = [p for n, i in enumerate(ids, 1) for p in tracker.feed(decode([i]), n)]
    assert "".join(p.text for p in pieces if p.thinking) == "hm"
    assert "".join(p.text for p in pieces if not p.thinking) == "ok"


def test_plain_added_think_tokens_need_no_special_decode(qwen_dir: Path) -> None:
    tok = _tokenizer(qwen_dir)
    assert marker_decoder(tok, detect_thinking(tok)) is None

"""Token logprobs from a server, over real HTTP on loopback: a server that sends them (the
OpenAI shape vLLM and llama.cpp use), one that ignores the request (the real `transformers
serve`), and one that refuses it. Never a made-up number."""

from __future__ import annotations

import json
import math
import threading
from http.server import BaseHTTPRequestHandler
from typing import Any

from llama_tui.core.backend import ChatMessage
from llama_tui.core.params import GenerationParams
from llama_tui.engine.remote.backend import RemoteBackend
from llama_tui.engine.remote.logprobs import NO_LOGPROBS, REFUSED
from tests.engine.remote_server import (
    Received,
    ScriptedServer,
    TransformersServer,
    models_list,
    send_json,
    sse_chunk,
    start_sse,
)

HISTORY = [ChatMessage("user", "Capital of France?")]
PARAMS = GenerationParams(do_sample=False, max_new_tokens=8, logprobs=2)
WORDS = [("The", -0.01), (" capital", -0.2), (" is", -0.05), (" Paris", -0.3), (".", -1.2)]


def lp_event(token: str, value: float) -> bytes:
    top = [
        {"token": token, "logprob": value, "bytes": list(token.encode())},
        {"token": " Lyon", "logprob": value - 2.0, "bytes": None},
        {"token": "x", "logprob": float("nan")},
    ]  # damaged: skipped
    obj = {
        "object": "chat.completion.chunk",
        "choices": [
            {
                "index": 0,
                "delta": {"content": token},
                "finish_reason": None,
                "logprobs": {
                    "content": [
                        {"token": token, "logprob": value, "bytes": None, "top_logprobs": top}
                    ]
                },
            }
        ],
    }
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def serve(script: Any) -> ScriptedServer:
    def handler(srv: ScriptedServer, h: BaseHTTPRequestHandler, req: Received) -> None:
        if req.path == "/v1/models":
            send_json(h, 200, models_list("m"))
        else:
            script(srv, h, req)

    return ScriptedServer(handler)


def run(url: str, params: GenerationParams = PARAMS) -> tuple[str, Any]:
    backend = RemoteBackend(url)
    backend.load()
    gen = backend.stream(HISTORY, params, threading.Event())
    text = gen.text()
    return text, gen.token_log


def test_a_server_that_sends_logprobs() -> None:
    def script(srv: ScriptedServer, h: BaseHTTPRequestHandler, req: Received) -> None:
        start_sse(h)
        for token, value in WORDS:
            h.wfile.write(lp_event(token, value))
        h.wfile.write(sse_chunk(finish="stop"))
        h.wfile.write(b"data: [DONE]\n\n")

    with serve(script) as srv:
        text, log = run(srv.url)
        body = srv.requests[-1].json()
    assert body["logprobs"] is True and body["top_logprobs"] == 2
    assert text == "The capital is Paris."
    assert log is not None and log.source == "remote" and log.unavailable is None
    assert log.text() == text
    for tok, (word, value) in zip(log.tokens, WORDS, strict=True):
        assert tok.id is None and tok.text == word and math.isclose(tok.logprob, value)
        assert [c.text for c in tok.top] == [word, " Lyon"]  # the NaN entry is dropped


def test_a_server_without_logprobs_says_so() -> None:
    def script(srv: ScriptedServer, h: BaseHTTPRequestHandler, req: Received) -> None:
        start_sse(h)
        for token, _ in WORDS:
            h.wfile.write(sse_chunk(token))
        h.wfile.write(sse_chunk(finish="stop"))

    with serve(script) as srv:
        text, log = run(srv.url)
    assert text == "The capital is Paris."
    assert log is not None and log.tokens == [] and log.unavailable == NO_LOGPROBS


def test_a_server_that_refuses_logprobs_is_asked_again_without() -> None:
    def script(srv: ScriptedServer, h: BaseHTTPRequestHandler, req: Received) -> None:
        if "logprobs" in req.json():
            send_json(h, 422, {"error": {"message": "logprobs is not supported"}})
            return
        start_sse(h)
        h.wfile.write(sse_chunk("Paris"))
        h.wfile.write(sse_chunk(finish="stop"))

    with serve(script) as srv:
        text, log = run(srv.url)
        assert len(srv.requests) == 3  # models, refused, retried
    assert text == "Paris"
    assert log is not None and log.unavailable == REFUSED and not log.tokens


def test_off_asks_for_nothing() -> None:
    def script(srv: ScriptedServer, h: BaseHTTPRequestHandler, req: Received) -> None:
        start_sse(h)
        h.wfile.write(sse_chunk("Hi", finish="stop"))

    with serve(script) as srv:
        _, log = run(srv.url, PARAMS.with_changes(logprobs=0))
        assert "logprobs" not in srv.requests[-1].json()
    assert log is None


def test_transformers_serve(tserve: TransformersServer) -> None:
    """The real server: whatever it does with the request, the reply comes and any number
    shown is one it sent."""
    text, log = run(tserve.url)
    assert log is not None
    if log.tokens:
        assert all(t.logprob <= 0 for t in log.tokens)
    else:
        assert log.unavailable == NO_LOGPROBS
    assert isinstance(text, str)

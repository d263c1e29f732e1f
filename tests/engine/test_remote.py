"""Tests of the remote backend against real servers on 127.0.0.1.

The main server is `transformers serve` on the tiny random Llama (session-scoped: it starts
once, in about ten seconds on a small CPU box). Shapes it cannot produce on demand (a stall,
a 500, a 401, a malformed stream) come from a scripted `http.server`, also a real HTTP server
on loopback. Pure helpers (SSE parsing, parameter mapping, message cleaning) are unit-tested
directly. Nothing here talks to any address but 127.0.0.1.
"""

from __future__ import annotations

import itertools
import json
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from llama_tui.core.backend import Backend, ChatMessage, Generation, StopReason
from llama_tui.core.errors import GenerationError, InvalidModelSpecError, ModelError, RemoteError
from llama_tui.core.params import GenerationParams
from llama_tui.engine.remote import stream as remote_stream
from llama_tui.engine.remote.backend import RemoteBackend
from llama_tui.engine.remote.http import RemoteParameterError
from llama_tui.engine.remote.stream import _RunState, iter_events
from llama_tui.engine.remote.wire import (
    build_request_body,
    display_url,
    estimate_tokens,
    map_finish_reason,
    normalize_base_url,
    rejected_settings,
    server_message,
)
from llama_tui.engine.stops import StopFilter
from tests.engine.remote_server import (
    LOOPBACK,
    Received,
    ScriptedServer,
    TransformersServer,
    free_port,
    models_list,
    send_json,
    serving_missing,
    sse_chunk,
    start_sse,
    wait_for_disconnect,
)

HI = (ChatMessage("user", "Hi"),)
GREEDY = GenerationParams(do_sample=False, top_k=0, max_new_tokens=12)
KEY_ENV = "LLAMA_TUI_API_KEY"


def collect(gen: Generation) -> tuple[list[str], BaseException | None]:
    """Iterate a generation to the end; return its chunks and the error it raised, if any."""
    chunks: list[str] = []
    try:
        for c in gen:
            chunks.append(c)
    except RemoteError as exc:
        return chunks, exc
    return chunks, None


# ---------------------------------------------------------------------------------------
# Fixtures: a client of the real transformers server (`tserve`, in tests/conftest.py)


@pytest.fixture
def remote(tserve: TransformersServer) -> Iterator[RemoteBackend]:
    backend = RemoteBackend(tserve.url, timeout_s=30)
    backend.load()
    yield backend
    backend.close()


# ---------------------------------------------------------------------------------------
# Against transformers serve


def test_is_a_backend(remote: RemoteBackend) -> None:
    assert isinstance(remote, Backend)
    assert remote.memory().label == "remote"
    assert remote.memory().used_bytes == 0


def test_models_listing_and_load(tserve: TransformersServer) -> None:
    backend = RemoteBackend(tserve.url + "/v1/")  # the /v1 suffix and slash are optional
    assert backend.list_models() == [tserve.model_id]
    stages: list[str] = []
    info = backend.load(lambda p: stages.append(p.stage.value))
    assert stages == ["resolve", "ready"]
    assert info.backend == "remote"
    assert info.device == f"remote {LOOPBACK}:{tserve.port}"
    assert info.name == Path(tserve.model_id).name
    assert backend.info is info
    # Asking for a model the server does not list names what it does serve.
    with pytest.raises(ModelError) as err:
        RemoteBackend(tserve.url, model="not-served/x").load()
    assert "not-served/x" in str(err.value) and tserve.model_id in str(err.value)
    # The one it lists is accepted by name.
    assert RemoteBackend(tserve.url, model=tserve.model_id).load().backend == "remote"


def test_streaming_greedy_reply(remote: RemoteBackend, tserve: TransformersServer) -> None:
    gen = remote.stream(HI, GREEDY, threading.Event())
    chunks = list(gen)
    assert len(chunks) > 1 and all(chunks)  # streamed chunk by chunk, no empty chunks
    text = "".join(chunks)
    assert text
    stats = gen.stats
    assert stats is not None
    assert stats.stop_reason in (StopReason.LENGTH, StopReason.EOS)
    assert stats.prompt_tokens > 0  # from the server's usage
    assert 0 < stats.generated_tokens <= GREEDY.max_new_tokens
    assert stats.ttft_s is not None and stats.ttft_s < 10
    assert stats.error is None
    # Greedy is deterministic, and streaming gives what the non-streaming endpoint gives.
    assert remote.stream(HI, GREEDY, threading.Event()).text() == text
    body = {
        "model": tserve.model_id,
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": GREEDY.max_new_tokens,
        "temperature": 0.0,
    }
    plain = httpx.post(f"{tserve.url}/v1/chat/completions", json=body, timeout=30).json()
    whole = plain["choices"][0]["message"]["content"]
    # transformers serve's streamer holds back an incomplete UTF-8 sequence and drops it at
    # the end, where the non-streaming reply shows it as U+FFFD: compare up to that.
    assert whole.startswith(text)
    assert set(whole[len(text) :]) <= {"\ufffd"}


def test_max_tokens_gives_length(remote: RemoteBackend) -> None:
    gen = remote.stream(HI, GREEDY.with_changes(max_new_tokens=5), threading.Event())
    gen.text()
    assert gen.stats is not None
    assert gen.stats.stop_reason is StopReason.LENGTH
    assert gen.stats.generated_tokens == 5  # the server's own count (usage)


def test_seed_round_trip(remote: RemoteBackend) -> None:
    sampled = remote.default_params().with_changes(temperature=1.0, max_new_tokens=16)

    def reply(seed: int) -> str:
        return remote.stream(HI, sampled.with_changes(seed=seed), threading.Event()).text()

    first = reply(3)
    assert reply(3) == first  # the server received and used the seed
    assert reply(4) != first


def test_stop_string(remote: RemoteBackend) -> None:
    full = remote.stream(HI, GREEDY, threading.Event()).text()
    assert len(full) > 3
    stop = full[2]  # a character inside the greedy reply: greedy stops at its first copy
    gen = remote.stream(HI, GREEDY.with_changes(stop=(stop,)), threading.Event())
    text = gen.text()
    assert gen.stats is not None and gen.stats.stop_reason is StopReason.STOP_STRING
    assert text == full[: full.index(stop)]  # like the local backend: the string is dropped


def test_rejected_parameters_are_reported(remote: RemoteBackend) -> None:
    # transformers serve rejects the non-standard sampling fields with 422.
    params = remote.default_params().with_changes(top_k=5, min_p=0.1, max_new_tokens=4)
    gen = remote.stream(HI, params, threading.Event())
    chunks, err = collect(gen)
    assert chunks == []
    assert isinstance(err, RemoteParameterError)
    assert set(err.parameters) == {"top_k", "min_p"}
    assert "top_k" in err.cause and "Unexpected fields" in err.cause  # the server's message
    assert gen.stats is not None and gen.stats.stop_reason is StopReason.ERROR
    # Turning them off (our remote defaults) works on the same backend.
    assert remote.stream(
        HI, remote.default_params().with_changes(max_new_tokens=4), threading.Event()
    ).text()


def test_cancel_closes_stream_and_next_request_works(remote: RemoteBackend) -> None:
    cancel = threading.Event()
    params = remote.default_params().with_changes(max_new_tokens=200, seed=1, temperature=1.0)
    gen = remote.stream(HI, params, cancel)
    got: list[str] = []
    t_cancel = 0.0
    for chunk in gen:
        got.append(chunk)
        if len(got) == 2:
            cancel.set()
            t_cancel = time.perf_counter()
    latency = time.perf_counter() - t_cancel
    assert len(got) == 2  # nothing after the cancel
    assert latency < 0.5
    assert gen.stats is not None and gen.stats.stop_reason is StopReason.CANCELLED
    assert remote.stream(HI, GREEDY, threading.Event()).text()


def test_count_tokens_falls_back_to_estimate(remote: RemoteBackend) -> None:
    # transformers serve has no tokenizer endpoint: an estimate, marked approximate.
    n = remote.count_tokens(HI)
    assert n == estimate_tokens(HI)
    assert remote.token_count_approximate


def test_server_killed_mid_stream(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A dedicated server, SIGKILLed after the first chunk: the partial reply is kept."""
    reason = serving_missing()
    if reason:
        pytest.skip(reason)
    server = TransformersServer(tiny_model_dir, tmp_path / "log.txt")
    server.start()
    try:
        backend = RemoteBackend(server.url)
        backend.load()
        params = backend.default_params().with_changes(max_new_tokens=200, seed=7, temperature=1.0)
        full = list(backend.stream(HI, params, threading.Event()))
        assert len(full) > 20  # long enough that the kill lands mid-reply
        gen = backend.stream(HI, params, threading.Event())
        got: list[str] = []
        with pytest.raises(RemoteError) as err:
            for chunk in gen:
                got.append(chunk)
                if len(got) == 1:
                    server.kill()
        assert 1 <= len(got) < len(full)
        assert got == full[: len(got)]  # same seed: the partial text is a true prefix
        assert "mid-reply" in str(err.value)
        assert gen.stats is not None and gen.stats.stop_reason is StopReason.ERROR
        assert gen.stats.error and "mid-reply" in gen.stats.error
        # After the crash: a clear "nothing listening" message.
        with pytest.raises(RemoteError, match="nothing listening"):
            backend.stream(HI, params, threading.Event()).text()
    finally:
        server.stop()


# ---------------------------------------------------------------------------------------
# Errors, against scripted loopback servers


def _chat(script: Any) -> Any:
    """A handler: /v1/models lists "m"; POST /v1/chat/completions runs `script`."""

    def handler(srv: ScriptedServer, h: BaseHTTPRequestHandler, req: Received) -> None:
        if req.path == "/v1/models":
            send_json(h, 200, models_list("m"))
        else:
            script(srv, h, req)

    return handler


def _loaded(srv: ScriptedServer, **kw: Any) -> RemoteBackend:
    backend = RemoteBackend(srv.url, **kw)
    backend.load()
    return backend


def test_unreachable_port() -> None:
    port = free_port()
    backend = RemoteBackend(f"http://{LOOPBACK}:{port}")
    with pytest.raises(RemoteError) as err:
        backend.load()
    assert str(err.value).startswith(
        f"nothing listening at http://{LOOPBACK}:{port}: is the server running?"
    )


def test_connection_refused_during_stream() -> None:
    with ScriptedServer(_chat(lambda *a: None)) as srv:
        backend = _loaded(srv)
    gen = backend.stream(HI, GREEDY, threading.Event())  # the server is gone now
    chunks, err = collect(gen)
    assert chunks == [] and err is not None and "nothing listening" in str(err)
    assert gen.stats is not None and gen.stats.stop_reason is StopReason.ERROR


def test_500_with_message_is_cleaned_and_limited() -> None:
    nasty = "CUDA out of memory \x1b]52;c;ZXZpbA==\x07 [b]bold" + " more" * 500

    def script(srv: ScriptedServer, h: BaseHTTPRequestHandler, req: Received) -> None:
        send_json(h, 500, {"error": {"message": nasty, "type": "InternalServerError"}})

    with ScriptedServer(_chat(script)) as srv:
        gen = _loaded(srv).stream(HI, GREEDY, threading.Event())
        chunks, err = collect(gen)
    assert chunks == [] and isinstance(err, RemoteError)
    msg = str(err)
    assert "500" in msg and "CUDA out of memory" in msg
    assert "\x1b" not in msg and "\x07" not in msg
    assert len(err.cause) < 450
    assert gen.stats is not None and gen.stats.error == err.cause


def test_html_error_page() -> None:
    def script(srv: ScriptedServer, h: BaseHTTPRequestHandler, req: Received) -> None:
        page = b"<html><body>" + b"x" * 200_000 + b"</body></html>"
        h.send_response(502)
        h.send_header("Content-Type", "text/html")
        h.send_header("Content-Length", str(len(page)))
        h.end_headers()
        h.wfile.write(page)

    with ScriptedServer(_chat(script)) as srv:
        _, err = collect(_loaded(srv).stream(HI, GREEDY, threading.Event()))
    assert err is not None and "502" in str(err) and "HTML error page" in str(err)


@pytest.mark.parametrize("key", [None, "sk-test-secret-4242"])
def test_401_names_the_variable_never_the_key(
    key: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if key:
        monkeypatch.setenv(KEY_ENV, key)

    def handler(srv: ScriptedServer, h: BaseHTTPRequestHandler, req: Received) -> None:
        # A careless server that echoes the header back in its error message.
        auth = req.headers.get("Authorization", "")
        send_json(h, 401, {"error": {"message": f"invalid key {auth} / {key}"}})

    with ScriptedServer(handler) as srv:
        with pytest.raises(RemoteError) as err:
            RemoteBackend(srv.url).load()
        sent = srv.requests[0].headers.get("Authorization")
    msg = str(err.value)
    assert "401" in msg and KEY_ENV in msg
    if key:
        assert sent == f"Bearer {key}"  # the key is sent...
        assert key not in msg  # ...and never shown
        assert "refused the API key" in msg
    else:
        assert sent is None
        assert "needs an API key" in msg


def test_api_key_sent_on_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_KEY_VAR", "k-123")

    def script(srv: ScriptedServer, h: BaseHTTPRequestHandler, req: Received) -> None:
        start_sse(h)
        h.wfile.write(sse_chunk("ok") + sse_chunk(finish="stop") + b"data: [DONE]\n\n")

    with ScriptedServer(_chat(script)) as srv:
        backend = _loaded(srv, api_key_env="MY_KEY_VAR")
        assert backend.stream(HI, GREEDY, threading.Event()).text() == "ok"
        assert [r.headers.get("Authorization") for r in srv.requests] == ["Bearer k-123"] * 2


def test_rejected_parameter_openai_shape_and_settings_received() -> None:
    def script(srv: ScriptedServer, h: BaseHTTPRequestHandler, req: Received) -> None:
        send_json(
            h,
            400,
            {"error": {"message": "unsupported sampling option", "param": "repetition_penalty"}},
        )

    params = GenerationParams(
        temperature=0.5, top_p=0.9, top_k=0, repetition_penalty=1.3, seed=11, stop=("###",)
    )
    with ScriptedServer(_chat(script)) as srv:
        gen = _loaded(srv).stream(HI, params, threading.Event())
        _, err = collect(gen)
        sent = srv.requests[-1].json()
    assert isinstance(err, RemoteParameterError)
    assert err.parameters == ("repetition_penalty",)
    assert "unsupported sampling option" in str(err)
    # What the server received: every setting, mapped.
    assert sent["temperature"] == 0.5 and sent["top_p"] == 0.9 and sent["seed"] == 11
    assert sent["repetition_penalty"] == 1.3 and sent["stop"] == ["###"]
    assert sent["max_tokens"] == params.max_new_tokens and sent["stream"] is True
    assert "top_k" not in sent and "min_p" not in sent


def test_stream_options_rejected_is_retried_without() -> None:
    def script(srv: ScriptedServer, h: BaseHTTPRequestHandler, req: Received) -> None:
        if "stream_options" in req.json():
            send_json(h, 400, {"error": "stream_options: unknown field"})
            return
        start_sse(h)
        h.wfile.write(sse_chunk("fine") + sse_chunk(finish="stop") + b"data: [DONE]\n\n")

    with ScriptedServer(_chat(script)) as srv:
        backend = _loaded(srv)
        assert backend.stream(HI, GREEDY, threading.Event()).text() == "fine"
        assert backend.stream(HI, GREEDY, threading.Event()).text() == "fine"
        posts = [r.json() for r in srv.requests if r.method == "POST"]
    assert ["stream_options" in p for p in posts] == [True, False, False]


def test_slow_server_times_out_keeping_partial_text() -> None:
    def script(srv: ScriptedServer, h: BaseHTTPRequestHandler, req: Received) -> None:
        start_sse(h)
        h.wfile.write(b": keep-alive\n\n" + sse_chunk("Hel") + sse_chunk("lo"))
        h.wfile.flush()
        srv.release.wait(10)  # then stall (bounded; released at teardown)

    with ScriptedServer(_chat(script)) as srv:
        backend = _loaded(srv, timeout_s=0.5)
        t0 = time.perf_counter()
        gen = backend.stream(HI, GREEDY, threading.Event())
        chunks, err = collect(gen)
        elapsed = time.perf_counter() - t0
    assert "".join(chunks) == "Hello"
    assert isinstance(err, RemoteError) and "sent nothing for 0.5 s" in str(err)
    assert 0.4 < elapsed < 5
    assert gen.stats is not None and gen.stats.stop_reason is StopReason.ERROR
    assert gen.stats.generated_tokens == 2


def test_server_that_never_answers_times_out() -> None:
    with ScriptedServer(_chat(lambda srv, h, req: srv.release.wait(10))) as srv:
        gen = _loaded(srv, timeout_s=0.5).stream(HI, GREEDY, threading.Event())
        t0 = time.perf_counter()
        _, err = collect(gen)
    assert err is not None and "sent nothing" in str(err)
    assert time.perf_counter() - t0 < 5


@pytest.mark.parametrize("headers_sent", [True, False])
def test_cancel_a_stalled_stream_is_prompt(headers_sent: bool) -> None:
    """Cancel wakes a blocked read at once and the server sees the connection close."""

    def script(srv: ScriptedServer, h: BaseHTTPRequestHandler, req: Received) -> None:
        if headers_sent:
            start_sse(h)
            h.wfile.write(sse_chunk("partial"))
            h.wfile.flush()
        wait_for_disconnect(srv, h, limit_s=10)

    with ScriptedServer(_chat(script)) as srv:
        backend = _loaded(srv, timeout_s=30)  # far longer than the test may take
        cancel = threading.Event()
        timer = threading.Timer(0.3, cancel.set)
        timer.start()
        t0 = time.perf_counter()
        gen = backend.stream(HI, GREEDY, cancel)
        chunks, err = collect(gen)
        elapsed = time.perf_counter() - t0
        timer.cancel()
        assert srv.client_gone.wait(5)  # the server saw us go: that is what stops it
    assert err is None
    assert chunks == (["partial"] if headers_sent else [])
    assert elapsed < 1.5
    assert gen.stats is not None and gen.stats.stop_reason is StopReason.CANCELLED


def test_abandoned_generation_closes_connection() -> None:
    def script(srv: ScriptedServer, h: BaseHTTPRequestHandler, req: Received) -> None:
        start_sse(h)
        h.wfile.write(sse_chunk("a") + sse_chunk("b"))
        h.wfile.flush()
        wait_for_disconnect(srv, h, limit_s=10)

    with ScriptedServer(_chat(script)) as srv:
        gen = _loaded(srv).stream(HI, GREEDY, threading.Event())
        it = iter(gen)
        assert next(it) == "a"
        it.close()  # type: ignore[attr-defined]  # the caller stops iterating
        assert srv.client_gone.wait(5)
    assert gen.stats is not None and gen.stats.stop_reason is StopReason.CANCELLED


@pytest.mark.parametrize("shape", ["close-delimited", "chunked-abort"])
def test_stream_cut_off(shape: str) -> None:
    def script(srv: ScriptedServer, h: BaseHTTPRequestHandler, req: Received) -> None:
        if shape == "close-delimited":
            start_sse(h)
            h.wfile.write(sse_chunk("Par") + sse_chunk("tial") + b'data: {"choi')
        else:
            h.protocol_version = "HTTP/1.1"
            h.send_response(200)
            h.send_header("Content-Type", "text/event-stream")
            h.send_header("Transfer-Encoding", "chunked")
            h.end_headers()
            data = sse_chunk("Par") + sse_chunk("tial")
            h.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            h.wfile.flush()
        h.close_connection = True

    with ScriptedServer(_chat(script)) as srv:
        gen = _loaded(srv).stream(HI, GREEDY, threading.Event())
        chunks, err = collect(gen)
    assert "".join(chunks) == "Partial"
    assert isinstance(err, RemoteError) and "mid-reply" in str(err)
    assert "partial reply is kept" in err.fix
    assert gen.stats is not None and gen.stats.stop_reason is StopReason.ERROR


def test_error_event_mid_stream() -> None:
    def script(srv: ScriptedServer, h: BaseHTTPRequestHandler, req: Received) -> None:
        start_sse(h)
        h.wfile.write(sse_chunk("so far") + b'data: {"error": "generation crashed"}\n\n')

    with ScriptedServer(_chat(script)) as srv:
        gen = _loaded(srv).stream(HI, GREEDY, threading.Event())
        chunks, err = collect(gen)
    assert chunks == ["so far"]
    assert err is not None and "generation crashed" in str(err)
    assert gen.stats is not None and gen.stats.stop_reason is StopReason.ERROR


def test_event_that_is_not_json() -> None:
    def script(srv: ScriptedServer, h: BaseHTTPRequestHandler, req: Received) -> None:
        start_sse(h)
        h.wfile.write(sse_chunk("x") + b"data: <html>oops\n\n")

    with ScriptedServer(_chat(script)) as srv:
        chunks, err = collect(_loaded(srv).stream(HI, GREEDY, threading.Event()))
    assert chunks == ["x"] and err is not None and "not JSON" in str(err)


def test_usage_stats_and_vllm_stop_reason() -> None:
    def script(srv: ScriptedServer, h: BaseHTTPRequestHandler, req: Received) -> None:
        start_sse(h)
        # Split a CRLF event stream at awkward places, with a keep-alive comment between.
        data = (
            sse_chunk("A")
            + b": ping\n\n"
            + sse_chunk("B")
            + b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop",'
            b'"stop_reason":"</s>"}]}\n\n'
            + b'data: {"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2}}\n\n'
            + b"data: [DONE]\n\n"
        ).replace(b"\n", b"\r\n")
        for i in range(0, len(data), 7):
            h.wfile.write(data[i : i + 7])
            h.wfile.flush()

    with ScriptedServer(_chat(script)) as srv:
        gen = _loaded(srv).stream(HI, GREEDY.with_changes(stop=("</s>",)), threading.Event())
        assert gen.text() == "AB"
    assert gen.stats is not None
    assert gen.stats.stop_reason is StopReason.STOP_STRING
    assert (gen.stats.prompt_tokens, gen.stats.generated_tokens) == (9, 2)


def test_tokenize_endpoint_is_used_when_present() -> None:
    def handler(srv: ScriptedServer, h: BaseHTTPRequestHandler, req: Received) -> None:
        if req.path == "/v1/models":
            send_json(h, 200, {"data": [{"id": "m", "max_model_len": 8192}]})
        elif req.path == "/tokenize":
            send_json(h, 200, {"count": 42, "tokens": [], "max_model_len": 8192})

    with ScriptedServer(handler) as srv:
        backend = _loaded(srv)
        assert backend.info is not None and backend.info.context_length == 8192
        assert backend.count_tokens(HI) == 42
        assert not backend.token_count_approximate
        assert srv.requests[-1].json()["messages"] == [{"role": "user", "content": "Hi"}]


def test_not_an_openai_server() -> None:
    def handler(srv: ScriptedServer, h: BaseHTTPRequestHandler, req: Received) -> None:
        send_json(h, 404, {"detail": "Not Found"})

    with ScriptedServer(handler) as srv, pytest.raises(RemoteError) as err:
        RemoteBackend(srv.url).load()
    assert "404" in str(err.value) and "OpenAI-compatible" in str(err.value)


def test_redirect_is_not_followed() -> None:
    def handler(srv: ScriptedServer, h: BaseHTTPRequestHandler, req: Received) -> None:
        h.send_response(307)
        h.send_header("Location", "http://127.0.0.1:1/v1/models?token=abc")
        h.send_header("Content-Length", "0")
        h.end_headers()

    with ScriptedServer(handler) as srv, pytest.raises(RemoteError) as err:
        RemoteBackend(srv.url).load()
    assert "redirects" in str(err.value) and "token=abc" not in str(err.value)
    assert len(srv.requests) == 1


def test_server_with_no_models() -> None:
    no_models = ScriptedServer(lambda srv, h, req: send_json(h, 200, {"data": []}))
    with no_models as srv, pytest.raises(RemoteError, match="lists no models"):
        RemoteBackend(srv.url).load()


# TLS: verification is on by default. A self-signed certificate made with the openssl CLI.


@pytest.fixture
def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not available to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def test_tls_verification_on_by_default(self_signed: tuple[Path, Path]) -> None:
    cert, key = self_signed

    def handler(srv: ScriptedServer, h: BaseHTTPRequestHandler, req: Received) -> None:
        send_json(h, 200, models_list("m"))

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    with ScriptedServer(handler, ssl_context=ctx) as srv:
        url = srv.url
        assert url.startswith("https://")
        with pytest.raises(RemoteError) as err:
            RemoteBackend(url).load()
        assert "TLS certificate" in str(err.value) and "verify_tls" in err.value.fix
        # Opting out (for a server you control) works, and is logged.
        assert RemoteBackend(url, verify_tls=False).load().backend == "remote"


# ---------------------------------------------------------------------------------------
# Units: parameter mapping


def test_mapping_greedy_is_temperature_zero() -> None:
    body = build_request_body("m", HI, GenerationParams(do_sample=False, seed=5, top_k=40))
    assert body["temperature"] == 0.0
    for field in ("top_p", "top_k", "min_p", "seed", "repetition_penalty", "stop"):
        assert field not in body
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["messages"] == [{"role": "user", "content": "Hi"}]
    assert body["max_tokens"] == 512


def test_mapping_sampling_with_everything() -> None:
    params = GenerationParams(
        temperature=0.8,
        top_p=0.95,
        top_k=40,
        min_p=0.05,
        repetition_penalty=1.1,
        max_new_tokens=64,
        seed=3,
        stop=("a", "bb"),
    )
    body = build_request_body("m", HI, params, include_usage=False)
    assert {k: v for k, v in body.items() if k not in ("model", "messages")} == {
        "stream": True,
        "max_tokens": 64,
        "temperature": 0.8,
        "top_p": 0.95,
        "seed": 3,
        "top_k": 40,
        "min_p": 0.05,
        "repetition_penalty": 1.1,
        "stop": ["a", "bb"],
        "logprobs": True,  # the token inspector's numbers (default 5 alternatives)
        "top_logprobs": 5,
    }
    json.dumps(body, allow_nan=False)  # valid JSON for any valid settings


def test_mapping_off_values_are_not_sent() -> None:
    body = build_request_body("m", HI, RemoteBackend("http://127.0.0.1:1").default_params())
    assert "top_k" not in body and "min_p" not in body and "repetition_penalty" not in body
    # Repetition penalty changes greedy output too, so greedy keeps it.
    greedy = build_request_body("m", HI, GenerationParams(do_sample=False, repetition_penalty=1.2))
    assert greedy["repetition_penalty"] == 1.2


def test_invalid_settings_are_refused_before_sending() -> None:
    backend = RemoteBackend("http://127.0.0.1:1")
    backend.model = "m"
    gen = backend.stream(HI, GenerationParams(temperature=float("nan")), threading.Event())
    with pytest.raises(GenerationError, match="temperature"):
        gen.text()
    assert gen.stats is not None and gen.stats.stop_reason is StopReason.ERROR


@pytest.mark.parametrize(
    ("message", "param", "expected"),
    [
        ("Unexpected fields in the request: {'top_k', 'min_p'}", None, ("top_k", "min_p")),
        ("bad", "seed", ("seed",)),
        ("max_tokens must be at most 100", None, ("max_new_tokens",)),
        ("'stop_sequences' is invalid", None, ()),  # a word boundary: not our `stop`
        ("context too long", None, ()),
    ],
)
def test_rejected_settings(message: str, param: str | None, expected: tuple[str, ...]) -> None:
    sent = build_request_body("m", HI, GenerationParams(top_k=5, min_p=0.1, seed=1, stop=("x",)))
    assert rejected_settings(message, param, sent) == expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"error": {"message": "m1", "param": "top_k"}}', ("m1", "top_k")),
        (b'{"error": "m2", "error_type": "validation"}', ("m2", None)),
        (b'{"detail": "m3"}', ("m3", None)),
        (b'{"detail": [{"loc": ["body", "top_k"], "msg": "extra"}]}', ("top_k: extra", "top_k")),
        (b"plain text", ("plain text", None)),
    ],
)
def test_server_message_shapes(body: bytes, expected: tuple[str, str | None]) -> None:
    assert server_message(body) == expected


def test_finish_reason_mapping() -> None:
    assert map_finish_reason("length", None, ()) is StopReason.LENGTH
    assert map_finish_reason("stop", None, ()) is StopReason.EOS
    assert map_finish_reason("stop", 2, ("x",)) is StopReason.EOS  # a stop token id: EOS
    assert map_finish_reason("stop", "x", ("x",)) is StopReason.STOP_STRING
    assert map_finish_reason("tool_calls", None, ()) is StopReason.EOS


def test_stop_filter_holds_back_possible_prefixes() -> None:
    f = StopFilter(("END",))
    assert f.push("abcE") == "abc"
    assert f.push("N") == ""
    assert f.push("x") == "ENx"  # not a stop after all
    assert f.push("yyEN") == "yy"
    assert f.push("Dzz") == "" and f.stopped
    assert f.flush() == ""
    g = StopFilter(("ab", "c"))
    assert g.push("xxa") == "xx" and g.flush() == "a"
    assert StopFilter(()).push("anything") == "anything"


@pytest.mark.parametrize("stops", [(), ("END",)])
def test_stop_filter_drops_an_incomplete_character_at_the_end(stops: tuple[str, ...]) -> None:
    f = StopFilter(stops)
    assert f.push("經過\ufffd") == "經過"  # held: it may be the cut end of the reply
    assert f.push("\ufffdok") == "\ufffd\ufffdok"  # more text: it was in the reply after all
    assert f.push("努\ufffd\ufffd") == "努"
    assert f.flush() == ""  # the reply ended inside a character: never shown


def test_reply_cut_inside_a_character_by_the_server() -> None:
    # transformers serve's streamer flushes the cut bytes as U+FFFD in the last chunk.
    def script(srv: ScriptedServer, h: BaseHTTPRequestHandler, req: Received) -> None:
        start_sse(h)
        h.wfile.write(sse_chunk("經過") + sse_chunk("努\ufffd") + sse_chunk(finish="length"))
        h.wfile.write(b"data: [DONE]\n\n")

    with ScriptedServer(_chat(script)) as srv:
        gen = _loaded(srv).stream(HI, GREEDY, threading.Event())
        chunks, err = collect(gen)
    assert err is None and "".join(chunks) == "經過努"
    assert gen.stats is not None and gen.stats.stop_reason is StopReason.LENGTH


def test_urls() -> None:
    assert normalize_base_url("localhost:8000/v1/") == "http://localhost:8000"
    assert normalize_base_url("https://h.example/api/v1") == "https://h.example/api"
    for bad in ("ftp://x", "http://", "http://h/?token=1"):
        with pytest.raises(InvalidModelSpecError):
            normalize_base_url(bad)
    assert display_url("https://user:pw@h:8443/v1") == "https://h:8443/v1"
    with pytest.raises(InvalidModelSpecError) as err:
        RemoteBackend("ftp://user:secretpw@h")
    assert "secretpw" not in str(err.value)


def test_estimate_tokens() -> None:
    assert estimate_tokens([ChatMessage("user", "x" * 40)]) == 10 + 4
    assert estimate_tokens([]) == 0


# ---------------------------------------------------------------------------------------
# Units: server-sent events (httpx2's EventSource, through remote_stream.iter_events)


STREAM = (
    b": comment first\n"
    b"data: one\n\n"
    b"event: custom\ndata: two\ndata: lines\nid: 7\n\n"
    b"data:nospace\n\n"
    b"data: caf\xc3\xa9 \xf0\x9f\x99\x82\n\n"
    b"field-without-colon\nunknown: x\ndata\n\n"
    b"data: [DONE]\n\n"
)
EXPECTED = ["one", "two\nlines", "nospace", "café 🙂", "", "[DONE]"]


def _events(pieces: list[bytes], content_type: str = "text/event-stream") -> list[str]:
    response = httpx.Response(
        200,
        headers={"content-type": content_type},
        content=iter(pieces),
        request=httpx.Request("POST", "http://127.0.0.1/v1/chat/completions"),
    )
    return list(iter_events(response))


def _parse_in_pieces(data: bytes, cuts: list[int]) -> list[str]:
    bounds = [0, *cuts, len(data)]
    return _events([data[a:b] for a, b in itertools.pairwise(bounds)])


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_sse_every_split_point(newline: bytes) -> None:
    data = STREAM.replace(b"\n", newline)
    assert _parse_in_pieces(data, []) == EXPECTED
    for cut in range(1, len(data)):  # a read can end anywhere, even inside a character
        assert _parse_in_pieces(data, [cut]) == EXPECTED, cut


def test_sse_byte_by_byte() -> None:
    data = STREAM.replace(b"\n", b"\r\n")
    assert _parse_in_pieces(data, list(range(1, len(data)))) == EXPECTED


def test_sse_unterminated_event_is_dropped_at_the_end() -> None:
    assert _events([b"data: complete\n\ndata: cut of"]) == ["complete"]


def test_sse_event_field_alone_carries_no_text() -> None:
    # `event: ping` keep-alives come through with empty data, which the run state ignores.
    events = _events([b"event: ping\n\n: hi\n\ndata: x\n\n"])
    assert [e for e in events if e] == ["x"]
    assert _RunState(started=0.0).apply_event("", "http://x", lambda t, n: t) == ""


def test_sse_invalid_utf8_is_replaced() -> None:
    assert _events([b"data: a\xffb\n\n"]) == ["a\ufffdb"]


def test_sse_runaway_event(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(remote_stream, "MAX_EVENT_BYTES", 100)
    with pytest.raises(httpx.SSEError):
        _events([b"data: " + b"x" * 200])


def test_sse_wrong_content_type_is_named() -> None:
    with pytest.raises(httpx.SSEError) as info:
        _events([b'{"choices": []}'], content_type="application/json")
    backend = RemoteBackend("http://127.0.0.1:9")
    err = backend.transport_error(info.value, mid_reply=False)
    assert "event stream" in str(err) and "application/json" in str(err)

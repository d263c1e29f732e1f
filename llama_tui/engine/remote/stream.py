"""One streaming chat-completions request: the reader thread and the run's state.

`_StreamReader` performs the POST in a daemon thread, parses the body as server-sent events
with httpx2's `EventSource` (`iter_events`) and hands each event's data over a queue, so
the consuming thread (the remote backend's generator) waits in short slices and can check the
cancel event between them; `abort()` shuts the socket down from any thread, which wakes a
blocked read at once and tells the server to stop generating. `_RunState` is what one stream
has seen so far (text, usage, finish reason), turned into `GenerationStats` at the end.
"""

from __future__ import annotations

import contextlib
import json
import queue
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx2 as httpx

from llama_tui.core.backend import GenerationStats, StopReason
from llama_tui.core.errors import GenerationError, RemoteError
from llama_tui.core.thinking import ThinkFormat
from llama_tui.core.tokens import TokenLogprob
from llama_tui.engine.remote.logprobs import choice_tokens
from llama_tui.engine.remote.wire import (
    MAX_ERROR_BODY_BYTES,
    MAX_SERVER_MESSAGE_CHARS,
    map_finish_reason,
    server_message,
)


@dataclass(frozen=True)
class _Opened:
    """Response headers arrived with a 2xx status; data follows."""


@dataclass(frozen=True)
class _HttpStatus:
    """A non-2xx status with (at most MAX_ERROR_BODY_BYTES of) its body."""

    status: int
    reason: str
    body: bytes
    content_type: str
    location: str


@dataclass(frozen=True)
class _Event:
    """The `data` of one server-sent event."""

    data: str


@dataclass(frozen=True)
class _End:
    """The body ended cleanly (the server closed the stream as HTTP expects)."""


@dataclass(frozen=True)
class _Failed:
    exc: BaseException


_Item = _Opened | _HttpStatus | _Event | _End | _Failed

# How a server's separate reasoning fields are written into the reply's text: between the
# common think markers, which the remote backend's `ModelInfo.thinking` names, so the chat
# core's one splitter separates them again (and a server that streams ``<think>`` inline in
# `content`, as llama.cpp does without a reasoning parser, is split the same way).
REMOTE_THINKING = ThinkFormat()
# The delta fields servers stream reasoning in: `reasoning_content` (llama.cpp, DeepSeek's
# API, transformers serve, older vLLM), `reasoning` (newer vLLM, which renamed it; OpenRouter).
REASONING_FIELDS = ("reasoning_content", "reasoning")

# A chat-completion event is a few hundred bytes: a bigger one is a misbehaving server, and
# failing beats buffering its output without bound.
MAX_EVENT_BYTES = 8 * 1024 * 1024


def iter_events(response: httpx.Response) -> Iterator[str]:
    """The `data` of each server-sent event of `response`, as it arrives.

    httpx2's `EventSource` does the parsing (any line ending, events split across reads,
    comments, UTF-8 with replacement); a response that is not `text/event-stream`, or an
    event over MAX_EVENT_BYTES, raises `httpx2.SSEError`. An event without `data:` (such as
    `event: ping`) comes through as "", which the run state ignores.
    """
    for event in httpx.EventSource(response, max_event_size=MAX_EVENT_BYTES):
        yield event.data


class _StreamReader:
    """Performs one streaming POST in a daemon thread and queues what it reads.

    `abort()` may be called from any thread: it shuts the socket down, which wakes a
    blocked read immediately (closing the file descriptor from another thread would not).
    """

    def __init__(
        self,
        url: str,
        body: dict[str, Any],
        headers: dict[str, str],
        verify: ssl.SSLContext | bool,
        timeout: httpx.Timeout,
    ) -> None:
        self.items: queue.Queue[_Item] = queue.Queue()
        self._url = url
        self._body = body
        self._headers = headers
        self._verify = verify
        self._timeout = timeout
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._aborted = threading.Event()
        self._thread = threading.Thread(target=self._run, name="llama-tui-remote", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def abort(self) -> None:
        self._aborted.set()
        with self._lock:
            sock = self._sock
        if sock is not None:
            _shutdown(sock)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def _trace(self, event: str, info: dict[str, Any]) -> None:
        # httpcore's trace hook hands us the network stream as soon as it is connected (and
        # again after TLS wraps it), so even a server that never sends headers can be
        # aborted promptly.
        if event not in ("connection.connect_tcp.complete", "connection.start_tls.complete"):
            return
        stream = info.get("return_value")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if not isinstance(sock, socket.socket):
            return
        with self._lock:
            self._sock = sock
        if self._aborted.is_set():
            _shutdown(sock)

    def _run(self) -> None:
        try:
            with (
                httpx.Client(verify=self._verify, timeout=self._timeout) as client,
                client.stream(
                    "POST",
                    self._url,
                    json=self._body,
                    headers=self._headers,
                    extensions={"trace": self._trace},
                ) as response,
            ):
                if response.status_code >= 300:
                    data = bytearray()
                    for piece in response.iter_bytes():
                        data += piece
                        if len(data) >= MAX_ERROR_BODY_BYTES:
                            break
                    self.items.put(
                        _HttpStatus(
                            response.status_code,
                            response.reason_phrase,
                            bytes(data[:MAX_ERROR_BODY_BYTES]),
                            response.headers.get("content-type", ""),
                            response.headers.get("location", ""),
                        )
                    )
                    return
                self.items.put(_Opened())
                for event_data in iter_events(response):
                    if self._aborted.is_set():
                        return
                    self.items.put(_Event(event_data))
            self.items.put(_End())
        except BaseException as exc:  # handed to the consuming thread, which classifies it
            if not self._aborted.is_set():
                self.items.put(_Failed(exc))


def _shutdown(sock: socket.socket) -> None:
    # socket.socket.shutdown, not SSLSocket.shutdown: the plain call only shuts the file
    # descriptor down and leaves the TLS object, which the reader thread is using, alone.
    with contextlib.suppress(OSError):  # already closed: nothing left to wake
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


@dataclass
class _RunState:
    """What one stream has seen so far; turned into GenerationStats at the end."""

    started: float
    first_at: float | None = None
    last_at: float | None = None
    chunks: int = 0
    chars: int = 0
    finish_reason: str | None = None
    server_stop_reason: object = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    done: bool = False
    # Per-token logprobs the server sent (remote.logprobs), and how many alternatives to keep.
    tokens: list[TokenLogprob] = field(default_factory=list)
    logprobs_k: int = 0
    reasoning: bool = False  # inside the server's reasoning fields (the open marker written)

    def count(self, text: str) -> None:
        """Record a piece of reply text we hand to the caller."""
        now = time.perf_counter()
        if self.first_at is None:
            self.first_at = now
        self.last_at = now
        self.chunks += 1
        self.chars += len(text)

    def apply_event(self, data: str, url: str, clean: Callable[[str, int], str]) -> str:
        """Apply one SSE event to the run state; return the text it carries (maybe "").

        `url` is the server as we show it; `clean` makes server text safe to show.
        """
        if self.done:
            return ""
        stripped = data.strip()
        if stripped == "[DONE]":
            self.done = True
            return ""
        if not stripped:
            return ""  # an empty data line: some servers use these as keep-alives
        try:
            obj = json.loads(stripped)
        except (ValueError, RecursionError):
            raise RemoteError(
                f"the server at {url} sent an event that is not JSON: {clean(stripped, 80)}",
                "Is this an OpenAI-compatible server? The partial reply is kept.",
            ) from None
        if not isinstance(obj, dict):
            return ""
        if obj.get("error") is not None:
            raw, _ = server_message(json.dumps(obj).encode())
            shown = clean(raw, MAX_SERVER_MESSAGE_CHARS)
            raise RemoteError(
                f"the server at {url} reported an error mid-reply: {shown}",
                "The partial reply is kept. Check the server's log, then retry.",
            )
        usage = obj.get("usage")
        if isinstance(usage, dict):
            pt, ct = usage.get("prompt_tokens"), usage.get("completion_tokens")
            if isinstance(pt, int):
                self.prompt_tokens = pt
            if isinstance(ct, int):
                self.completion_tokens = ct
        choices = obj.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return ""
        choice = choices[0]  # we never ask for n > 1
        if self.logprobs_k:
            self.tokens.extend(choice_tokens(choice, self.logprobs_k))
        fr = choice.get("finish_reason")
        if isinstance(fr, str):
            self.finish_reason = fr
            self.server_stop_reason = choice.get("stop_reason")
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            return ""
        return self._delta_text(delta)

    def _delta_text(self, delta: dict[str, Any]) -> str:
        """The delta's reasoning and content as reply text, the reasoning between
        `REMOTE_THINKING`'s markers."""
        out = ""
        for name in REASONING_FIELDS:
            reasoning = delta.get(name)
            if isinstance(reasoning, str) and reasoning:
                if not self.reasoning:
                    self.reasoning = True
                    out += REMOTE_THINKING.open
                out += reasoning
                break
        text = delta.get("content")
        if isinstance(text, str) and text:
            if self.reasoning:
                self.reasoning = False
                out += REMOTE_THINKING.close
            out += text
        return out

    def final_reason(self, stop: Sequence[str]) -> StopReason:
        """Why the server stopped, from what it said (see `map_finish_reason`)."""
        return map_finish_reason(self.finish_reason, self.server_stop_reason, stop)

    def stats(
        self,
        reason: StopReason,
        estimated_prompt: int,
        error: GenerationError | None,
    ) -> GenerationStats:
        """The stats of the finished (or failed, or cancelled) stream."""
        # Token counts from `usage` when the server sent it; otherwise one token per content
        # chunk (servers stream about one token per chunk), which is close enough for tok/s.
        generated = self.completion_tokens if self.completion_tokens is not None else self.chunks
        ttft = None if self.first_at is None else self.first_at - self.started
        speed = None
        if self.first_at is not None and self.last_at is not None and generated > 1:
            span = self.last_at - self.first_at
            if span > 0:
                speed = (generated - 1) / span
        prompt = self.prompt_tokens if self.prompt_tokens is not None else estimated_prompt
        return GenerationStats(
            prompt_tokens=prompt,
            generated_tokens=generated,
            ttft_s=ttft,
            decode_tokens_per_s=speed,
            total_s=time.perf_counter() - self.started,
            stop_reason=reason,
            error=error.cause if error is not None else None,
        )

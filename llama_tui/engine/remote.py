"""The remote backend: any OpenAI-compatible chat-completions server.

vLLM (tensor / pipeline parallel across nodes), Hugging Face TGI, `transformers serve` and
llama.cpp's server all speak `GET /v1/models` and `POST /v1/chat/completions` with
`"stream": true` (server-sent events). We talk to them with `httpx2` (the HTTP client that
huggingface_hub already depends on), not the openai SDK: one small module, no extra weight.

Design points, each for a reason:
- A stream runs its HTTP request in a daemon reader thread that hands body pieces over a
  queue; the generator the UI iterates waits on that queue in short slices and checks the
  cancel event between them. Cancel (or a stalled server) therefore never waits on one giant
  blocking read: we shut the stream's socket down from the consuming thread, which wakes
  the reader at once and makes the server see the disconnect and stop generating.
- Each stream gets its own connection, so shutting it down never disturbs other requests.
- Settings the server rejects (HTTP 400 / 422 naming a field) are reported as a
  `RemoteParameterError` naming our setting, never silently dropped. Non-standard settings
  (top_k, min_p, repetition_penalty) are sent only when they are not "off", so a strict
  OpenAI-style server accepts our defaults.
- The API key is read from the environment variable named in config at request time; it is
  never stored on the backend, logged or put in an error message (messages are redacted).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import queue
import re
import socket
import ssl
import threading
import time
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx2 as httpx

from llama_tui.engine.base import (
    ChatMessage,
    Generation,
    GenerationError,
    GenerationParams,
    GenerationStats,
    InvalidModelSpecError,
    LoadProgress,
    LoadStage,
    MemoryReading,
    ModelError,
    ModelInfo,
    ProgressCallback,
    RemoteError,
    StopReason,
)
from llama_tui.engine.sse import SSEError, SSEParser

log = logging.getLogger(__name__)

DEFAULT_API_KEY_ENV = "LLAMA_TUI_API_KEY"
# How often the consuming thread looks at the cancel event while waiting for data.
POLL_INTERVAL_S = 0.05
# Server messages are untrusted and sometimes huge (HTML error pages, stack traces).
MAX_SERVER_MESSAGE_CHARS = 300
MAX_ERROR_BODY_BYTES = 64 * 1024
# When the server cannot count tokens for us: about 4 characters per token for English with
# Llama-family tokenizers, plus a few tokens per message for the chat template's markers.
CHARS_PER_TOKEN = 4
TEMPLATE_TOKENS_PER_MESSAGE = 4
UNKNOWN_CONTEXT_LENGTH = 2048

# Our setting name for each request field we may send; used to name a rejected field.
# Non-standard fields first: they are the ones a strict server most likely rejects.
WIRE_TO_SETTING: dict[str, str] = {
    "top_k": "top_k",
    "min_p": "min_p",
    "repetition_penalty": "repetition_penalty",
    "seed": "seed",
    "temperature": "temperature",
    "top_p": "top_p",
    "max_tokens": "max_new_tokens",
    "stop": "stop",
}


class RemoteParameterError(RemoteError):
    """The server refused one or more settings; `parameters` are our setting names."""

    def __init__(self, cause: str, fix: str, parameters: tuple[str, ...]) -> None:
        super().__init__(cause, fix)
        self.parameters = parameters


# ---------------------------------------------------------------------------------------
# Pure helpers (unit-tested without a server)


def normalize_base_url(url: str) -> str:
    """The server root without a trailing slash or `/v1`; raises on a non-HTTP URL."""
    raw = url.strip()
    if "://" not in raw:
        # "localhost:8000" is what people type; urlsplit would take "localhost" as a scheme.
        raw = "http://" + raw
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidModelSpecError(
            f"not a server URL: {display_url(url)!r}",
            "Use a URL like http://127.0.0.1:8000 (the /v1 suffix is optional).",
        )
    if parts.query or parts.fragment:
        raise InvalidModelSpecError(
            f"a server URL cannot have a query or fragment: {display_url(url)!r}",
            "Use the server's base URL, like https://host:8000/v1.",
        )
    root = raw.split("#", 1)[0].rstrip("/")
    if root.endswith("/v1"):
        root = root[: -len("/v1")]
    return root


def display_url(url: str) -> str:
    """The URL as we may show it: no user:password, no query (they can carry secrets)."""
    try:
        parts = urlsplit(url.strip() if "://" in url else "http://" + url.strip())
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<invalid URL>"
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port else host
    return _clean(f"{parts.scheme}://{netloc}{parts.path}", 200)


def build_request_body(
    model: str,
    history: Sequence[ChatMessage],
    params: GenerationParams,
    *,
    include_usage: bool = True,
) -> dict[str, Any]:
    """Map our settings onto an OpenAI chat-completions request.

    Greedy becomes temperature 0 (the OpenAI convention every server maps to greedy) and the
    sampling-only fields are left out. top_k / min_p / repetition_penalty are extra fields
    vLLM, TGI and llama.cpp accept; they are sent only when not "off" (0, 0.0, 1.0) so that a
    strict server still accepts a default request; when set, a rejection is reported.
    """
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": m.role, "content": m.content} for m in history],
        "stream": True,
        "max_tokens": params.max_new_tokens,
    }
    if include_usage:
        # Without this, OpenAI-style servers send no token counts in a stream.
        body["stream_options"] = {"include_usage": True}
    if params.do_sample:
        body["temperature"] = params.temperature
        body["top_p"] = params.top_p
        if params.seed is not None:
            body["seed"] = params.seed
        if params.top_k > 0:
            body["top_k"] = params.top_k
        if params.min_p > 0:
            body["min_p"] = params.min_p
    else:
        body["temperature"] = 0.0
    # Repetition penalty changes greedy output too, so it is kept in both modes.
    if params.repetition_penalty != 1.0:
        body["repetition_penalty"] = params.repetition_penalty
    if params.stop:
        body["stop"] = list(params.stop)
    return body


def estimate_tokens(history: Sequence[ChatMessage]) -> int:
    """A rough prompt size when the server cannot count: chars / 4 plus template markers."""
    return sum(
        math.ceil(len(m.content) / CHARS_PER_TOKEN) + TEMPLATE_TOKENS_PER_MESSAGE for m in history
    )


def map_finish_reason(
    finish_reason: str | None,
    server_stop_reason: object,
    stop: Sequence[str],
) -> StopReason:
    """OpenAI's finish_reason -> StopReason.

    "stop" means either end of sequence or a stop string; vLLM names the matched string in
    `stop_reason` (a token id or None otherwise). Servers that keep the stop string in the
    text are caught earlier by `StopFilter`.
    """
    if finish_reason == "length":
        return StopReason.LENGTH
    if (
        finish_reason == "stop"
        and stop
        and isinstance(server_stop_reason, str)
        and server_stop_reason
    ):
        return StopReason.STOP_STRING
    return StopReason.EOS


class StopFilter:
    """Client-side stop strings: emit text up to the first stop string, never the string.

    The end of the text that could still grow into a stop string is held back until it
    cannot (at most the longest stop string minus one character) or until `flush()`.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._held = ""
        self.stopped = False

    def push(self, text: str) -> str:
        if self.stopped or not text:
            return ""
        if not self._stops:
            return text
        buf = self._held + text
        hits = [i for i in (buf.find(s) for s in self._stops) if i >= 0]
        if hits:
            self.stopped = True
            self._held = ""
            return buf[: min(hits)]
        keep = 0
        for s in self._stops:
            for n in range(min(len(s) - 1, len(buf)), keep, -1):
                if buf.endswith(s[:n]):
                    keep = n
                    break
        self._held = buf[len(buf) - keep :]
        return buf[: len(buf) - keep]

    def flush(self) -> str:
        held, self._held = self._held, ""
        return "" if self.stopped else held


def server_message(body: bytes, content_type: str = "") -> tuple[str, str | None]:
    """(message, parameter) from an error body in any of the common shapes.

    OpenAI / vLLM / llama.cpp: {"error": {"message", "param"}}; TGI: {"error": "..."};
    FastAPI: {"detail": "..."} or {"detail": [{"loc": [..., field], "msg": ...}]};
    anything else: the text itself. Not yet cleaned: callers pass it through `_clean`.
    """
    text = body.decode("utf-8", errors="replace")
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):
        if "html" in content_type.lower():
            return "(an HTML error page)", None
        return text, None
    param: str | None = None
    msg: Any = obj
    if isinstance(obj, dict):
        err = obj.get("error", obj.get("detail", obj.get("message")))
        if isinstance(err, dict):
            p = err.get("param")
            param = p if isinstance(p, str) and p else None
            msg = err.get("message", err)
        elif isinstance(err, list) and err and all(isinstance(e, dict) for e in err):
            # Pydantic validation errors: name the field from the last element of `loc`.
            parts = []
            for e in err:
                loc = e.get("loc")
                field_name = str(loc[-1]) if isinstance(loc, list) and loc else ""
                param = param or field_name or None
                parts.append(f"{field_name}: {e.get('msg', '')}" if field_name else e.get("msg"))
            msg = "; ".join(str(p) for p in parts)
        elif err is not None:
            msg = err
    return (msg if isinstance(msg, str) else json.dumps(msg)), param


def rejected_settings(message: str, param: str | None, sent: Mapping[str, Any]) -> tuple[str, ...]:
    """Our setting names the server's error message (or its `param`) points at."""
    names: list[str] = []
    for wire, setting in WIRE_TO_SETTING.items():
        if wire not in sent:
            continue
        if param == wire or re.search(rf"(?<![\w]){re.escape(wire)}(?![\w])", message):
            names.append(setting)
    return tuple(names)


_BEARER = re.compile(r"(?i)(bearer\s+)\S+")


def _clean(text: str, limit: int = MAX_SERVER_MESSAGE_CHARS, secret: str | None = None) -> str:
    """One printable line, at most `limit` characters, with any API key redacted.

    Server text is untrusted: control characters could drive the terminal, and a server
    that echoes request headers would otherwise print the key.
    """
    if secret:
        text = text.replace(secret, "***")
    text = _BEARER.sub(r"\1***", text)
    out = "".join(" " if unicodedata.category(ch)[0] == "C" else ch for ch in text)
    out = " ".join(out.split())
    if len(out) > limit:
        out = out[: limit - 1].rstrip() + "…"
    return out


def _find_cause(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, kind):
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return None


# ---------------------------------------------------------------------------------------
# The reader thread


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
class _Data:
    data: bytes


@dataclass(frozen=True)
class _End:
    """The body ended cleanly (the server closed the stream as HTTP expects)."""


@dataclass(frozen=True)
class _Failed:
    exc: BaseException


_Item = _Opened | _HttpStatus | _Data | _End | _Failed


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
                for piece in response.iter_bytes():
                    if self._aborted.is_set():
                        return
                    self.items.put(_Data(piece))
            self.items.put(_End())
        except BaseException as exc:  # handed to the consuming thread, which classifies it
            if not self._aborted.is_set():
                self.items.put(_Failed(exc))


def _shutdown(sock: socket.socket) -> None:
    # socket.socket.shutdown, not SSLSocket.shutdown: the plain call only shuts the file
    # descriptor down and leaves the TLS object, which the reader thread is using, alone.
    with contextlib.suppress(OSError):  # already closed: nothing left to wake
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


# ---------------------------------------------------------------------------------------
# The backend


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


class RemoteBackend:
    """A model served by an OpenAI-compatible server. Implements the `Backend` protocol."""

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        api_key_env: str | None = DEFAULT_API_KEY_ENV,
        verify_tls: bool = True,
        timeout_s: float = 30.0,
    ) -> None:
        if not (isinstance(timeout_s, (int, float)) and math.isfinite(timeout_s) and timeout_s > 0):
            raise ValueError("timeout_s must be a positive number of seconds")
        self.base_url = normalize_base_url(base_url)
        self.url = display_url(self.base_url)  # the only form of the URL we show or log
        self.requested_model = model
        self.api_key_env = api_key_env or None
        self.verify_tls = verify_tls
        self.timeout_s = float(timeout_s)
        self.info: ModelInfo | None = None
        self.model: str | None = None
        # True when the last count_tokens() fell back to the chars/4 estimate.
        self.token_count_approximate = True
        self._tokenize_supported: bool | None = None
        self._include_usage = True
        self._ssl: ssl.SSLContext | bool | None = None
        self._client: httpx.Client | None = None
        if not verify_tls:
            log.warning("TLS certificate verification is off for %s", self.url)

    # -- plumbing ---------------------------------------------------------------------

    def _verify(self) -> ssl.SSLContext | bool:
        # One SSL context for every connection: building one loads the trust store (~30 ms).
        if self._ssl is None:
            self._ssl = httpx.create_ssl_context() if self.verify_tls else False
        return self._ssl

    def _http(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(
                verify=self._verify(), timeout=httpx.Timeout(self.timeout_s)
            )
        return self._client

    def _headers(self, *, stream: bool = False) -> dict[str, str]:
        headers = {"Accept": "text/event-stream" if stream else "application/json"}
        if stream:
            # Compression would make a proxy or server buffer the stream.
            headers["Accept-Encoding"] = "identity"
        key = self._api_key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _api_key(self) -> str | None:
        if not self.api_key_env:
            return None
        return os.environ.get(self.api_key_env) or None

    def _clean(self, text: str, limit: int = MAX_SERVER_MESSAGE_CHARS) -> str:
        return _clean(text, limit, secret=self._api_key())

    def _transport_error(self, exc: BaseException, *, mid_reply: bool = False) -> RemoteError:
        """Classify a network failure into a message that names the cause and the fix."""
        url = self.url
        if isinstance(exc, httpx.ConnectTimeout):
            return RemoteError(
                f"no connection to {url} within {self.timeout_s:g} s",
                "Check the address and that the server is reachable (firewall, VPN, SSH tunnel).",
            )
        if isinstance(exc, httpx.TimeoutException):
            return RemoteError(
                f"the server at {url} sent nothing for {self.timeout_s:g} s",
                "The server may be overloaded or stuck"
                + ("; the partial reply is kept" if mid_reply else "")
                + ". Retry, or raise the timeout in config.",
            )
        if isinstance(exc, httpx.ConnectError):
            if _find_cause(exc, ConnectionRefusedError) or "refused" in str(exc).lower():
                return RemoteError(
                    f"nothing listening at {url}: is the server running?",
                    "Start the server (for example `vllm serve MODEL` or "
                    "`transformers serve MODEL`), or fix the address and port in --server.",
                )
            cert = _find_cause(exc, ssl.SSLCertVerificationError)
            if cert is not None or "certificate" in str(exc).lower():
                return RemoteError(
                    f"the TLS certificate of {url} could not be verified: "
                    f"{self._clean(str(cert or exc), 160)}",
                    "Give the server a certificate your system trusts (or set SSL_CERT_FILE); "
                    "only for a server you control, turn verify_tls off in config.",
                )
            if _find_cause(exc, socket.gaierror):
                return RemoteError(
                    f"cannot resolve the host of {url}",
                    "Check the host name in --server.",
                )
            return RemoteError(
                f"could not connect to {url}: {self._clean(str(exc), 160)}",
                "Check the address and that the server is reachable.",
            )
        cut_off = (httpx.RemoteProtocolError, httpx.ReadError, httpx.StreamError, ConnectionError)
        if isinstance(exc, cut_off):
            if mid_reply:
                return RemoteError(
                    f"the connection to {url} was cut off mid-reply",
                    "The partial reply is kept. Check the server (it may have stopped or "
                    "restarted), then retry.",
                )
            return RemoteError(
                f"the server at {url} closed the connection without an answer",
                "Check the server's log; it may have crashed or be restarting.",
            )
        if isinstance(exc, SSEError):
            return RemoteError(
                f"the server at {url} sent a malformed event stream: {self._clean(str(exc))}",
                "Is this an OpenAI-compatible server? The partial reply is kept.",
            )
        if isinstance(exc, (httpx.UnsupportedProtocol, httpx.InvalidURL)):
            return RemoteError(
                f"not a usable server URL: {url}",
                "Use a URL like http://127.0.0.1:8000.",
            )
        return RemoteError(
            f"request to {url} failed: {type(exc).__name__}: {self._clean(str(exc), 160)}",
            "Check the server and the network, then retry.",
        )

    def _status_error(
        self,
        what: str,
        status: int,
        reason: str,
        body: bytes,
        content_type: str,
        sent: Mapping[str, Any] | None = None,
        location: str = "",
    ) -> RemoteError:
        """An HTTP error status -> RemoteError with the server's (cleaned) message."""
        raw, param = server_message(body, content_type)
        msg = self._clean(raw) or reason or "no message"
        head = f"{status} {reason}".strip()
        url = self.url
        if status in (401, 403):
            env = self.api_key_env
            if env is None:
                fix = (
                    "The server needs an API key: set api_key_env in config to the name of "
                    "an environment variable that holds it."
                )
            elif self._api_key() is None:
                fix = f"Put the server's API key in the environment variable {env}."
            else:
                fix = f"Check the API key in the environment variable {env}."
            refused = "refused the API key" if self._api_key() else "needs an API key"
            return RemoteError(f"the server at {url} {refused} ({head}): {msg}", fix)
        if 300 <= status < 400:
            where = display_url(location) if location else "another address"
            return RemoteError(
                f"the server at {url} redirects {what} to {where} ({head})",
                "Use the final address in --server (we do not follow redirects, so the API "
                "key never goes to another host).",
            )
        if sent is not None and status in (400, 422):
            names = rejected_settings(raw, param, sent)
            if names:
                listed = ", ".join(names)
                return RemoteParameterError(
                    f"the server at {url} rejected the setting {listed}: {msg}",
                    f"Change {listed} in the settings panel; top_k 0, min_p 0 and "
                    "repetition_penalty 1.0 mean off and are then not sent.",
                    names,
                )
            if "context" in raw.lower() and ("length" in raw.lower() or "window" in raw.lower()):
                return RemoteError(
                    f"the conversation does not fit the server's context ({head}): {msg}",
                    "Start a new conversation, or lower max_new_tokens.",
                )
        if status == 404:
            return RemoteError(
                f"{what} is not available at {url} ({head}): {msg}",
                "Is this an OpenAI-compatible server? Use its base URL (the /v1 suffix is "
                "optional) and a model it lists.",
            )
        if status == 429:
            return RemoteError(
                f"the server at {url} is busy or rate-limited ({head}): {msg}",
                "Wait a moment and retry.",
            )
        if status >= 500:
            return RemoteError(
                f"the server at {url} failed ({head}): {msg}",
                "Check the server's log; retry once it is healthy.",
            )
        return RemoteError(f"the server at {url} refused {what} ({head}): {msg}", "")

    def _get_json(self, path: str, what: str) -> Any:
        try:
            resp = self._http().get(self.base_url + path, headers=self._headers())
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from None
        if resp.status_code >= 300:
            raise self._status_error(
                what,
                resp.status_code,
                resp.reason_phrase,
                resp.content[:MAX_ERROR_BODY_BYTES],
                resp.headers.get("content-type", ""),
                location=resp.headers.get("location", ""),
            )
        try:
            return resp.json()
        except ValueError:
            raise RemoteError(
                f"{what} at {self.url} did not return JSON",
                "Is this an OpenAI-compatible server? Use its base URL.",
            ) from None

    # -- Backend protocol ---------------------------------------------------------------

    def _model_entries(self) -> list[dict[str, Any]]:
        data = self._get_json("/v1/models", "the model list (GET /v1/models)")
        entries = data.get("data") if isinstance(data, dict) else None
        if not isinstance(entries, list):
            raise RemoteError(
                f"the model list from {self.url} is not in the OpenAI format",
                "Is this an OpenAI-compatible server? Use its base URL.",
            )
        return [e for e in entries if isinstance(e, dict) and isinstance(e.get("id"), str)]

    def list_models(self) -> list[str]:
        """The model ids the server lists at GET /v1/models."""
        return [str(e["id"]) for e in self._model_entries()]

    def load(self, progress: ProgressCallback | None = None) -> ModelInfo:
        """Check the server and pick the model; nothing is loaded on our side."""
        if progress is not None:
            progress(LoadProgress(LoadStage.RESOLVE, f"Connecting to {self.url}"))
        entries = self._model_entries()
        ids = [str(e["id"]) for e in entries]
        if not ids:
            raise RemoteError(
                f"the server at {self.url} lists no models",
                "Start the server with a model (for example `vllm serve MODEL`).",
            )
        wanted = self.requested_model
        if wanted is not None and wanted not in ids:
            shown = ", ".join(_clean(i, 80) for i in ids[:10])
            more = f" and {len(ids) - 10} more" if len(ids) > 10 else ""
            raise ModelError(
                f"the server at {self.url} does not serve {_clean(wanted, 80)!r}",
                f"It serves: {shown}{more}. Pick one of those with --model.",
            )
        model = wanted if wanted is not None else ids[0]
        entry = entries[ids.index(model)]
        self.model = model
        self.info = ModelInfo(
            name=_clean(model.rstrip("/").rsplit("/", 1)[-1] or model, 80),
            spec=self.url,
            source=f"{self.url} ({_clean(model, 120)})",
            device=f"remote {urlsplit(self.base_url).netloc.rsplit('@', 1)[-1]}",
            dtype="unknown",
            context_length=_context_length(entry),
            chat_template=True,  # the server applies the model's template
            backend="remote",
        )
        if progress is not None:
            progress(LoadProgress(LoadStage.READY, f"Using {self.info.name} at {self.url}", 1.0))
        return self.info

    def default_params(self) -> GenerationParams:
        """Our defaults with top_k off: the OpenAI API has no top_k and strict servers
        (transformers serve) reject it, while the server applies its model's own defaults."""
        return GenerationParams(top_k=0)

    def memory(self) -> MemoryReading:
        """Not applicable: the model's memory is on the server."""
        return MemoryReading(0, label="remote")

    def count_tokens(self, history: Sequence[ChatMessage]) -> int:
        """Exact via the server's tokenizer endpoint (vLLM's POST /tokenize) when it has
        one; otherwise `estimate_tokens` and `token_count_approximate` is set."""
        if self.model is not None and self._tokenize_supported is not False:
            body = {
                "model": self.model,
                "messages": [{"role": m.role, "content": m.content} for m in history],
                "add_generation_prompt": True,
            }
            resp: httpx.Response | None
            try:
                resp = self._http().post(
                    self.base_url + "/tokenize",
                    json=body,
                    headers=self._headers(),
                    timeout=min(self.timeout_s, 5.0),
                )
            except httpx.HTTPError:
                resp = None  # transient: estimate this time, ask again next time
            count: object = None
            if resp is not None and resp.status_code == 200:
                try:
                    data = resp.json()
                except ValueError:
                    data = None
                count = data.get("count") if isinstance(data, dict) else None
            if isinstance(count, int) and not isinstance(count, bool) and count >= 0:
                self._tokenize_supported = True
                self.token_count_approximate = False
                return count
            if resp is not None:
                # A definite answer that is not vLLM's shape (404, TGI's list, ...): stop asking.
                self._tokenize_supported = False
        self.token_count_approximate = True
        return estimate_tokens(history)

    def close(self) -> None:
        """Drop the connection pool. Safe to call twice; a later load() reconnects."""
        client, self._client = self._client, None
        if client is not None:
            client.close()
        self.info = None

    def stream(
        self,
        history: Sequence[ChatMessage],
        params: GenerationParams,
        cancel: threading.Event,
    ) -> Generation:
        """Start a reply; the request is sent when iteration starts."""
        snapshot = tuple(history)
        gen: Generation

        def chunks() -> Iterator[str]:
            yield from self._run(gen, snapshot, params, cancel)

        gen = Generation(chunks())
        gen.prompt_tokens = estimate_tokens(snapshot)
        return gen

    # -- one generation -------------------------------------------------------------------

    def _start_reader(self, body: dict[str, Any]) -> _StreamReader:
        reader = _StreamReader(
            self.base_url + "/v1/chat/completions",
            body,
            self._headers(stream=True),
            self._verify(),
            httpx.Timeout(self.timeout_s),
        )
        reader.start()
        return reader

    def _run(
        self,
        gen: Generation,
        history: tuple[ChatMessage, ...],
        params: GenerationParams,
        cancel: threading.Event,
    ) -> Iterator[str]:
        st = _RunState(started=time.perf_counter())

        def finish(reason: StopReason, error: GenerationError | None = None) -> None:
            gen.stats = self._stats(st, reason, gen.prompt_tokens, error)

        if self.model is None:
            err: GenerationError = RemoteError(
                f"no model selected on {self.url}", "Load the remote backend first."
            )
            finish(StopReason.ERROR, err)
            raise err
        problems = params.problems()
        if problems:
            listed = "; ".join(f"{k} {v}" for k, v in problems.items())
            err = GenerationError(f"invalid settings: {listed}", "Fix them in the settings panel.")
            finish(StopReason.ERROR, err)
            raise err

        body = build_request_body(self.model, history, params, include_usage=self._include_usage)
        reader = self._start_reader(body)
        parser = SSEParser()
        stops = StopFilter(params.stop)
        opened = False

        def fail(err: GenerationError) -> Iterator[str]:
            # The held-back end of the reply is part of the partial text the caller keeps.
            held = stops.flush()
            if held:
                self._count(st, held)
                yield held
            finish(StopReason.ERROR, err)
            raise err

        try:
            while True:
                if cancel.is_set():
                    reader.abort()
                    finish(StopReason.CANCELLED)
                    return
                try:
                    item = reader.items.get(timeout=POLL_INTERVAL_S)
                except queue.Empty:
                    continue
                if isinstance(item, _Opened):
                    opened = True
                elif isinstance(item, _HttpStatus):
                    if (
                        "stream_options" in body
                        and item.status in (400, 422)
                        and "stream_options" in item.body.decode("utf-8", "replace")
                    ):
                        # Our own addition, not a user setting: retry without it, once.
                        self._include_usage = False
                        del body["stream_options"]
                        reader = self._start_reader(body)
                        continue
                    yield from fail(
                        self._status_error(
                            "chat completions (POST /v1/chat/completions)",
                            item.status,
                            item.reason,
                            item.body,
                            item.content_type,
                            sent=body,
                            location=item.location,
                        )
                    )
                elif isinstance(item, (_Data, _End)):
                    events = parser.feed(item.data) if isinstance(item, _Data) else parser.close()
                    for event in events:
                        text = stops.push(self._handle_event(event.data, st))
                        if text:
                            self._count(st, text)
                            yield text
                        if stops.stopped:
                            # Enforced here too: some servers keep the stop string in the
                            # text (transformers serve) or ignore `stop`; the local backend
                            # drops it, and so do we. Closing the stream stops the server.
                            reader.abort()
                            finish(StopReason.STOP_STRING)
                            return
                        if cancel.is_set() or st.done:
                            break  # a cancel is honoured between events of one read
                    # transformers serve ends after the finish chunk, without [DONE].
                    ended = st.done or (isinstance(item, _End) and st.finish_reason is not None)
                    if ended:
                        held = stops.flush()
                        if held:
                            self._count(st, held)
                            yield held
                        finish(self._final_reason(st, params))
                        return
                    if isinstance(item, _End):
                        yield from fail(
                            RemoteError(
                                f"the server at {self.url} ended the stream mid-reply "
                                f"({st.chars} characters received)",
                                "The partial reply is kept. Check the server's log, then retry.",
                            )
                        )
                else:
                    yield from fail(self._transport_error(item.exc, mid_reply=opened))
        except GenerationError as exc:
            # Raised by _handle_event (an error event, a non-JSON event): stats first.
            if gen.stats is None:
                yield from fail(exc)
            raise
        except SSEError as exc:
            yield from fail(self._transport_error(exc, mid_reply=True))
        except GeneratorExit:
            # The caller stopped iterating (UI closed, worker cancelled): count it as cancel.
            if gen.stats is None:
                finish(StopReason.CANCELLED)
            raise
        finally:
            # Whatever happened, the connection must not outlive the generation: this is
            # what tells the server to stop generating.
            reader.abort()

    @staticmethod
    def _count(st: _RunState, text: str) -> None:
        now = time.perf_counter()
        if st.first_at is None:
            st.first_at = now
        st.last_at = now
        st.chunks += 1
        st.chars += len(text)

    def _handle_event(self, data: str, st: _RunState) -> str:
        """Apply one SSE event to the run state; return the text it carries (maybe "")."""
        if st.done:
            return ""
        stripped = data.strip()
        if stripped == "[DONE]":
            st.done = True
            return ""
        if not stripped:
            return ""  # an empty data line: some servers use these as keep-alives
        try:
            obj = json.loads(stripped)
        except (ValueError, RecursionError):
            raise RemoteError(
                f"the server at {self.url} sent an event that is not JSON: "
                f"{self._clean(stripped, 80)}",
                "Is this an OpenAI-compatible server? The partial reply is kept.",
            ) from None
        if not isinstance(obj, dict):
            return ""
        if obj.get("error") is not None:
            raw, _ = server_message(json.dumps(obj).encode())
            raise RemoteError(
                f"the server at {self.url} reported an error mid-reply: {self._clean(raw)}",
                "The partial reply is kept. Check the server's log, then retry.",
            )
        usage = obj.get("usage")
        if isinstance(usage, dict):
            pt, ct = usage.get("prompt_tokens"), usage.get("completion_tokens")
            if isinstance(pt, int):
                st.prompt_tokens = pt
            if isinstance(ct, int):
                st.completion_tokens = ct
        choices = obj.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return ""
        choice = choices[0]  # we never ask for n > 1
        fr = choice.get("finish_reason")
        if isinstance(fr, str):
            st.finish_reason = fr
            st.server_stop_reason = choice.get("stop_reason")
        delta = choice.get("delta")
        text = delta.get("content") if isinstance(delta, dict) else None
        return text if isinstance(text, str) else ""

    def _final_reason(self, st: _RunState, params: GenerationParams) -> StopReason:
        return map_finish_reason(st.finish_reason, st.server_stop_reason, params.stop)

    def _stats(
        self,
        st: _RunState,
        reason: StopReason,
        estimated_prompt: int,
        error: GenerationError | None,
    ) -> GenerationStats:
        # Token counts from `usage` when the server sent it; otherwise one token per content
        # chunk (servers stream about one token per chunk), which is close enough for tok/s.
        generated = st.completion_tokens if st.completion_tokens is not None else st.chunks
        ttft = None if st.first_at is None else st.first_at - st.started
        speed = None
        if st.first_at is not None and st.last_at is not None and generated > 1:
            span = st.last_at - st.first_at
            if span > 0:
                speed = (generated - 1) / span
        return GenerationStats(
            prompt_tokens=st.prompt_tokens if st.prompt_tokens is not None else estimated_prompt,
            generated_tokens=generated,
            ttft_s=ttft,
            decode_tokens_per_s=speed,
            total_s=time.perf_counter() - st.started,
            stop_reason=reason,
            error=error.cause if error is not None else None,
        )


def _context_length(entry: Mapping[str, Any]) -> int:
    """The context size if the model list says it (vLLM: max_model_len; llama.cpp: meta)."""
    candidates: list[object] = [entry.get("max_model_len"), entry.get("context_length")]
    meta = entry.get("meta")
    if isinstance(meta, dict):
        candidates += [meta.get("n_ctx"), meta.get("n_ctx_train")]
    for value in candidates:
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return UNKNOWN_CONTEXT_LENGTH

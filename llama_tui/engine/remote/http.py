"""The connection to an OpenAI-compatible server, and its failures as clear messages.

`ServerConnection` holds what the remote backend needs to talk to one server: the base URL
(and the only form of it we show), the TLS context, a pooled HTTP client for small requests,
request headers with the API key, the start of a streaming request, and the classification
of transport failures and HTTP error statuses into `RemoteError`s that name the cause and
the fix. The API key is read from the environment variable named in config at request time;
it is never stored, logged or put in a message (server text is cleaned with the key redacted).
"""

from __future__ import annotations

import logging
import math
import os
import socket
import ssl
from collections.abc import Mapping
from typing import Any

import httpx2 as httpx

from llama_tui.core.errors import RemoteError
from llama_tui.engine.remote.stream import _StreamReader
from llama_tui.engine.remote.wire import (
    MAX_ERROR_BODY_BYTES,
    MAX_SERVER_MESSAGE_CHARS,
    display_url,
    find_cause,
    normalize_base_url,
    one_line,
    rejected_settings,
    server_message,
)

log = logging.getLogger(__name__)

DEFAULT_API_KEY_ENV = "LLAMA_TUI_API_KEY"


class RemoteParameterError(RemoteError):
    """The server refused one or more settings; `parameters` are our setting names."""

    def __init__(self, cause: str, fix: str, parameters: tuple[str, ...]) -> None:
        super().__init__(cause, fix)
        self.parameters = parameters


class ServerConnection:
    """HTTP plumbing for one server; `RemoteBackend` builds the `Backend` protocol on it."""

    def __init__(
        self,
        base_url: str,
        api_key_env: str | None = DEFAULT_API_KEY_ENV,
        verify_tls: bool = True,
        timeout_s: float = 30.0,
    ) -> None:
        if not (isinstance(timeout_s, (int, float)) and math.isfinite(timeout_s) and timeout_s > 0):
            raise ValueError("timeout_s must be a positive number of seconds")
        self.base_url = normalize_base_url(base_url)
        self.url = display_url(self.base_url)  # the only form of the URL we show or log
        self.api_key_env = api_key_env or None
        self.verify_tls = verify_tls
        self.timeout_s = float(timeout_s)
        self._ssl: ssl.SSLContext | bool | None = None
        self._client: httpx.Client | None = None
        # Cleared when the server refuses `stream_options` (then it sends no token counts).
        self.include_usage = True
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

    def open_stream(self, body: dict[str, Any]) -> _StreamReader:
        """Start a streaming chat-completions request on its own connection."""
        reader = _StreamReader(
            self.base_url + "/v1/chat/completions",
            body,
            self._headers(stream=True),
            self._verify(),
            httpx.Timeout(self.timeout_s),
        )
        reader.start()
        return reader

    def _api_key(self) -> str | None:
        if not self.api_key_env:
            return None
        return os.environ.get(self.api_key_env) or None

    def server_text(self, text: str, limit: int = MAX_SERVER_MESSAGE_CHARS) -> str:
        """Server text as we may show it, with the API key we send hidden too."""
        return one_line(text, limit, secret=self._api_key())

    def transport_error(self, exc: BaseException, *, mid_reply: bool = False) -> RemoteError:
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
            return self._connect_error(exc)
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
        if isinstance(exc, httpx.SSEError):
            return RemoteError(
                f"the server at {url} sent a malformed event stream: {self.server_text(str(exc))}",
                "Is this an OpenAI-compatible server? The partial reply is kept.",
            )
        if isinstance(exc, (httpx.UnsupportedProtocol, httpx.InvalidURL)):
            return RemoteError(
                f"not a usable server URL: {url}",
                "Use a URL like http://127.0.0.1:8000.",
            )
        return RemoteError(
            f"request to {url} failed: {type(exc).__name__}: {self.server_text(str(exc), 160)}",
            "Check the server and the network, then retry.",
        )

    def _connect_error(self, exc: httpx.ConnectError) -> RemoteError:
        """No connection: refused, an untrusted certificate, an unknown host, or else."""
        url = self.url
        if find_cause(exc, ConnectionRefusedError) or "refused" in str(exc).lower():
            return RemoteError(
                f"nothing listening at {url}: is the server running?",
                "Start the server (for example `vllm serve MODEL` or "
                "`transformers serve MODEL`), or fix the address and port in --server.",
            )
        cert = find_cause(exc, ssl.SSLCertVerificationError)
        if cert is not None or "certificate" in str(exc).lower():
            return RemoteError(
                f"the TLS certificate of {url} could not be verified: "
                f"{self.server_text(str(cert or exc), 160)}",
                "Give the server a certificate your system trusts (or set SSL_CERT_FILE); "
                "only for a server you control, turn verify_tls off in config.",
            )
        if find_cause(exc, socket.gaierror):
            return RemoteError(
                f"cannot resolve the host of {url}",
                "Check the host name in --server.",
            )
        return RemoteError(
            f"could not connect to {url}: {self.server_text(str(exc), 160)}",
            "Check the address and that the server is reachable.",
        )

    def status_error(
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
        msg = self.server_text(raw) or reason or "no message"
        head = f"{status} {reason}".strip()
        url = self.url
        if status in (401, 403):
            return self._auth_error(head, msg)
        if 300 <= status < 400:
            where = display_url(location) if location else "another address"
            return RemoteError(
                f"the server at {url} redirects {what} to {where} ({head})",
                "Use the final address in --server (we do not follow redirects, so the API "
                "key never goes to another host).",
            )
        if sent is not None and status in (400, 422):
            refused = self._refused_request(head, raw, param, msg, sent)
            if refused is not None:
                return refused
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

    def _auth_error(self, head: str, msg: str) -> RemoteError:
        """401 / 403: say whether a key was sent, and where it comes from."""
        url = self.url
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

    def _refused_request(
        self, head: str, raw: str, param: str | None, msg: str, sent: Mapping[str, Any]
    ) -> RemoteError | None:
        """400 / 422 naming a setting we sent, or a conversation over the context size."""
        url = self.url
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
        return None

    def _get_json(self, path: str, what: str) -> Any:
        try:
            resp = self._http().get(self.base_url + path, headers=self._headers())
        except httpx.HTTPError as exc:
            raise self.transport_error(exc) from None
        if resp.status_code >= 300:
            raise self.status_error(
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

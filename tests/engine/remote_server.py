"""Real servers on loopback for the remote-backend tests.

Two kinds, both listening on 127.0.0.1 only:
- `TransformersServer`: `transformers serve <model folder>` in a child process, the real
  OpenAI-compatible server (FastAPI + Uvicorn) from `transformers[serving]`.
- `ScriptedServer`: Python's own `http.server` with a handler written by the test, for the
  shapes the real server cannot be made to produce on demand (a stall, a 500 with a message,
  an expired API key). A real socket and real HTTP, so the client code under test is the
  same as in production.
Every wait here is bounded, and teardown always runs (kill after a grace period).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A port nothing listens on right now (the kernel's choice, so never a fixed number)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def serving_missing() -> str | None:
    """Why `transformers serve` cannot run here, or None when it can."""
    missing = [m for m in ("fastapi", "uvicorn", "openai") if importlib.util.find_spec(m) is None]
    if missing:
        return f'transformers serve needs {", ".join(missing)}: pip install "transformers[serving]"'
    return None


class TransformersServer:
    """`transformers serve FOLDER` on 127.0.0.1:<free port>, pinned to that one model."""

    def __init__(self, model_dir: Path, log_path: Path, startup_timeout_s: float = 120.0) -> None:
        self.model_dir = model_dir
        self.log_path = log_path
        self.startup_timeout_s = startup_timeout_s
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.startup_s = 0.0

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def model_id(self) -> str:
        # transformers serve lists a folder model under the path it was given.
        return str(self.model_dir)

    def start(self) -> None:
        # The port is free when we look; another process could take it before the server
        # binds, so a start that fails on "address in use" tries another port.
        for _attempt in range(3):
            self.port = free_port()
            if self._start_once():
                return
            if "address already in use" not in self.log_tail().lower():
                break
        raise RuntimeError(
            f"transformers serve did not start within {self.startup_timeout_s:.0f} s; "
            f"log tail:\n{self.log_tail()}"
        )

    def _start_once(self) -> bool:
        env = dict(os.environ)
        env.update(
            HF_HUB_OFFLINE="1",
            HF_HUB_DISABLE_TELEMETRY="1",
            # The test machine is small and shared; the tiny model needs one thread.
            OMP_NUM_THREADS="1",
            TOKENIZERS_PARALLELISM="false",
        )
        cmd = [
            sys.executable,
            "-m",
            "transformers.cli.transformers",
            "serve",
            str(self.model_dir),
            "--host",
            LOOPBACK,
            "--port",
            str(self.port),
            "--device",
            "cpu",
            "--log-level",
            "info",
        ]
        t0 = time.monotonic()
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # its own process group: teardown kills all of it
            )
        deadline = t0 + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            if self._healthy():
                self.startup_s = time.monotonic() - t0
                return True
            time.sleep(0.2)
        self.stop()
        return False

    def _healthy(self) -> bool:
        try:
            with socket.create_connection((LOOPBACK, self.port), timeout=1.0) as s:
                s.settimeout(1.0)
                s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                return s.recv(64).startswith(b"HTTP/1.1 200")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL, as when a server crashes or its machine goes away."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s. Safe to call twice."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


@contextlib.contextmanager
def transformers_server(model_dir: Path, log_path: Path) -> Iterator[TransformersServer]:
    server = TransformersServer(model_dir, log_path)
    try:
        server.start()
        yield server
    finally:
        server.stop()


# ---------------------------------------------------------------------------------------
# Scripted loopback server


@dataclass
class Received:
    """One request as the server saw it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


Handler = Callable[["ScriptedServer", BaseHTTPRequestHandler, Received], None]


@dataclass
class ScriptedServer:
    """A ThreadingHTTPServer on 127.0.0.1 whose responses a test writes as a function."""

    handler: Handler
    requests: list[Received] = field(default_factory=list)
    # Set at teardown: handlers that stall wait on this (with their own bound) and return.
    release: threading.Event = field(default_factory=threading.Event)
    # Set by handlers that noticed the client went away (for cancel tests).
    client_gone: threading.Event = field(default_factory=threading.Event)
    # Serve HTTPS with this context (server side) instead of plain HTTP.
    ssl_context: ssl.SSLContext | None = None
    _httpd: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self._httpd is not None
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://{LOOPBACK}:{self.port}"

    def __enter__(self) -> ScriptedServer:
        scripted = self

        class _Req(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                rec = Received(self.command, self.path, dict(self.headers.items()), body)
                scripted.requests.append(rec)
                scripted.handler(scripted, self, rec)

            do_GET = _handle
            do_POST = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep pytest output clean

        self._httpd = ThreadingHTTPServer((LOOPBACK, 0), _Req)
        self._httpd.daemon_threads = True
        if self.ssl_context is not None:
            self._httpd.socket = self.ssl_context.wrap_socket(self._httpd.socket, server_side=True)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)


# Building blocks for handlers.


def send_json(h: BaseHTTPRequestHandler, status: int, obj: Any) -> None:
    data = json.dumps(obj).encode()
    h.send_response(status)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", str(len(data)))
    h.end_headers()
    h.wfile.write(data)


def start_sse(h: BaseHTTPRequestHandler) -> None:
    """Headers of a close-delimited event stream (HTTP/1.0 style: the body ends at close)."""
    h.send_response(200)
    h.send_header("Content-Type", "text/event-stream")
    h.send_header("Cache-Control", "no-cache")
    h.end_headers()
    h.wfile.flush()


def sse_chunk(content: str | None = None, finish: str | None = None, **extra: Any) -> bytes:
    """One `data: {chat.completion.chunk}` event as OpenAI-style servers send it."""
    delta = {} if content is None else {"content": content}
    choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish}
    obj: dict[str, Any] = {"object": "chat.completion.chunk", "choices": [choice], **extra}
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def models_list(*ids: str) -> dict[str, Any]:
    return {"object": "list", "data": [{"id": i, "object": "model"} for i in ids]}


def wait_for_disconnect(server: ScriptedServer, h: BaseHTTPRequestHandler, limit_s: float) -> None:
    """Block (at most `limit_s`) until the client closes the connection; record it."""
    sock = h.connection
    sock.settimeout(0.05)
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline and not server.release.is_set():
        try:
            if sock.recv(1) == b"":
                server.client_gone.set()
                return
        except TimeoutError:
            continue
        except OSError:
            server.client_gone.set()
            return

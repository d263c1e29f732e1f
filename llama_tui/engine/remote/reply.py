"""One streamed reply from an OpenAI-compatible server, from request to stats.

`ReplyRun` checks the request, starts the reader thread, turns what it queues into text
chunks (stop strings applied with the shared `engine.stops.StopFilter`) and maps how the
stream ended (finish, stop string, cancel, HTTP status, cut connection) onto the reply's
`GenerationStats`. Whatever happens, the connection does not outlive the reply: closing it is
what tells the server to stop generating.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
from collections.abc import Iterator

from llama_tui.core.backend import ChatMessage, Generation, ReplayFacts, StopReason
from llama_tui.core.errors import GenerationError, RemoteError
from llama_tui.core.params import GenerationParams
from llama_tui.core.tokens import TokenLog
from llama_tui.engine.remote.http import ServerConnection
from llama_tui.engine.remote.logprobs import NO_LOGPROBS, REFUSED, request_fields
from llama_tui.engine.remote.stream import (
    _End,
    _Event,
    _HttpStatus,
    _Item,
    _Opened,
    _RunState,
)
from llama_tui.engine.remote.wire import build_request_body
from llama_tui.engine.stops import StopFilter

# How often the consuming thread looks at the cancel event while waiting for data.
POLL_INTERVAL_S = 0.05
CHAT_COMPLETIONS = "chat completions (POST /v1/chat/completions)"


class ReplyRun:
    """One reply: its request body, reader thread, stop filter and state."""

    def __init__(
        self,
        conn: ServerConnection,
        model: str | None,
        gen: Generation,
        params: GenerationParams,
        cancel: threading.Event,
    ) -> None:
        self.conn = conn
        self.model = model
        self.gen = gen
        self.params = params
        self.cancel = cancel
        self.st = _RunState(started=time.perf_counter())
        # Per-token logprobs (remote.logprobs): the log shares the list the stream fills.
        self.st.logprobs_k = params.logprobs
        if params.logprobs > 0:
            gen.token_log = TokenLog(params.logprobs, "remote", self.st.tokens)
        self.stops = StopFilter(params.stop)
        self.opened = False

    def run(self, history: tuple[ChatMessage, ...]) -> Iterator[str]:
        """The reply's text chunks; `gen.stats` is set however it ends."""
        self._check_request()
        assert self.model is not None
        body = build_request_body(
            self.model, history, self.params, include_usage=self.conn.include_usage
        )
        self.body = body
        self.reader = self.conn.open_stream(body)
        try:
            while self.gen.stats is None:
                if self.cancel.is_set():
                    self.reader.abort()
                    self._finish(StopReason.CANCELLED)
                    return
                try:
                    item = self.reader.items.get(timeout=POLL_INTERVAL_S)
                except queue.Empty:
                    continue
                yield from self._handle(item)
        except GenerationError as exc:
            # Raised by apply_event (an error event, a non-JSON event): stats first.
            if self.gen.stats is None:
                yield from self._fail(exc)
            raise
        except GeneratorExit:
            # The caller stopped iterating (UI closed, worker cancelled): count it as cancel.
            if self.gen.stats is None:
                self._finish(StopReason.CANCELLED)
            raise
        finally:
            self.reader.abort()

    # -- request ------------------------------------------------------------------------

    def _check_request(self) -> None:
        """Refuse a reply that cannot be sent, with the stats of an error."""
        err: GenerationError | None = None
        problems = self.params.problems()
        if self.model is None:
            err = RemoteError(
                f"no model selected on {self.conn.url}", "Load the remote backend first."
            )
        elif problems:
            listed = "; ".join(f"{k} {v}" for k, v in problems.items())
            err = GenerationError(f"invalid settings: {listed}", "Fix them in the settings panel.")
        if err is not None:
            self._finish(StopReason.ERROR, err)
            raise err

    # -- streaming ----------------------------------------------------------------------

    def _handle(self, item: _Item) -> Iterator[str]:
        if isinstance(item, _Opened):
            self.opened = True
        elif isinstance(item, _HttpStatus):
            if not self._retry_without_usage(item) and not self._retry_without_logprobs(item):
                yield from self._fail(self._status_error(item))
        elif isinstance(item, (_Event, _End)):
            yield from self._on_data(item)
        else:
            yield from self._fail(self.conn.transport_error(item.exc, mid_reply=self.opened))

    def _on_data(self, item: _Event | _End) -> Iterator[str]:
        st = self.st
        if isinstance(item, _Event):
            # An event that `_End` cut off before its blank line is never dispatched.
            text = self.stops.push(st.apply_event(item.data, self.conn.url, self.conn.server_text))
            if text:
                st.count(text)
                self.gen.tokens = st.chunks
                yield text
            if self.stops.stopped:
                # Enforced here too: some servers keep the stop string in the text
                # (transformers serve) or ignore `stop`; the local backend drops it, and so
                # do we. Closing the stream stops the server.
                self.reader.abort()
                self._finish(StopReason.STOP_STRING)
                return
        # transformers serve ends after the finish chunk, without [DONE].
        if st.done or (isinstance(item, _End) and st.finish_reason is not None):
            yield from self._flush()
            self._finish(st.final_reason(self.params.stop))
        elif isinstance(item, _End):
            yield from self._fail(
                RemoteError(
                    f"the server at {self.conn.url} ended the stream mid-reply "
                    f"({st.chars} characters received)",
                    "The partial reply is kept. Check the server's log, then retry.",
                )
            )

    def _flush(self) -> Iterator[str]:
        held = self.stops.flush()
        if held:
            self.st.count(held)
            self.gen.tokens = self.st.chunks
            yield held

    # -- how it ends --------------------------------------------------------------------

    def _retry_without_usage(self, item: _HttpStatus) -> bool:
        """A server that refuses `stream_options` gets the request again without it, once:
        it is our own addition, not a user setting."""
        if not (
            "stream_options" in self.body
            and item.status in (400, 422)
            and "stream_options" in item.body.decode("utf-8", "replace")
        ):
            return False
        self.conn.include_usage = False
        del self.body["stream_options"]
        self.reader = self.conn.open_stream(self.body)
        return True

    def _retry_without_logprobs(self, item: _HttpStatus) -> bool:
        """A server that refuses `logprobs` gets the request again without it, once: the
        reply matters more than its numbers, and the token log says they were refused."""
        if not (
            "logprobs" in self.body
            and item.status in (400, 422)
            and "logprobs" in item.body.decode("utf-8", "replace")
        ):
            return False
        for name in request_fields(1):
            self.body.pop(name, None)
        if self.gen.token_log is not None:
            self.gen.token_log.unavailable = REFUSED
        self.reader = self.conn.open_stream(self.body)
        return True

    def _status_error(self, item: _HttpStatus) -> GenerationError:
        return self.conn.status_error(
            CHAT_COMPLETIONS,
            item.status,
            item.reason,
            item.body,
            item.content_type,
            sent=self.body,
            location=item.location,
        )

    def _fail(self, err: GenerationError) -> Iterator[str]:
        # The held-back end of the reply is part of the partial text the caller keeps.
        yield from self._flush()
        self._finish(StopReason.ERROR, err)
        raise err

    def _finish(self, reason: StopReason, error: GenerationError | None = None) -> None:
        log = self.gen.token_log
        if log is not None and not log.tokens and log.unavailable is None and self.st.chunks:
            log.unavailable = NO_LOGPROBS  # never numbers made up
        stats = self.st.stats(reason, self.gen.prompt_tokens, error)
        # A server does not tell which tokens it drew, nor whether it honoured the seed.
        self.gen.stats = dataclasses.replace(
            stats, replay=ReplayFacts(seed=self.params.seed, decode_path="remote"))

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

The pieces live next door: `wire` (the request / response format, pure functions), `http`
(`ServerConnection`: URL, TLS, headers, API key, failures -> messages), `stream` (the reader
thread and one stream's state) and `reply` (one reply from request to stats).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx2 as httpx

from llama_tui.core.backend import (
    ChatMessage,
    Generation,
    LoadProgress,
    LoadStage,
    MemoryReading,
    ModelInfo,
    ProgressCallback,
)
from llama_tui.core.errors import ModelError, RemoteError
from llama_tui.core.params import GenerationParams
from llama_tui.engine.remote.http import DEFAULT_API_KEY_ENV, ServerConnection
from llama_tui.engine.remote.reply import ReplyRun
from llama_tui.engine.remote.stream import REMOTE_THINKING
from llama_tui.engine.remote.wire import estimate_tokens, listed_context_length, one_line


class RemoteBackend(ServerConnection):
    """A model served by an OpenAI-compatible server. Implements the `Backend` protocol."""

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        api_key_env: str | None = DEFAULT_API_KEY_ENV,
        verify_tls: bool = True,
        timeout_s: float = 30.0,
    ) -> None:
        super().__init__(base_url, api_key_env, verify_tls, timeout_s)
        self.requested_model = model
        self.info: ModelInfo | None = None
        self.model: str | None = None
        # True when the last count_tokens() fell back to the chars/4 estimate.
        self.token_count_approximate = True
        self._tokenize_supported: bool | None = None

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
            shown = ", ".join(one_line(i, 80) for i in ids[:10])
            more = f" and {len(ids) - 10} more" if len(ids) > 10 else ""
            raise ModelError(
                f"the server at {self.url} does not serve {one_line(wanted, 80)!r}",
                f"It serves: {shown}{more}. Pick one of those with --model.",
            )
        model = wanted if wanted is not None else ids[0]
        entry = entries[ids.index(model)]
        self.model = model
        self.info = ModelInfo(
            name=one_line(model.rstrip("/").rsplit("/", 1)[-1] or model, 80),
            spec=self.url,
            source=f"{self.url} ({one_line(model, 120)})",
            device=f"remote {urlsplit(self.base_url).netloc.rsplit('@', 1)[-1]}",
            dtype="unknown",
            context_length=listed_context_length(entry),
            chat_template=True,  # the server applies the model's template
            backend="remote",
            # Whether the model thinks shows in the stream; these are the markers it is split on.
            thinking=REMOTE_THINKING,
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
            yield from ReplyRun(self, self.model, gen, params, cancel).run(snapshot)

        gen = Generation(chunks())
        gen.prompt_tokens = estimate_tokens(snapshot)
        return gen

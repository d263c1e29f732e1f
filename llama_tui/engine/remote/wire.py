"""The OpenAI chat-completions wire format, as pure functions (unit-tested without a server).

Building a request from our settings (`build_request_body`), reading what servers send back
(`server_message`, `rejected_settings`, `map_finish_reason`, the context size in a model-list
entry), base-URL handling (`normalize_base_url`, `display_url`), the chars/4 token estimate,
and `one_line`, which makes untrusted server text safe to show (one printable line, bounded,
secrets redacted). No I/O here.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from llama_tui.core.backend import ChatMessage, StopReason
from llama_tui.core.errors import InvalidModelSpecError
from llama_tui.core.params import GenerationParams
from llama_tui.engine.remote.logprobs import request_fields as logprob_fields
from llama_tui.text import clean, redact

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
    return one_line(f"{parts.scheme}://{netloc}{parts.path}", 200)


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

    A reply's thinking (`ChatMessage.reasoning`) is not sent back: servers apply the model's
    template to `content`, vLLM's documented multi-turn example sends the answer alone, and
    DeepSeek's API answers 400 to a `reasoning_content` in the input messages.
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
    body.update(logprob_fields(params.logprobs))  # per-token logprobs (remote.logprobs)
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
    text are caught earlier by `engine.stops.StopFilter`.
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


def server_message(body: bytes, content_type: str = "") -> tuple[str, str | None]:
    """(message, parameter) from an error body in any of the common shapes.

    OpenAI / vLLM / llama.cpp: {"error": {"message", "param"}}; TGI: {"error": "..."};
    FastAPI: {"detail": "..."} or {"detail": [{"loc": [..., field], "msg": ...}]};
    anything else: the text itself. Not yet cleaned: callers pass it through `one_line`.
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


def one_line(text: str, limit: int = MAX_SERVER_MESSAGE_CHARS, secret: str | None = None) -> str:
    """Untrusted server text as we may show it: `text.clean`ed and `text.redact`ed (and the
    API key, when one was sent), then one line of at most `limit` characters.

    Control and format characters (bidi overrides among them) become spaces: the text is
    shown inside a one-line message, where they could reorder or hide what follows.
    """
    out = redact(clean(text), (secret,))
    out = "".join(" " if unicodedata.category(ch)[0] == "C" else ch for ch in out)
    out = " ".join(out.split())
    if len(out) > limit:
        out = out[: limit - 1].rstrip() + "…"
    return out


def find_cause(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, kind):
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return None


def listed_context_length(entry: Mapping[str, Any]) -> int:
    """The context size if the model list says it (vLLM: max_model_len; llama.cpp: meta)."""
    candidates: list[object] = [entry.get("max_model_len"), entry.get("context_length")]
    meta = entry.get("meta")
    if isinstance(meta, dict):
        candidates += [meta.get("n_ctx"), meta.get("n_ctx_train")]
    for value in candidates:
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return UNKNOWN_CONTEXT_LENGTH

"""Thinking test models and servers, made in the suite: the bundled model does not think.

- `build_thinking_model`: the tiny random Llama with ``<think>`` / ``</think>`` added to its
  tokenizer (plain added tokens, as Qwen3's and DeepSeek-R1's are) and a chat template of
  one of the real shapes:
  `QWEN3_TEMPLATE` takes a thought in ``reasoning_content`` (or inline) and leaves the
  thoughts of replies before the last user message out, as Qwen3's template does;
  `R1_TEMPLATE` opens ``<think>\\n`` in the generation prompt and cuts everything up to
  ``</think>`` out of earlier replies, as DeepSeek-R1's does.
- `with_response_template`: the same model set up for `transformers serve` to stream its
  thought as ``reasoning_content``, as it does for Qwen models.
- `reasoning_script`: a scripted OpenAI-compatible endpoint (`ScriptedServer`) streaming a
  reply as ``reasoning_content`` (or vLLM's newer ``reasoning``) deltas, then ``content``.
"""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from tests.engine.remote_server import (
    Received,
    ScriptedServer,
    models_list,
    send_json,
    sse_chunk,
    start_sse,
)

# Qwen3's logic (reasoning_content, or split inline; kept only after the last user query),
# on the tiny model's ChatML markers.
QWEN3_TEMPLATE = (
    "{%- set ns = namespace(last_query=-1) -%}"
    "{%- for m in messages -%}{%- if m.role == 'user' -%}"
    "{%- set ns.last_query = loop.index0 -%}{%- endif -%}{%- endfor -%}"
    "{%- for m in messages -%}"
    "{%- if m.role == 'assistant' -%}"
    "{%- set content = m.content -%}{%- set reasoning = '' -%}"
    "{%- if m.reasoning_content is string -%}{%- set reasoning = m.reasoning_content -%}"
    "{%- elif '</think>' in content -%}"
    "{%- set reasoning = content.split('</think>')[0].split('<think>')[-1] -%}"
    "{%- set content = content.split('</think>')[-1].lstrip('\\n') -%}{%- endif -%}"
    "{%- if loop.index0 > ns.last_query -%}"
    "{{ '<|im_start|>assistant\\n<think>\\n' + reasoning.strip('\\n') + '\\n</think>\\n\\n'"
    " + content.lstrip('\\n') }}"
    "{%- if not loop.last -%}{{ '<|im_end|>\\n' }}{%- endif -%}"
    "{%- else -%}{{ '<|im_start|>assistant\\n' + content + '<|im_end|>\\n' }}{%- endif -%}"
    "{%- else -%}{{ '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}"
    "{%- endif -%}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)

# DeepSeek-R1's logic: earlier replies lose everything up to </think>; the generation
# prompt opens the thought.
R1_TEMPLATE = (
    "{%- for m in messages -%}"
    "{%- if m.role == 'assistant' -%}{%- set content = m.content -%}"
    "{%- if '</think>' in content -%}{%- set content = content.split('</think>')[-1] -%}"
    "{%- endif -%}{{ '<|im_start|>assistant\\n' + content + '<|im_end|>\\n' }}"
    "{%- else -%}{{ '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}"
    "{%- endif -%}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n<think>\\n' }}{%- endif -%}"
)


def build_thinking_model(src: Path, dst: Path, template: str, *, special: bool = False) -> Path:
    """A copy of the tiny model at `src` that knows the think tokens and uses `template`.
    `special`: the think tokens are special tokens (decoding with skip_special_tokens drops
    them), as some tokenizers have them."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(src)
    tok.add_tokens(["<think>", "</think>"], special_tokens=special)
    tok.chat_template = template
    model = AutoModelForCausalLM.from_pretrained(src)
    model.resize_token_embeddings(len(tok), mean_resizing=False)
    tok.save_pretrained(dst)
    model.save_pretrained(dst)
    return dst


# What `transformers serve` parses a reply with (its declarative response template): the
# thought between the markers goes out as `reasoning_content` deltas, the rest as `content`.
RESPONSE_TEMPLATE = {
    "defaults": {"role": "assistant"},
    "start_anchor": "<|im_start|>assistant\n",
    "fields": {
        "reasoning_content": {"open": "<think>", "close": "</think>", "content": "text"},
        "content": {"close_pattern": r"\s*<\|im_end\|>", "content": "text"},
    },
}


def with_response_template(path: Path) -> Path:
    """The model at `path`, its tokenizer told how `transformers serve` splits replies."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    tok.response_template = RESPONSE_TEMPLATE
    tok.save_pretrained(path)
    return path


def reasoning_script(
    reasoning: list[str], content: list[str], *, field: str = "reasoning_content"
) -> Any:
    """A `ScriptedServer` handler: the model list, and every chat request answered with
    `reasoning` deltas in `field`, then `content` deltas, then a finish and [DONE]."""

    def handler(srv: ScriptedServer, h: BaseHTTPRequestHandler, req: Received) -> None:
        if req.path == "/v1/models":
            send_json(h, 200, models_list("thinker"))
            return
        start_sse(h)
        h.wfile.write(sse_chunk(None, None, **_role()))
        for piece in reasoning:
            h.wfile.write(_delta({field: piece}))
        for piece in content:
            h.wfile.write(sse_chunk(piece))
        h.wfile.write(sse_chunk(None, "stop"))
        h.wfile.write(b"data: [DONE]\n\n")
        h.wfile.flush()

    return handler


def sent_messages(srv: ScriptedServer) -> list[list[dict[str, Any]]]:
    """The `messages` of every chat request the server got."""
    return [json.loads(r.body)["messages"] for r in srv.requests if r.method == "POST"]


def _role() -> dict[str, Any]:
    return {"id": "chatcmpl-1"}


def reasoning_delta(text: str, field: str = "reasoning_content") -> bytes:
    """One SSE event carrying a piece of reasoning."""
    return _delta({field: text})


def _delta(delta: dict[str, Any]) -> bytes:
    obj = {
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
    }
    return b"data: " + json.dumps(obj).encode() + b"\n\n"

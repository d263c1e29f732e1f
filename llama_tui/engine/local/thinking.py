"""Whether a local model thinks, read from its chat template and tokenizer.

`detect_thinking` looks for a known pair of think markers (``<think>`` / ``</think>`` and the
like) among the tokenizer's added tokens and in the chat template's text, then renders a
one-message conversation with and without the generation prompt: when the generation prompt
ends inside an open thought (DeepSeek-R1's template writes ``<think>\\n`` there), every reply
starts thinking (`ThinkFormat.opens_in_prompt`).

`ThinkingHistory` is how earlier thoughts go back to the template. A template that reads a
``reasoning_content`` field (Qwen3's) gets the thinking there; any other template gets it
inline, between the markers, in the content, as the model wrote it (DeepSeek-R1's template
cuts everything up to ``</think>`` out of earlier replies itself). Either way the template
decides what the model sees again; nothing is stripped here.

A reply being continued that has a thought is not handed to the template at all: the prompt
is the generation prompt followed by what the model wrote (`written`), the thought between
its markers, so an unfinished thought stays open and the model sees its own tokens again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llama_tui.core.backend import ChatMessage
from llama_tui.core.thinking import ThinkFormat

log = logging.getLogger(__name__)

# Marker pairs models are known to think between, most common first.
KNOWN_MARKERS: tuple[tuple[str, str], ...] = (
    ("<think>", "</think>"),  # DeepSeek-R1 and its distills, Qwen3, QwQ, SmolLM3, Phi-4 reasoning
    ("<thinking>", "</thinking>"),
    ("<|START_THINKING|>", "<|END_THINKING|>"),  # Cohere Command A reasoning
    ("\u25c1think\u25b7", "\u25c1/think\u25b7"),  # Kimi
)
REASONING_KEY = "reasoning_content"  # the field Qwen3-style templates read a thought from


@dataclass(frozen=True)
class ThinkingHistory:
    """How a thinking model's earlier thoughts are handed to its chat template."""

    fmt: ThinkFormat
    key: str | None  # the message field the template reads; None: inline in the content

    def message(self, m: ChatMessage) -> dict[str, str]:
        """`m` as a template message: role, content and, where the template reads it,
        the thought."""
        if m.role != "assistant" or not m.reasoning:
            return {"role": m.role, "content": m.content}
        if self.key is not None:
            return {"role": m.role, "content": m.content, self.key: m.reasoning}
        return {"role": m.role, "content": self.fmt.inline(m.reasoning, m.content)}

    def written(self, m: ChatMessage) -> str:
        """What the model wrote of reply `m` after the generation prompt: the open marker
        (unless the prompt holds it), the thought, and the close marker with the answer
        once there is one."""
        opened = "" if self.fmt.opens_in_prompt else self.fmt.open
        return (
            opened
            + self.fmt.inline(m.reasoning, m.content, closed=bool(m.content))[len(self.fmt.open) :]
        )


def detect_thinking(tokenizer: Any) -> ThinkingHistory | None:
    """The model's thinking markers and how its template takes earlier thoughts; None when
    neither its tokenizer nor its chat template knows any think markers."""
    template = getattr(tokenizer, "chat_template", None)
    template_text = template if isinstance(template, str) else ""
    added = _added_tokens(tokenizer)
    for open_marker, close_marker in KNOWN_MARKERS:
        in_vocab = open_marker in added and close_marker in added
        if not in_vocab and close_marker not in template_text:
            continue
        fmt = ThinkFormat(
            open_marker,
            close_marker,
            opens_in_prompt=_opens_in_prompt(
                tokenizer, fmt_open=open_marker, fmt_close=close_marker
            ),
        )
        key = REASONING_KEY if REASONING_KEY in template_text else None
        return ThinkingHistory(fmt, key)
    return None


def marker_decoder(
    tokenizer: Any, history: ThinkingHistory | None
) -> Callable[[list[int]], str] | None:
    """A reply decode that keeps the think markers where the tokenizer counts them special
    (decoding with `skip_special_tokens` would drop them, and the thought would run into the
    answer), still dropping every other special token; None where the markers are plain
    added tokens (Qwen3's, DeepSeek-R1's) and the usual decode keeps them. Call it under the
    tokenizer's lock."""
    if history is None:
        return None
    specials = set(getattr(tokenizer, "all_special_ids", ()) or ())
    for token_id, added in (getattr(tokenizer, "added_tokens_decoder", None) or {}).items():
        if getattr(added, "special", False):
            specials.add(int(token_id))
    markers = {tokenizer.convert_tokens_to_ids(m) for m in (history.fmt.open, history.fmt.close)}
    if not specials & markers:
        return None
    drop = frozenset(specials - markers)

    def decode(ids: list[int]) -> str:
        kept = [i for i in ids if i not in drop]
        return str(tokenizer.decode(kept, skip_special_tokens=False))

    return decode


def _added_tokens(tokenizer: Any) -> set[str]:
    decoder = getattr(tokenizer, "added_tokens_decoder", None) or {}
    return {str(getattr(t, "content", t)) for t in decoder.values()}


def _opens_in_prompt(tokenizer: Any, *, fmt_open: str, fmt_close: str) -> bool:
    """True when the template's generation prompt leaves a thought open."""
    if not getattr(tokenizer, "chat_template", None):
        return False
    probe = [{"role": "user", "content": "Hi"}]
    try:
        without = str(
            tokenizer.apply_chat_template(probe, tokenize=False, add_generation_prompt=False)
        )
        with_prompt = str(
            tokenizer.apply_chat_template(probe, tokenize=False, add_generation_prompt=True)
        )
    except Exception:  # a template that refuses the probe: the model opens its own
        log.info("could not render the chat template to look for an open thought", exc_info=True)
        return False
    tail = with_prompt[len(without) :] if with_prompt.startswith(without) else with_prompt
    at = tail.rfind(fmt_open)
    return at >= 0 and fmt_close not in tail[at:]

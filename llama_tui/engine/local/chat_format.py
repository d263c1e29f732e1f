"""Turning a chat history into prompt token ids, and fitting it into the model's context.

Three modes:
- `chat`: the tokenizer's chat template. Control tokens typed by the user (`<|im_end|>` ...)
  are encoded as plain text (`sanitize_control_tokens=True` where transformers supports it,
  else escaped with a word joiner). A trailing assistant message is continued
  (`continue_final_message=True`) instead of starting a new reply.
- `plain`: a base model without a chat template. The history becomes one document: the system
  prompt, then each user message on a new line with the model's replies appended verbatim, so
  the model continues the text (and the KV cache of the previous turn stays a prefix).
- `raw`: no template and no history: the last user message is the prompt, exactly as typed
  (plus a trailing assistant message when continuing). This is `--raw`.

Truncation drops the oldest non-system messages, whole turns at a time (templates such as
Llama 2's raise unless user and assistant alternate), and keeps the system prompt and the last
user message. It binary-searches the number of dropped turns, so a long chat is rendered
O(log n) times, not n.
"""

from __future__ import annotations

import inspect
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from llama_tui.core.backend import ChatMessage
from llama_tui.core.errors import ContextOverflowError, GenerationError
from llama_tui.engine.local.thinking import ThinkingHistory, detect_thinking

Mode = Literal["chat", "plain", "raw"]
WORD_JOINER = "\u2060"


@dataclass(frozen=True)
class FittedPrompt:
    """The prompt that will be fed to the model, after truncation."""

    ids: list[int]
    dropped: int  # history messages left out to fit the context
    messages: tuple[ChatMessage, ...]  # what was rendered


class ChatFormatter:
    """Renders histories for one tokenizer. Thread-safe through `lock` (shared with decoding:
    the Rust tokenizer raises "Already borrowed" if reconfigured while another thread uses it)."""

    def __init__(self, tokenizer: Any, *, raw: bool = False, lock: threading.Lock | None = None):
        self.tokenizer = tokenizer
        self.raw = raw
        self.lock = lock or threading.Lock()
        template = getattr(tokenizer, "chat_template", None)
        self.has_template = bool(template)
        try:
            params = inspect.signature(tokenizer.apply_chat_template).parameters
            self.native_sanitize = "sanitize_control_tokens" in params
        except (TypeError, ValueError, AttributeError):  # pragma: no cover - exotic tokenizers
            self.native_sanitize = False
        self._control_tokens = self._find_control_tokens()
        # A thinking model: earlier thoughts go to the template the way it takes them.
        self.thinking: ThinkingHistory | None = detect_thinking(tokenizer)

    @property
    def mode(self) -> Mode:
        if self.raw:
            return "raw"
        return "chat" if self.has_template else "plain"

    # -- rendering -------------------------------------------------------------------------

    def encode(self, history: Sequence[ChatMessage]) -> list[int]:
        """Prompt ids for the whole history (no truncation)."""
        if not history:
            raise GenerationError("There is nothing to reply to: the conversation is empty.")
        mode = self.mode
        with self.lock:
            if mode == "chat":
                return self._encode_chat(history)
            return self._encode_text(self._plain_text(history, raw=mode == "raw"))

    def _encode_chat(self, history: Sequence[ChatMessage]) -> list[int]:
        continuing = history[-1].role == "assistant"
        if continuing and self.thinking is not None and history[-1].reasoning:
            # A thought being continued: the generation prompt, then what the model wrote.
            return (self._encode_chat(history[:-1])
                    + self._encode_written(self.thinking.written(history[-1])))
        kwargs: dict[str, Any] = {
            "add_generation_prompt": not continuing,
            "continue_final_message": continuing,
            "tokenize": True,
            "return_dict": False,
        }
        msgs = [self._message(m) for m in history]
        if self.native_sanitize:
            kwargs["sanitize_control_tokens"] = True
        else:
            msgs = [{k: self._escape(v) if k != "role" else v for k, v in msg.items()}
                    for msg in msgs]
        try:
            out = self.tokenizer.apply_chat_template(msgs, **kwargs)
        except Exception as exc:  # jinja errors: "roles must alternate", raise_exception(...)
            raise GenerationError(
                f"The model's chat template rejected this conversation: {exc}",
                "Check the order of the messages (some templates need user/assistant to "
                "alternate, or allow no system prompt), or use --raw.",
            ) from exc
        return _as_ids(out)

    def _message(self, m: ChatMessage) -> dict[str, str]:
        if self.thinking is None:
            return {"role": m.role, "content": m.content}
        return self.thinking.message(m)

    def _encode_written(self, text: str) -> list[int]:
        """Model output as ids: its think markers as their tokens, the rest as plain text
        (control tokens inside it stay text)."""
        assert self.thinking is not None
        fmt = self.thinking.fmt
        ids: list[int] = []
        for part in re.split(f"({re.escape(fmt.open)}|{re.escape(fmt.close)})", text):
            marker = part in (fmt.open, fmt.close)
            token = self.tokenizer.convert_tokens_to_ids(part) if marker else None
            if isinstance(token, int) and token != self.tokenizer.unk_token_id:
                ids.append(token)
            elif part:
                out = self.tokenizer(part, add_special_tokens=False, split_special_tokens=True)
                ids += _as_ids(out["input_ids"])
        return ids

    def _encode_text(self, text: str) -> list[int]:
        # split_special_tokens: control tokens typed by the user stay text here too; BOS (if
        # the tokenizer adds one) still comes from the post-processor.
        try:
            out = self.tokenizer(text, add_special_tokens=True, split_special_tokens=True)
        except TypeError:  # pragma: no cover - slow tokenizers without the flag
            out = self.tokenizer(self._escape(text), add_special_tokens=True)
        return _as_ids(out["input_ids"])

    @staticmethod
    def _plain_text(history: Sequence[ChatMessage], raw: bool) -> str:
        if raw:
            # The last user message is the prompt; a trailing assistant message is continued.
            last_user = max(
                (i for i, m in enumerate(history) if m.role == "user"), default=len(history) - 1
            )
            return "".join(m.content for m in history[last_user:] if m.role != "system")
        system = "\n\n".join(m.content for m in history if m.role == "system" and m.content)
        parts: list[str] = [system + "\n\n"] if system else []
        previous: str | None = None
        for m in history:
            if m.role == "system":
                continue
            if m.role == "user" and previous is not None:
                parts.append("\n")
            # A reply is appended verbatim: it is what the model wrote after the user's text.
            parts.append(m.content)
            previous = m.role
        return "".join(parts)

    def _find_control_tokens(self) -> tuple[str, ...]:
        tok = self.tokenizer
        found: set[str] = set(getattr(tok, "all_special_tokens", ()) or ())
        decoder = getattr(tok, "added_tokens_decoder", None) or {}
        for added in decoder.values():
            content = getattr(added, "content", None)
            if content and getattr(added, "special", False):
                found.add(content)
        # Longest first, so "<|im_start|>" is escaped before a shorter overlapping token.
        return tuple(sorted((t for t in found if len(t) > 1), key=len, reverse=True))

    def _escape(self, text: str) -> str:
        """Fallback for transformers without `sanitize_control_tokens`: a word joiner after the
        first character keeps the text readable but no longer matches the control token."""
        for t in self._control_tokens:
            if t in text:
                text = text.replace(t, t[0] + WORD_JOINER + t[1:])
        return text

    # -- fitting into the context ----------------------------------------------------------

    def fit(
        self, history: Sequence[ChatMessage], max_new_tokens: int, context_length: int
    ) -> FittedPrompt:
        """Drop the oldest turns until prompt + max_new_tokens fits `context_length`."""
        budget = context_length - max_new_tokens
        full = tuple(history)
        ids = self.encode(full)
        if len(ids) <= budget:
            return FittedPrompt(ids, 0, full)
        cuts = self._cut_points(full)
        if self.mode == "raw" or not cuts:
            raise _overflow(len(ids), max_new_tokens, context_length)
        # Smallest cut (fewest messages dropped) that fits; token count falls as cuts grow.
        last = self._apply_cut(full, cuts[-1])
        last_ids = self.encode(last)
        if len(last_ids) > budget:
            raise _overflow(len(last_ids), max_new_tokens, context_length)
        best, best_ids = cuts[-1], last_ids
        lo, hi = 0, len(cuts) - 1  # cuts[hi] is known to fit
        while lo < hi:
            mid = (lo + hi) // 2
            candidate = self.encode(self._apply_cut(full, cuts[mid]))
            if len(candidate) <= budget:
                hi, best, best_ids = mid, cuts[mid], candidate
            else:
                lo = mid + 1
        return FittedPrompt(best_ids, best, self._apply_cut(full, best))

    @staticmethod
    def _cut_points(history: tuple[ChatMessage, ...]) -> list[int]:
        """Valid numbers of droppable messages to drop, ascending (0 excluded).

        Droppable: non-system messages before the last user message. A cut is valid when the
        first kept non-system message is a user message, so turns stay whole.
        """
        last_user = max((i for i, m in enumerate(history) if m.role == "user"), default=-1)
        if last_user <= 0:
            return []
        droppable = [i for i in range(last_user) if history[i].role != "system"]
        cuts = []
        for k in range(1, len(droppable) + 1):
            next_index = droppable[k] if k < len(droppable) else last_user
            if history[next_index].role == "user":
                cuts.append(k)
        return cuts

    @staticmethod
    def _apply_cut(history: tuple[ChatMessage, ...], k: int) -> tuple[ChatMessage, ...]:
        out: list[ChatMessage] = []
        for m in history:
            if m.role != "system" and k > 0:
                k -= 1
                continue
            out.append(m)
        return tuple(out)


def _overflow(prompt_tokens: int, max_new_tokens: int, context_length: int) -> ContextOverflowError:
    room = context_length - prompt_tokens
    fix = "Shorten your message"
    if room > 0:
        fix += f", or lower max new tokens to {room} or less"
    return ContextOverflowError(
        f"The prompt needs {prompt_tokens} tokens plus {max_new_tokens} new tokens, but the "
        f"model's context holds {context_length} tokens (older messages were already left out).",
        fix + ".",
    )


def _as_ids(out: Any) -> list[int]:
    """Normalise what tokenizers return across versions: list, nested list, BatchEncoding."""
    if not isinstance(out, list) and hasattr(out, "__getitem__") and "input_ids" in out:
        out = out["input_ids"]
    if hasattr(out, "tolist"):
        out = out.tolist()
    if out and isinstance(out[0], list):
        out = out[0]
    return [int(i) for i in out]

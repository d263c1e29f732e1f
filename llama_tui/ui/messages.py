"""Messages posted from worker threads to the UI thread, as small dataclasses.

Workers never touch widgets: they `post_message` one of these (thread-safe, non-blocking;
`call_from_thread` would block the generating thread once per token). State reports (load
progress, memory, context size) opt in to `can_replace`, so a backlog collapses to the
newest one; content (reply chunks, the end of a reply, a loaded model) never does, since
each carries something the user must see.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from textual.message import Message

if TYPE_CHECKING:
    from llama_tui.chat.reply import ReplyError
    from llama_tui.core.backend import (
        Backend,
        GenerationStats,
        LoadProgress,
        MemoryReading,
        ModelInfo,
    )
    from llama_tui.core.params import GenerationParams


# -- state reports: only the newest matters -----------------------------------------------


@dataclass
class LoadProgressed(Message):
    """A progress report from `Backend.load` (download, conversion, loading to device)."""

    load_id: int
    progress: LoadProgress

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, LoadProgressed) and message.load_id == self.load_id


@dataclass
class ContextCounted(Message):
    """Prompt tokens the conversation takes now (from the real tokenizer)."""

    used: int

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, ContextCounted)


@dataclass
class MemoryRead(Message):
    """A fresh memory reading for the status bar."""

    reading: MemoryReading

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, MemoryRead)


# -- events: every one is handled ---------------------------------------------------------


@dataclass
class ModelLoaded(Message):
    """A backend finished loading; the app swaps it in. `defaults`: the model's own
    generation_config, read in the worker."""

    load_id: int
    spec: str
    backend: Backend
    info: ModelInfo
    defaults: GenerationParams


@dataclass
class ModelLoadFailed(Message):
    """Loading failed. `cause` / `fix` are sanitised, user-facing text; `kind` is the
    error class name, e.g. "ModelNotCachedError"."""

    load_id: int
    spec: str
    cause: str
    fix: str
    kind: str


@dataclass
class ReplyStarted(Message):
    """The backend accepted the request; `dropped` old messages did not fit the context."""

    gen_id: int
    dropped: int
    prompt_tokens: int


@dataclass
class ReplyChunk(Message):
    """Raw (unsanitised) text from the model; the UI thread cleans it before display.
    `thinking`: a piece of the reply's thought, which has `tokens` over `seconds` so far."""

    gen_id: int
    text: str
    thinking: bool = False
    tokens: int = 0
    seconds: float | None = None


@dataclass
class ReplyFinished(Message):
    """A generation ended: normally, stopped, or with an error (sanitised cause and fix)."""

    gen_id: int
    stats: GenerationStats | None
    error: ReplyError | None = None

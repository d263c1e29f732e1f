"""App-wide messages posted from worker threads to the UI thread.

Workers never touch widgets: they `post_message` one of these to the app (thread-safe,
non-blocking; `call_from_thread` would block the generating thread once per token, see
TECH_NOTES.md §8). Frequent state reports (load progress, memory, context size) opt in to
`can_replace` so a backlog collapses to the newest one; content chunks never do, since
every chunk is text the user must see.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.message import Message

if TYPE_CHECKING:
    from llama_tui.core.backend import (
        Backend,
        GenerationStats,
        LoadProgress,
        MemoryReading,
        ModelInfo,
    )
    from llama_tui.core.params import GenerationParams


class LoadProgressed(Message):
    """A progress report from `Backend.load` (download, conversion, loading to device)."""

    def __init__(self, load_id: int, progress: LoadProgress) -> None:
        super().__init__()
        self.load_id = load_id
        self.progress = progress

    def can_replace(self, message: Message) -> bool:
        # Only the newest progress line matters; drop older ones still in the queue.
        return isinstance(message, LoadProgressed) and message.load_id == self.load_id


class ModelLoaded(Message):
    """A backend finished loading; the app swaps it in."""

    def __init__(
        self,
        load_id: int,
        spec: str,
        backend: Backend,
        info: ModelInfo,
        defaults: GenerationParams,
    ) -> None:
        super().__init__()
        self.load_id = load_id
        self.spec = spec
        self.backend = backend
        self.info = info
        self.defaults = defaults  # the model's own generation_config, read in the worker


class ModelLoadFailed(Message):
    """Loading failed. `cause` / `fix` are already sanitised, user-facing text."""

    def __init__(self, load_id: int, spec: str, cause: str, fix: str, kind: str) -> None:
        super().__init__()
        self.load_id = load_id
        self.spec = spec
        self.cause = cause
        self.fix = fix
        self.kind = kind  # the error class name, e.g. "ModelNotCachedError"


class ReplyStarted(Message):
    """The backend accepted the request; `dropped` old messages did not fit the context."""

    def __init__(self, gen_id: int, dropped: int, prompt_tokens: int) -> None:
        super().__init__()
        self.gen_id = gen_id
        self.dropped = dropped
        self.prompt_tokens = prompt_tokens


class ReplyChunk(Message):
    """Raw (unsanitised) text from the model; the UI thread cleans it before display."""

    def __init__(self, gen_id: int, text: str) -> None:
        super().__init__()
        self.gen_id = gen_id
        self.text = text


class ReplyFinished(Message):
    """A generation ended: normally, stopped, or with an error (`cause` / `fix` set)."""

    def __init__(
        self,
        gen_id: int,
        stats: GenerationStats | None,
        cause: str | None = None,
        fix: str = "",
    ) -> None:
        super().__init__()
        self.gen_id = gen_id
        self.stats = stats
        self.cause = cause
        self.fix = fix


class ContextCounted(Message):
    """Prompt tokens the conversation takes now (from the real tokenizer)."""

    def __init__(self, used: int) -> None:
        super().__init__()
        self.used = used

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, ContextCounted)


class MemoryRead(Message):
    """A fresh memory reading for the status bar."""

    def __init__(self, reading: MemoryReading) -> None:
        super().__init__()
        self.reading = reading

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, MemoryRead)

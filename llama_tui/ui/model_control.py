"""Loading and switching models, and the status bar's meters (memory, context).

The model loads in a thread worker (torch is imported there, never on the UI thread, so the
app paints first). Progress arrives as `LoadProgressed` messages. A failed load shows the
classified cause and fix and keeps the previous model, if any; `/model SPEC` or F4 tries
another without restarting. Memory and context are read off the UI thread and posted as
coalescing messages; the status bar never updates per token.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import time
from typing import TYPE_CHECKING

from textual import work

from llama_tui import locations
from llama_tui.core import errors
from llama_tui.core.backend import Backend, LoadProgress, LoadStage, ReportsOptimising
from llama_tui.core.params import GenerationParams
from llama_tui.text import clean, redact
from llama_tui.ui.base import ChatAppBase
from llama_tui.ui.messages import (
    ContextCounted,
    LoadProgressed,
    MemoryRead,
    ModelLoaded,
    ModelLoadFailed,
)
from llama_tui.ui.params_form import FIELD_BY_NAME
from llama_tui.ui.widgets.status_bar import human_bytes

if TYPE_CHECKING:
    from llama_tui.config.settings import Settings

log = logging.getLogger(__name__)

PICK_HINT = "Press F4 to pick another model, or type /model SPEC (a repo id, folder, .gguf, demo)."


def describe_error(exc: BaseException) -> tuple[str, str, str]:
    """`llama_tui.core.errors.describe_error` for the screen: sanitised, secrets redacted."""
    details = f"Details are in the log file {locations.log_file()}."
    cause, fix, kind = errors.describe_error(exc, details)
    return redact(clean(cause)), redact(clean(fix)), kind


class ModelControl(ChatAppBase):
    """Model lifecycle and meters."""

    # -- loading ---------------------------------------------------------------------------

    def start_load(self, spec: str) -> None:
        """Load `spec` in the background; the current model (if any) stays until it works."""
        self.load_id += 1
        self.loading_spec = spec
        if self.settings.server:
            settings = dataclasses.replace(self.settings, server_model=spec)
        else:
            settings = dataclasses.replace(self.settings, model=spec)
        if self.backend is None:
            self.state = "loading"
            # The model piece names what is loading; the state piece gets the stages.
            self.status.update_facts(state="loading", detail="", model=spec)
        else:
            self.status.update_facts(detail="")
        if self.backend is not None:
            self.say(f"Loading {spec}; {self.info.name if self.info else 'the current model'} "
                     "stays in use until it is ready.")
        self._load_worker(self.load_id, settings)

    @work(thread=True, exclusive=True, exit_on_error=False, group="load")
    def _load_worker(self, load_id: int, settings: Settings) -> None:
        spec = settings.server_model if settings.server else settings.model
        spec = spec or ""
        backend: Backend | None = None

        def progress(p: LoadProgress) -> None:
            # "ready" is ModelLoaded's to say; posted, it would also replace (coalesce) the
            # last real stage still queued.
            if p.stage is not LoadStage.READY:
                self.post_message(LoadProgressed(load_id, p))

        try:
            backend = self.backend_factory(settings)
            info = backend.load(progress)
            defaults = backend.default_params()
        except BaseException as exc:  # every failure becomes a message; the app never exits
            log.exception("loading %s failed", redact(clean(spec)))
            cause, fix, kind = describe_error(exc)
            if backend is not None:
                _close_quietly(backend)
            self.post_message(ModelLoadFailed(load_id, spec, cause, fix, kind))
            return
        self.post_message(ModelLoaded(load_id, spec, backend, info, defaults))

    def on_load_progressed(self, message: LoadProgressed) -> None:
        if message.load_id != self.load_id:
            return
        p = message.progress
        pct = f" {p.fraction:.0%}" if p.fraction is not None else ""
        detail = f"{p.message or p.stage.value}{pct}"
        if self.backend is None:
            self.status.update_facts(state="loading", detail=detail)
        else:
            self.status.update_facts(detail=f"(next: {detail})")

    async def on_model_loaded(self, message: ModelLoaded) -> None:
        if message.load_id != self.load_id:
            # A superseded load finished anyway (exclusive workers keep running): free it.
            self._close_backend(message.backend)
            return
        old = self.backend
        switching = old is not None
        self.backend, self.info = message.backend, message.info
        self.loading_spec = None
        self.load_error = None
        if self.settings.server:
            self.settings = dataclasses.replace(self.settings, server_model=message.spec)
        else:
            self.settings = dataclasses.replace(self.settings, model=message.spec)
        if old is not None:
            self._close_backend(old)
        self.defaults = message.defaults
        self.params = self.effective_params(message.defaults)
        self.panel.load(self.params, self.defaults, self.system_prompt, self.context_length)
        info = message.info
        self.status.update_facts(
            state="ready" if not self.generating else "generating",
            detail="",
            model=info.name,
            device=info.device,
            dtype=info.dtype,
            context_max=info.context_length,
        )
        if not self.generating:
            self.state = "ready"
        self.record("model_changed", dataclasses.asdict(info))
        if switching:
            await self.note(f"Now using {info.name} ({info.device}, {info.dtype}).")
        self.refresh_meters()
        if self.queued:
            self.queued = False
            await self.start_turn()

    async def on_model_load_failed(self, message: ModelLoadFailed) -> None:
        if message.load_id != self.load_id:
            return
        self.loading_spec = None
        self.load_error = (message.cause, message.fix)
        if self.backend is None:
            self.state = "error"
            self.status.update_facts(state="error", detail=message.kind)
            kept = ""
        else:
            self.status.update_facts(detail="")
            kept = f"\nStill using {self.info.name if self.info else 'the previous model'}."
        body = message.cause + (f"\n{message.fix}" if message.fix else "") + kept
        await self.note(f"{body}\n{PICK_HINT}", title=f"could not load {message.spec}",
                        variant="error")
        if self.queued:
            await self.note("Your message is kept; send /retry once a model is loaded.")
            self.queued = False

    def effective_params(self, defaults: GenerationParams) -> GenerationParams:
        """The model's defaults with the user's own choices (config, remembered, flags) on top.

        A user value that does not fit this model (e.g. max_new_tokens above its context)
        is dropped with a note rather than used.
        """
        chosen = {name: getattr(self.params, name) for name in self.user_fields}
        params = defaults.with_changes(**chosen)
        problems = params.problems(self.context_length)
        if problems:
            fixed = {k: getattr(defaults, k) for k in problems if k in chosen}
            params = params.with_changes(**fixed)
            for k, why in problems.items():
                label = FIELD_BY_NAME[k].label if k in FIELD_BY_NAME else k
                self.say(f"{label} {why}; using the model default.", severity="warning")
        return params

    def _close_backend(self, backend: Backend) -> None:
        self._close_worker(backend)

    @work(thread=True, exit_on_error=False, group="close")
    def _close_worker(self, backend: Backend) -> None:
        # Wait for any generation on it to end (it holds the lock), then free the memory.
        with self.backend_lock:
            _close_quietly(backend)
        gc.collect()

    # -- meters ----------------------------------------------------------------------------

    def refresh_meters(self) -> None:
        """Read memory and the context size in the background (never per token)."""
        if self.backend is None:
            return
        self._memory_worker(self.backend)
        if not self.generating:
            self._count_worker(self.backend, self.conversation.history())

    @work(thread=True, exclusive=True, exit_on_error=False, group="memory")
    def _memory_worker(self, backend: Backend) -> None:
        try:
            self.post_message(MemoryRead(backend.memory()))
        except Exception:
            log.debug("memory reading failed", exc_info=True)

    @work(thread=True, exclusive=True, exit_on_error=False, group="count")
    def _count_worker(self, backend: Backend, history: tuple[object, ...]) -> None:
        if not history:
            self.post_message(ContextCounted(0))  # some templates refuse an empty chat
            return
        # Tokenizers are not safe to share with a running generate: wait for it (the
        # finished generation's thread may still be releasing the lock), but not for ever.
        if not self.backend_lock.acquire(timeout=5):
            return
        try:
            used = backend.count_tokens(history)  # type: ignore[arg-type]
        except Exception:
            log.debug("token count failed", exc_info=True)
            return
        finally:
            self.backend_lock.release()
        self.post_message(ContextCounted(used))

    def on_memory_read(self, message: MemoryRead) -> None:
        r = message.reading
        text = f"{r.label} {human_bytes(r.used_bytes)}"
        if r.total_bytes and r.label != "RSS":  # device memory: how full it is matters
            text += f"/{human_bytes(r.total_bytes)}"
        self.status.update_facts(memory=text)

    def on_context_counted(self, message: ContextCounted) -> None:
        self.status.update_facts(context_used=message.used)

    def tick(self) -> None:
        """The status timer: elapsed time while generating; "optimising" while the engine
        compiles in the background (a cheap flag read); memory now and then."""
        turn = self.turn
        if turn is not None:
            elapsed = time.monotonic() - turn.started
            self.status.update_facts(detail=f"{elapsed:.0f}s")
        backend = self.backend
        optimising = isinstance(backend, ReportsOptimising) and backend.optimising
        self.status.update_facts(optimising=optimising)
        self._ticks += 1
        if self._ticks % 4 == 0 and self.backend is not None:
            self._memory_worker(self.backend)


def _close_quietly(backend: Backend) -> None:
    try:
        backend.close()
    except Exception:
        log.exception("closing the backend failed")


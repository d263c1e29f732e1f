"""The model in use for the whole app: loading, switching, and the status bar's meters.

`ModelHost` belongs to the App. The model loads in a thread worker (torch is imported there,
never on the UI thread, so the app paints first); progress arrives as `LoadProgressed`
messages. A failed load shows the classified cause and fix and keeps the previous model,
if any; `/model SPEC` or F4 tries another without restarting. Memory and context are read
off the UI thread and posted as coalescing messages; the status bar never updates per token.
Which model is asked for (with `--server`: the server's own unless `--server-model` names
one) is `llama_tui.chat.state`'s rule, shared with headless mode.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
from functools import partial
from typing import TYPE_CHECKING

from llama_tui.chat.state import asking_for, model_label, requested_model, server_models
from llama_tui.core.backend import (
    Backend,
    ChatMessage,
    LoadProgress,
    LoadStage,
    ReportsOptimising,
)
from llama_tui.text import clean, redact
from llama_tui.ui.context_meter import used_tokens
from llama_tui.ui.model_control import PICK_HINT, describe_error
from llama_tui.ui.widgets.status_bar import human_bytes

if TYPE_CHECKING:
    from textual.notifications import Notification

    from llama_tui.config.settings import Settings
    from llama_tui.core.backend import ModelInfo
    from llama_tui.ui.app import LlamaTuiApp
    from llama_tui.ui.messages import LoadProgressed, MemoryRead, ModelLoaded, ModelLoadFailed

log = logging.getLogger(__name__)


class ModelHost:
    """The backend in use, the load in progress, and the meters."""

    pick_hint = PICK_HINT

    def __init__(self, app: LlamaTuiApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings  # asks for the model in use (or the one last asked for)
        self.backend: Backend | None = None
        self.loading_spec: str | None = None
        self.load_id = 0
        self.load_error: tuple[str, str] | None = None  # (cause, fix) of the last failure
        self.loading_toast: Notification | None = None  # "Loading X; Y stays in use ..."
        # Serialises every backend call (generate, token counting) across worker threads.
        self.lock = threading.Lock()
        self._ticks = 0

    @property
    def info(self) -> ModelInfo | None:
        return self.app.chat_state.model

    @property
    def context_length(self) -> int | None:
        info = self.info
        return info.context_length if info else None

    @property
    def requested(self) -> str | None:
        return requested_model(self.settings)

    # -- loading ---------------------------------------------------------------------------

    def command(self, spec: str) -> None:
        """`/model SPEC` loads it; bare `/model` (and F4) opens the picker, which with a
        server offers the models it serves."""
        if self.app.refuse_while_generating():
            return
        if spec:
            self.start_load(spec)
            return
        error = "\n".join(x for x in self.load_error or () if x)
        current = self.loading_spec or (self.info.spec if self.info else self.settings.model)
        served = None
        if self.settings.server:  # the server's models, and the one asked for
            current = self.requested or ""
            served = partial(server_models, self.settings, self.app.backend_factory)

        def chosen(picked: str | None) -> None:
            if picked:
                self.start_load(picked)

        from llama_tui.ui.screens.model_picker import ModelPickerScreen  # not before 1st paint

        self.app.push_screen(ModelPickerScreen(error=error, current=current, served=served),
                             chosen)

    def start_load(self, spec: str | None) -> None:
        """Load `spec` in the background; the current model (if any) stays until it works.
        None, with a server: the model the server serves."""
        self.load_id += 1
        settings = asking_for(self.settings, spec)
        label = model_label(settings)
        self.loading_spec = label
        status = self.app.status
        if self.backend is None:
            # The model piece names what is loading; the state piece gets the stages.
            status.update_facts(state="loading", detail="", model=label)
        else:
            status.update_facts(detail="")
            name = self.info.name if self.info else "the current model"
            # Taken back when the load ends: "Now using ..." or the failure says the rest.
            self.loading_toast = self.app.say(
                f"Loading {label}; {name} stays in use until it is ready.")
        self.app.run_worker(partial(self._load, self.load_id, settings), thread=True,
                            exclusive=True, exit_on_error=False, group="load")

    def _load(self, load_id: int, settings: Settings) -> None:
        """The worker thread: build and load the backend; report progress and the end."""
        # The messages are imported by the workers that post them, not before the first paint.
        from llama_tui.ui.messages import LoadProgressed, ModelLoaded, ModelLoadFailed

        spec = requested_model(settings) or ""
        post = self.app.post_message
        backend: Backend | None = None

        def progress(p: LoadProgress) -> None:
            # "ready" is ModelLoaded's to say; posted, it would also replace (coalesce) the
            # last real stage still queued.
            if p.stage is not LoadStage.READY:
                post(LoadProgressed(load_id, p))

        try:
            backend = self.app.backend_factory(settings)
            info = backend.load(progress)
            defaults = backend.default_params()
        except BaseException as exc:  # every failure becomes a message; the app never exits
            log.exception("loading %s failed", redact(clean(spec)))
            cause, fix, kind = describe_error(exc)
            if backend is not None:
                _close_quietly(backend)
            post(ModelLoadFailed(load_id, spec, cause, fix, kind))
            return
        post(ModelLoaded(load_id, spec, backend, info, defaults))

    def progressed(self, message: LoadProgressed) -> None:
        if message.load_id != self.load_id:
            return
        p = message.progress
        pct = f" {p.fraction:.0%}" if p.fraction is not None else ""
        detail = f"{p.message or p.stage.value}{pct}"
        if self.backend is None:
            self.app.status.update_facts(state="loading", detail=detail)
        else:
            self.app.status.update_facts(detail=f"(next: {detail})")

    async def loaded(self, message: ModelLoaded) -> None:
        if message.load_id != self.load_id:
            # A superseded load finished anyway (exclusive workers keep running): free it.
            self.close_backend(message.backend)
            return
        app, old = self.app, self.backend
        self.backend = message.backend
        self._load_ended()
        self.load_error = None
        self.settings = asking_for(self.settings, message.spec or None)
        if old is not None:
            self.close_backend(old)
        info = message.info
        app.chat_state.model_loaded(info)
        app.prefs.model_defaults(message.defaults)
        generating = app.chat.generating
        app.status.update_facts(
            state="generating" if generating else "ready", detail="", model=info.name,
            device=info.device, dtype=info.dtype, context_max=info.context_length,
        )
        if old is not None:
            await app.chat.note(f"Now using {info.name} ({info.device}, {info.dtype}).")
        self.refresh_meters()
        await app.chat.replies.model_ready()

    async def load_failed(self, message: ModelLoadFailed) -> None:
        if message.load_id != self.load_id:
            return
        self._load_ended()
        self.load_error = (message.cause, message.fix)
        if self.backend is None:
            self.app.status.update_facts(state="error", detail=message.kind)
            kept = ""
        else:
            self.app.status.update_facts(detail="")
            kept = f"\nStill using {self.info.name if self.info else 'the previous model'}."
        body = message.cause + (f"\n{message.fix}" if message.fix else "") + kept
        chat = self.app.chat
        await chat.note(f"{body}\n{PICK_HINT}", title=f"could not load {message.spec}",
                        variant="error")
        await chat.replies.model_failed()

    def _load_ended(self) -> None:
        self.loading_spec = None
        if self.loading_toast is not None:
            self.app.unsay(self.loading_toast)
            self.loading_toast = None

    def close_backend(self, backend: Backend) -> None:
        self.app.run_worker(partial(self._close, backend), thread=True, exit_on_error=False,
                            group="close")

    def _close(self, backend: Backend) -> None:
        # Wait for any generation on it to end (it holds the lock), then free the memory.
        with self.lock:
            _close_quietly(backend)
        gc.collect()

    # -- meters ----------------------------------------------------------------------------

    def refresh_meters(self) -> None:
        """Read memory and the context size in the background (never per token)."""
        if self.backend is None:
            return
        self._read_memory(self.backend)
        if not self.app.chat.generating:
            history = self.app.chat_state.conversation.history()
            count = partial(self._count, self.backend, history, self.context_length)
            self.app.run_worker(count, thread=True,
                                exclusive=True, exit_on_error=False, group="count")

    def _read_memory(self, backend: Backend) -> None:
        self.app.run_worker(partial(self._memory, backend), thread=True, exclusive=True,
                            exit_on_error=False, group="memory")

    def _memory(self, backend: Backend) -> None:
        from llama_tui.ui.messages import MemoryRead

        try:
            self.app.post_message(MemoryRead(backend.memory()))
        except Exception:
            log.debug("memory reading failed", exc_info=True)

    def _count(self, backend: Backend, history: tuple[ChatMessage, ...],
               context_max: int | None) -> None:
        from llama_tui.ui.messages import ContextCounted

        if not history:
            self.app.post_message(ContextCounted(0))  # some templates refuse an empty chat
            return
        # Tokenizers are not safe to share with a running generate: wait for it (the
        # finished generation's thread may still be releasing the lock), but not for ever.
        if not self.lock.acquire(timeout=5):
            return
        try:
            # Bounded: a long history's oldest part is estimated (`context_meter`).
            used = used_tokens(backend, history, context_max)
        except Exception:
            log.debug("token count failed", exc_info=True)
            return
        finally:
            self.lock.release()
        self.app.post_message(ContextCounted(used))

    def memory_read(self, message: MemoryRead) -> None:
        r = message.reading
        text = f"{r.label} {human_bytes(r.used_bytes)}"
        if r.total_bytes and r.label != "RSS":  # device memory: how full it is matters
            text += f"/{human_bytes(r.total_bytes)}"
        self.app.status.update_facts(memory=text)

    def tick(self) -> None:
        """The status timer: elapsed time while generating; "optimising" while the engine
        compiles in the background (a cheap flag read); memory now and then."""
        status = self.app.status
        started = self.app.chat.replies.started_at
        if started is not None:
            status.update_facts(detail=f"{time.monotonic() - started:.0f}s")
        backend = self.backend
        status.update_facts(optimising=isinstance(backend, ReportsOptimising)
                            and backend.optimising)
        self._ticks += 1
        if self._ticks % 4 == 0 and backend is not None:
            self._read_memory(backend)

    async def memory_command(self) -> None:
        """/memory: per device and the model's placement (the status bar has the total)."""
        backend, info = self.backend, self.info
        if backend is None or info is None:
            self.app.say("No model is loaded.")
            return
        try:
            r = await asyncio.to_thread(backend.memory)
        except Exception as e:  # a reading must never break the chat
            self.app.say(f"Could not read memory: {clean(str(e))}", severity="warning")
            return
        total = f" of {human_bytes(r.total_bytes)}" if r.total_bytes else ""
        lines = [f"{info.name} on {info.device}: {r.label} {human_bytes(r.used_bytes)}{total}"]
        lines += [f"  {dev}: {human_bytes(used)}" for dev, used in r.per_device]
        if info.placement:
            by_device: dict[str, int] = {}
            for where in info.placement.values():
                by_device[where] = by_device.get(where, 0) + 1
            lines.append("Placement: " + ", ".join(f"{d} {n} modules"
                                                    for d, n in by_device.items()))
        await self.app.chat.note("\n".join(lines), title="memory")


def _close_quietly(backend: Backend) -> None:
    try:
        backend.close()
    except Exception:
        log.exception("closing the backend failed")

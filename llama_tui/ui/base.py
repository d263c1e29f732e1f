"""State shared by the app's controllers (model, chat, commands), and small helpers.

The app is split into mixins so no module grows past a few hundred lines:
`ModelControl` (loading and switching models, status meters), `ChatControl` (one turn:
prompt, generation worker, streaming, stop / retry / edit / continue) and `CommandControl`
(slash commands, palette, save, copy). They all derive from `ChatAppBase`, which holds the
state and typed accessors for the widgets. Only the UI thread touches any of it.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from textual.app import App
from textual.reactive import reactive
from textual.widget import Widget

from llama_tui.core.backend import Backend, ModelInfo
from llama_tui.core.params import GenerationParams
from llama_tui.session.transcript import Conversation, Message
from llama_tui.text import clean, redact
from llama_tui.ui.widgets.prompt_input import PromptInput
from llama_tui.ui.widgets.settings_panel import SettingsPanel
from llama_tui.ui.widgets.status_bar import StatusBar
from llama_tui.ui.widgets.transcript import AssistantTurn, Transcript

if TYPE_CHECKING:
    from llama_tui.config.settings import LoadedSettings, Settings
    from llama_tui.session.recorder import SessionRecorder

log = logging.getLogger(__name__)

BackendFactory = Callable[["Settings"], Backend]
W = TypeVar("W", bound=Widget)


@dataclasses.dataclass
class Turn:
    """The reply being generated: its message, widget, and the worker's stop/done events."""

    gen_id: int
    message: Message
    widget: AssistantTurn
    cancel: threading.Event
    started: float
    continuing: bool = False  # appending to an earlier (stopped / cut-off) reply


class ChatAppBase(App[int]):
    """State and helpers; the behaviour lives in the controller mixins."""

    # UI state drives CSS classes through watchers (see app.py): -generating, -show-settings.
    state: reactive[str] = reactive("starting")
    show_settings: reactive[bool] = reactive(False)

    def __init__(
        self,
        loaded: LoadedSettings,
        backend_factory: BackendFactory,
        conversation: Conversation,
    ) -> None:
        super().__init__()
        self.loaded = loaded
        self.settings: Settings = loaded.settings
        self.backend_factory = backend_factory
        self.conversation = conversation
        self.recorder: SessionRecorder | None = None
        self.backend: Backend | None = None
        self.info: ModelInfo | None = None
        self.loading_spec: str | None = None
        self.load_id = 0
        self.load_error: tuple[str, str] | None = None  # (cause, fix) of the last failure
        # Settings: the user's choice on top of the model defaults; swapped whole.
        self.defaults = GenerationParams()
        self.params = loaded.settings.params
        # A resumed conversation keeps its own system prompt.
        self.system_prompt = (
            conversation.system_prompt if conversation.messages else loaded.settings.system_prompt
        )
        # Fields the user chose (config, remembered, flags, panel, /set): they survive a
        # model switch; the others follow the new model's generation_config.
        self.user_fields = {
            name
            for name in GenerationParams.field_names()
            if loaded.sources.get(name, "default") != "default"
        }
        self.recorded_settings: tuple[GenerationParams, str] | None = None
        # Remembering settings is per field: `yours` are the fields whose value in use is the
        # user's own (remembered, or changed in the panel / with /set here); `unsaved` those
        # changed here and not yet written. Flags, env and resumed values are never in them.
        self.yours = {k for k, src in loaded.sources.items() if src.startswith("remembered:")}
        self.unsaved: set[str] = set()
        # Generation: at most one running turn; the backend lock serialises every backend
        # call (generate, token counting) across worker threads.
        self.turn: Turn | None = None
        self.gen_counter = 0
        self.backend_lock = threading.Lock()
        self.stopped_replies: dict[int, Message] = {}  # gen_id -> reply stopped by the user
        self._ticks = 0
        self.queued = False  # a prompt sent while loading waits for the model
        self.clipboard_writes: list[str] = []
        self._main_widgets: dict[str, Widget] = {}  # raw sequences written (tests inspect them)

    # -- typed widget accessors ------------------------------------------------------------

    # `App.query_one` searches the *active* screen: with a dialog open (or during shutdown)
    # the main widgets would not be found, so they are looked up once, on the main screen.

    def _main(self, selector: str, kind: type[W]) -> W:
        cached = self._main_widgets.get(selector)
        if cached is None:
            cached = self.screen_stack[0].query_one(selector, kind)
            self._main_widgets[selector] = cached
        assert isinstance(cached, kind)
        return cached

    @property
    def transcript(self) -> Transcript:
        return self._main("#transcript", Transcript)

    @property
    def prompt(self) -> PromptInput:
        return self._main("#prompt", PromptInput)

    @property
    def status(self) -> StatusBar:
        return self._main("#status", StatusBar)

    @property
    def panel(self) -> SettingsPanel:
        return self._main("#settings", SettingsPanel)

    @property
    def generating(self) -> bool:
        return self.turn is not None

    @property
    def context_length(self) -> int | None:
        return self.info.context_length if self.info else None

    # -- messages to the user ----------------------------------------------------------------

    def say(self, text: str, *, severity: str = "information", timeout: float = 5) -> None:
        """A toast. Never markup: the text may hold file names, errors or model output."""
        self.notify(
            redact(clean(text)),
            severity=severity,  # type: ignore[arg-type]
            timeout=timeout,
            markup=False,
        )

    async def note(self, text: str, *, title: str = "", variant: str = "info") -> None:
        """A notice in the transcript (stays visible; not part of the conversation)."""
        await self.transcript.add_notice(redact(text), title=redact(title), variant=variant)

    def record(self, method: str, *args: Any) -> None:
        """Call a journal method; a journal problem must never break the chat."""
        if self.recorder is None:
            return
        try:
            getattr(self.recorder, method)(*args)
        except Exception:  # the recorder already swallows I/O errors; this is belt and braces
            log.exception("journal %s failed", method)

    # -- implemented by the controller mixins (declared here so each can call the others) --

    async def start_turn(self, *, continuing: bool = False) -> None:
        raise NotImplementedError

    def refresh_meters(self) -> None:
        raise NotImplementedError

    def remember_settings(self) -> None:
        raise NotImplementedError

    def start_load(self, spec: str) -> None:
        raise NotImplementedError

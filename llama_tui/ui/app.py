"""The llama-tui App: what is process-wide, and the factory shared by the CLI and tests.

`LlamaTuiApp` owns the model (`ModelHost`: load, switch, meters), the settings in use
(`SettingsControl`), the chat state (`ChatState`: conversation, journal, settings and model
in use, shared with headless mode), the keys that work everywhere, quitting and crashes.
The chat screen (`chat_screen.py`) is its main screen and owns the view of the conversation:
the transcript, the input and the reply in flight. Slash commands are a table
(`commands.py`) whose rows name the owner that acts.

`create_app(loaded, backend_factory=..., resume=...)` builds the app; `run_app` is what the
CLI calls: SIGHUP / SIGTERM flush the journal, then the app runs. Nothing here imports
torch: the model loads in a worker after the first paint.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

from textual.actions import SkipAction
from textual.app import App
from textual.binding import Binding, BindingType
from textual.notifications import Notification, Notify
from textual.screen import ModalScreen, Screen

from llama_tui.chat.state import BUSY, ChatState, requested_model
from llama_tui.core.backend import Backend
from llama_tui.session.transcript import Conversation
from llama_tui.text import clean, redact
from llama_tui.ui.chat_screen import ChatScreen
from llama_tui.ui.model_host import ModelHost
from llama_tui.ui.settings_control import SettingsControl
from llama_tui.ui.shutdown import arm_exit_watchdog, crash_report, threads_finished
from llama_tui.ui.thinking_view import ThinkingView
from llama_tui.ui.widgets.settings_panel import SettingsPanel

if TYPE_CHECKING:
    # The workers' messages and the dialogs are imported when first used, not before the
    # first paint (benchmarks/startup_time.py).
    from textual.command import Provider
    from textual.driver import Driver

    from llama_tui.config.settings import LoadedSettings, Settings
    from llama_tui.session.recorder import SessionRecorder
    from llama_tui.ui.messages import (
        ContextCounted,
        LoadProgressed,
        MemoryRead,
        ModelLoaded,
        ModelLoadFailed,
    )
    from llama_tui.ui.widgets.status_bar import StatusBar

log = logging.getLogger(__name__)

BackendFactory = Callable[["Settings"], Backend]

FIRST_PAINT_HEAD_START_S = 0.05
EXIT_GRACE_S = 2.0  # how long quitting waits for a stopped generation's thread to end
SIGNAL_EXIT_S = 5.0  # after SIGHUP / SIGTERM (journal flushed), the longest a shutdown may take


def palette_provider() -> type[Provider]:
    """`App.COMMANDS` entry: the palette (and the command table, `commands.py`) imported
    when it first opens (textual.command costs ~40 ms of startup otherwise)."""
    from llama_tui.ui.palette import ChatCommands

    return ChatCommands


class LlamaTuiApp(App[int]):
    """Chat with a local (or remote) LLaMA-family model."""

    CSS_PATH = "app.tcss"
    TITLE = "llama-tui"
    # Ours only, no Textual system entries: see palette.py.
    COMMANDS: ClassVar[set[type[Provider] | Callable[[], type[Provider]]]] = {palette_provider}
    # The one key map, in the footer's order. `chat('name')` runs the chat screen's
    # `action_name` (the conversation's keys); the rest are the App's. Priority where the
    # focused TextArea / Input would otherwise eat the key (ctrl+y is TextArea's redo,
    # ctrl+c its copy). Esc is not priority so dialogs can close with it. The keys were
    # chosen to survive tmux and screen (README's keys section): Ctrl+B and Ctrl+A are their
    # prefixes, so edit-last is Ctrl+T.
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "chat('stop')", "Stop",
                tooltip="Stop the reply; keep the partial text"),
        Binding("ctrl+r", "chat('retry')", "Retry", priority=True),
        Binding("ctrl+y", "chat('copy_reply')", "Copy", priority=True),
        Binding("f2,ctrl+o", "toggle_settings", "Settings", priority=True),
        Binding("f1", "help", "Help"),
        Binding("ctrl+q", "quit_app", "Quit", priority=True),
        Binding("ctrl+c", "interrupt", "Stop / quit", show=False, priority=True),
        Binding("ctrl+g", "chat('continue_reply')", "Continue", show=False, priority=True),
        Binding("ctrl+s", "chat('save')", "Save", show=False, priority=True),
        Binding("f3", "chat('copy_code')", "Copy code block", show=False),
        Binding("f4", "pick_model", "Load model", show=False),
        Binding("f5", "sessions", "Sessions", show=False),
        # Priority: the prompt's TextArea binds F6 to "select line", which llama-tui never used.
        Binding("f6", "cycle_thinking", "Thinking", show=False, priority=True),
        Binding("f8", "inspect", "Inspect tokens", show=False),
        Binding("ctrl+t", "chat('edit_last')", "Edit last prompt", show=False, priority=True),
        # Alt+arrows reach the app through tmux and SSH (ESC [1;3D / ESC [1;3C).
        Binding("alt+left", "chat('branch_prev')", "Previous version", show=False,
                priority=True),
        Binding("alt+right", "chat('branch_next')", "Next version", show=False, priority=True),
    ]

    def __init__(
        self,
        loaded: LoadedSettings,
        backend_factory: BackendFactory,
        conversation: Conversation,
        *,
        resumed: bool = False,
    ) -> None:
        super().__init__()
        self.loaded = loaded
        self.backend_factory = backend_factory
        # A resumed conversation keeps its own system prompt.
        system_prompt = (conversation.system_prompt if conversation.messages
                         else loaded.settings.system_prompt)
        self.chat_state = ChatState(conversation, loaded.settings.params, system_prompt)
        self.model = ModelHost(self, loaded.settings)
        self.prefs = SettingsControl(self)
        self.chat = ChatScreen(resumed=resumed)
        self.thinking = ThinkingView(self)  # how replies' thinking is shown (F6, /think)
        self.clipboard_writes: list[str] = []  # raw sequences written (tests inspect them)

    def get_default_screen(self) -> Screen[None]:
        return self.chat

    def get_driver_class(self) -> type[Driver]:
        """Textual's driver, reading keys with the mended parser (`terminal_input`)."""
        from llama_tui.ui.terminal_input import input_driver

        return input_driver(super().get_driver_class())

    async def chat_ready(self) -> None:
        """The chat screen is composed: show the settings and the resumed conversation,
        then load the model."""
        self.call_after_refresh(gc.enable)  # the CLI turns it off until the first frame
        settings = self.model.settings
        self.status.update_facts(state="loading", model=settings.model)
        self.prefs.show_in_panel()
        for warning in self.loaded.warnings:
            self.say(warning, severity="warning", timeout=10)
        conversation = self.chat_state.conversation
        self.chat_state.switch(conversation, self.new_recorder(conversation))  # its journal
        await self.chat.open_first()
        await self.prefs.settings_startup()
        self.set_interval(0.5, self.model.tick)
        # After the first paint: the worker imports torch (holding the GIL for a second or
        # more), so the first frame is drawn (call_after_refresh), and the terminal given a
        # head start to receive it, before the load begins.
        spec = requested_model(settings)
        self.call_after_refresh(self.set_timer, FIRST_PAINT_HEAD_START_S,
                                lambda: self.model.start_load(spec))
        self.call_after_refresh(self.run_worker, self._security_floors, thread=True,
                                exit_on_error=False, group="startup")

    def _security_floors(self) -> None:
        """The worker: packages below their security floors (`startup.startup_warnings`),
        read here rather than before the first paint (package metadata is slow to read)."""
        from llama_tui.startup import startup_warnings

        for warning in startup_warnings():
            log.warning("%s", warning)
            self.say(warning, severity="warning", timeout=10)

    # -- what the others use -------------------------------------------------------------

    @property
    def status(self) -> StatusBar:
        return self.chat.status

    @property
    def state(self) -> str:
        """What the status bar says the app is doing (loading, ready, generating, ...)."""
        return self.status.facts.state

    @property
    def generating(self) -> bool:
        return self.chat.generating

    def say(self, text: str, *, severity: str = "information", timeout: float = 5
            ) -> Notification:
        """A toast. Never markup: the text may hold file names, errors or model output.
        Returns it, for `unsay` (as `App.notify` would post it; thread-safe)."""
        toast = Notification(redact(clean(text)), "", severity,  # type: ignore[arg-type]
                             timeout, markup=False)
        self.post_message(Notify(toast))
        return toast

    def unsay(self, toast: Notification) -> None:
        """Take back a toast that no longer holds (what Textual's Toast does on a click)."""
        if toast in self._notifications:
            self._unnotify(toast)

    def on_mount(self) -> None:
        self.screen_change_signal.subscribe(self, self._screen_changed)

    def _screen_changed(self, screen: Screen[object]) -> None:
        # At 80x24 stacked toasts cover a centred dialog's buttons and question: a dialog
        # that opens clears them (toasts about the dialog itself come after and stay).
        # Each screen has its own toast rack and Textual refreshes only the top one's, so
        # the racks beneath, still drawn behind the dialog, are emptied too.
        if isinstance(screen, ModalScreen):
            self.clear_notifications()
            for below in self.screen_stack[:-1]:
                for rack in below.query("#textual-toastrack"):
                    rack.remove_children()

    def refuse_while_generating(self) -> bool:
        """The busy guard (`chat.state.BUSY`): True, and the user told, during a reply."""
        if not self.chat.generating:
            return False
        self.say(BUSY, severity="warning")
        return True

    def new_recorder(self, conv: Conversation) -> SessionRecorder:
        """A journal for `conv`; its I/O problems are shown, the chat goes on."""
        from llama_tui.session.recorder import SessionRecorder

        def failed(text: str) -> None:
            self.say(f"{text}. The conversation is kept in memory; /save writes a copy.",
                     severity="error", timeout=10)

        return SessionRecorder(conv, on_error=failed)

    def conversation_switched(self) -> None:
        """Another conversation is shown: the last reply's state and speed belong to the old."""
        facts: dict[str, object] = {"ttft_s": None, "tokens_per_s": None, "detail": ""}
        if self.model.backend is not None:
            facts["state"] = "ready"
        self.status.update_facts(**facts)
        self.model.refresh_meters()

    def write_clipboard(self, text: str, sequence: str) -> None:
        """Copied text: what `App.clipboard` reports, and the escape sequence written.
        Not `copy_to_clipboard`: it writes a bare OSC 52 that tmux / screen swallow."""
        self._clipboard = text
        if sequence:
            self.clipboard_writes.append(sequence)
            if self._driver is not None:
                self._driver.write(sequence)

    # -- worker messages: the model's ------------------------------------------------------

    def on_load_progressed(self, message: LoadProgressed) -> None:
        self.model.progressed(message)

    async def on_model_loaded(self, message: ModelLoaded) -> None:
        await self.model.loaded(message)

    async def on_model_load_failed(self, message: ModelLoadFailed) -> None:
        await self.model.load_failed(message)

    def on_memory_read(self, message: MemoryRead) -> None:
        self.model.memory_read(message)

    def on_context_counted(self, message: ContextCounted) -> None:
        self.status.update_facts(context_used=message.used)

    def on_settings_panel_applied(self, event: SettingsPanel.Applied) -> None:
        self.prefs.apply_params(event.params, event.system_prompt)

    # -- actions -------------------------------------------------------------------------

    async def action_inspect(self) -> None:
        """F8: the token inspector on the last reply (`ui.inspect_control`)."""
        from llama_tui.ui.inspect_control import open_inspector

        await open_inspector(self, "")

    async def action_chat(self, name: str) -> None:
        """A key for the conversation: the chat screen's `action_<name>` acts (one that
        declines lets the key go on, e.g. Esc to a dialog)."""
        if not await self.run_action(name, self.chat):
            raise SkipAction()

    async def action_interrupt(self) -> None:
        """Ctrl+C never loses the session: stop the reply, or ask before quitting."""
        from llama_tui.ui.screens.confirm import ConfirmScreen

        if await self.chat.replies.stop():
            self.say("Stopped; the partial reply is kept. Ctrl+C again asks to quit.")
            return
        if isinstance(self.screen, ConfirmScreen) and self.screen.kind == "-quit":
            self.exit()
            return
        self.ask_quit("Quit llama-tui? The conversation is saved in its journal.")

    async def action_quit_app(self) -> None:
        """Ctrl+Q: quit at once when idle; ask while a reply is being generated."""
        if self.generating:
            self.ask_quit("A reply is being generated. Stop it and quit?")
            return
        self.exit()

    async def action_quit(self) -> None:
        """Textual's own quit action (any route to it) asks during a reply, like Ctrl+Q."""
        await self.run_action("quit_app")

    def ask_quit(self, question: str) -> None:
        from llama_tui.ui.screens.confirm import ConfirmScreen

        def answer(yes: bool | None) -> None:
            if yes:
                self.run_worker(self.quit_now(), exit_on_error=False)

        self.push_screen(ConfirmScreen(question, yes="Quit", no="Stay", kind="-quit"), answer)

    async def quit_now(self) -> None:
        """/quit: stop the reply (kept as "stopped") and leave."""
        await self.chat.replies.stop()
        self.exit()

    def action_toggle_settings(self) -> None:
        """Show or hide the settings panel."""
        self.chat.toggle_settings()

    def action_pick_model(self) -> None:
        """Load another model."""
        self.model.command("")

    def action_help(self) -> None:
        """Keys and commands."""
        from llama_tui.ui.screens.help import HelpScreen

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_sessions(self) -> None:
        """Browse saved sessions."""
        self.chat.browse_sessions()

    def action_cycle_thinking(self) -> None:
        """Replies' thinking: folded, shown, hidden (`thinking_view`)."""
        self.thinking.cycle()

    # -- the end -------------------------------------------------------------------------

    def _handle_exception(self, error: Exception) -> None:
        """A crash: keep the conversation, and never show locals (or a secret) on screen.

        Textual's own crash screen is a Rich traceback with show_locals=True: any local that
        holds a token (a library's request headers) would be printed to the terminal.
        We log the traceback, flush the journal, and print a plain, redacted traceback.
        """
        log.error("unhandled exception", exc_info=error)
        with contextlib.suppress(Exception):
            if self.chat_state.recorder is not None:
                self.chat_state.recorder.flush()
        self._return_code = 1
        if self._exception is None:  # Pilot re-raises the first one in tests
            self._exception = error
            self._exception_event.set()
        self.bell()
        self.panic(*crash_report(error))

    async def on_unmount(self) -> None:
        # Stop the engine, keep what was generated, and leave the journal complete.
        with contextlib.suppress(Exception):
            await self.chat.replies.stop()
        with contextlib.suppress(Exception):
            self.prefs.remember_settings()
        self.chat_state.close()


def create_app(
    loaded: LoadedSettings,
    *,
    backend_factory: BackendFactory | None = None,
    resume: str | None = None,
) -> LlamaTuiApp:
    """Build the app. `resume`: a session id / path ("" = the latest); raises SessionLoadError."""
    if backend_factory is None:
        from llama_tui.engine.factory import make_backend

        backend_factory = make_backend
    conversation = Conversation(system_prompt=loaded.settings.system_prompt)
    resumed = resume is not None
    if resume is not None:
        from llama_tui.session.store import latest_session_id, load_conversation

        target = resume or latest_session_id()
        if target:
            conversation = load_conversation(target)
        else:
            resumed = False
    return LlamaTuiApp(loaded, backend_factory, conversation, resumed=resumed)


def run_app(loaded: LoadedSettings, *, resume: str | None = None) -> int:
    """Run the TUI; returns the exit code. Called by the CLI (which has set up logging)."""
    if resume is None:
        resume = getattr(loaded, "resume", None)  # the CLI may carry it on LoadedSettings
    app = create_app(loaded, resume=resume)
    restore = None
    try:
        from llama_tui.session.recorder import install_signal_flush

        def on_signal(code: int) -> None:
            arm_exit_watchdog(code, SIGNAL_EXIT_S)
            app.exit(return_code=code)

        restore = install_signal_flush(lambda: app.chat_state.recorder, exit=on_signal)
    except ValueError:  # signal handlers can be installed from the main thread only
        log.warning("no signal flush installed", exc_info=True)
    try:
        app.run()
    finally:
        if restore is not None:
            restore()
    code = app.return_code or 0
    if not threads_finished(EXIT_GRACE_S):
        # A model load (or a prefill) cannot be interrupted and its worker thread would keep
        # the process alive for up to minutes after the screen is gone. The journal is
        # closed already (on_unmount), so leave now rather than hang.
        log.warning("exiting with a model load or generation still running")
        logging.shutdown()
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)
    # No backend.close() here: the process is ending and frees the model anyway, while a
    # close can wait on the engine (up to 10 s) after a stopped reply.
    return code


__all__ = ["LlamaTuiApp", "create_app", "run_app"]

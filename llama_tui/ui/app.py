"""The llama-tui App: layout, key bindings, and the factory shared by the CLI and tests.

`create_app(loaded, backend_factory=..., resume=...)` builds the app; `run_app` is what the
CLI calls: logging to a file first (a handler on stderr would draw over the screen), SIGHUP
/ SIGTERM flush the journal, then the app runs. Nothing here imports torch: the model loads
in a worker after the first paint.

Behaviour lives in the controller mixins: `model_control.py` (load, switch, meters),
`chat_control.py` (one turn, stop, retry, edit, continue), `command_control.py`
(slash commands, palette, save, copy, links, editor) and `key_control.py` (edit-last,
transcript scrolling, the keys chosen to survive tmux and screen; more bindings there).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from typing import TYPE_CHECKING, ClassVar

from textual import events
from textual.actions import SkipAction
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Footer

from llama_tui.core.backend import GenerationStats
from llama_tui.session.transcript import Conversation
from llama_tui.text import clean
from llama_tui.ui.base import BackendFactory
from llama_tui.ui.chat_control import footer_for
from llama_tui.ui.command_control import CommandControl
from llama_tui.ui.commands import palette_provider, parse_command, unescape_prompt
from llama_tui.ui.copy_save import CopySaveControl
from llama_tui.ui.key_control import KeyControl
from llama_tui.ui.model_control import ModelControl
from llama_tui.ui.screens.confirm import ConfirmScreen
from llama_tui.ui.screens.help import HelpScreen
from llama_tui.ui.widgets.prompt_input import PromptInput
from llama_tui.ui.widgets.settings_panel import SettingsPanel
from llama_tui.ui.widgets.status_bar import StatusBar
from llama_tui.ui.widgets.transcript import Transcript

if TYPE_CHECKING:
    from collections.abc import Callable

    from textual.command import Provider

    from llama_tui.config.settings import LoadedSettings

log = logging.getLogger(__name__)

FIRST_PAINT_HEAD_START_S = 0.05
EXIT_GRACE_S = 2.0  # how long quitting waits for a stopped generation's thread to end
SIGNAL_EXIT_S = 5.0  # after SIGHUP / SIGTERM (journal flushed), the longest a shutdown may take
NARROW_WIDTH = 70  # below this the settings panel replaces the chat instead of sitting beside it


class LlamaTuiApp(KeyControl, CommandControl, CopySaveControl, ModelControl):
    """Chat with a local (or remote) LLaMA-family model."""

    CSS_PATH = "app.tcss"
    TITLE = "llama-tui"
    # Ours only, no Textual system entries: see palette.py.
    COMMANDS: ClassVar[set[type[Provider] | Callable[[], type[Provider]]]] = {palette_provider}
    # Priority where the focused TextArea / Input would otherwise eat the key (ctrl+y is
    # TextArea's redo, ctrl+c its copy). Esc is not priority so dialogs can close with it.
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "stop", "Stop", tooltip="Stop the reply; keep the partial text"),
        Binding("ctrl+r", "retry", "Retry", priority=True),
        Binding("ctrl+y", "copy_reply", "Copy", priority=True),
        Binding("f2,ctrl+o", "toggle_settings", "Settings", priority=True),
        Binding("f1", "help", "Help"),
        Binding("ctrl+q", "quit_app", "Quit", priority=True),
        Binding("ctrl+c", "interrupt", "Stop / quit", show=False, priority=True),
        Binding("ctrl+g", "continue_reply", "Continue", show=False, priority=True),
        Binding("ctrl+s", "save", "Save", show=False, priority=True),
        Binding("f3", "copy_code", "Copy code block", show=False),
        Binding("f4", "pick_model", "Load model", show=False),
        Binding("f5", "sessions", "Sessions", show=False),
    ]

    def __init__(
        self,
        loaded: LoadedSettings,
        backend_factory: BackendFactory,
        conversation: Conversation,
        *,
        resumed: bool = False,
    ) -> None:
        super().__init__(loaded, backend_factory, conversation)
        self.resumed = resumed

    def compose(self) -> ComposeResult:
        with Horizontal(id="main"):
            with Vertical(id="chat"):
                with Transcript(id="transcript") as transcript:
                    yield transcript.welcome()
                yield PromptInput(id="prompt")
            yield SettingsPanel(id="settings")
        yield StatusBar(id="status")
        yield Footer()

    async def on_mount(self) -> None:
        self.prompt.focus()
        self.recorder = self.new_recorder(self.conversation)
        self.panel.load(self.params, self.defaults, self.system_prompt, None)
        self.status.update_facts(state="loading", model=self.settings.model)
        self.set_class(self.size.width < NARROW_WIDTH, "-narrow")
        for warning in self.loaded.warnings:
            self.say(warning, severity="warning", timeout=10)
        if self.resumed:
            await self.show_conversation()
        await self.settings_startup()
        self.set_interval(0.5, self.tick)
        # After the first paint: the worker imports torch (holding the GIL for a second or
        # more), so give the first frame a head start before it begins.
        spec = (self.settings.server_model or self.settings.model) if self.settings.server \
            else self.settings.model
        self.set_timer(FIRST_PAINT_HEAD_START_S, lambda: self.start_load(spec))

    async def show_conversation(self) -> None:
        """Render a resumed conversation (all text through the sanitiser)."""
        conv = self.conversation
        self.transcript.show_welcome(not conv.messages)
        for m in conv.messages:
            if m.role == "user":
                await self.transcript.add_user(m.content, m.id)
            elif m.role == "assistant":
                turn = await self.transcript.add_assistant(m.content, m.id)
                if m.status == "stopped":
                    why = "interrupted (the app ended)" if m.interrupted else "stopped"
                    turn.set_footer(f"■ {why} · Ctrl+G or /continue to go on", "stopped")
                elif m.status == "error":
                    turn.set_footer(f"✗ error: {m.error or 'generation failed'}", "error")
                else:
                    stats = GenerationStats.from_dict(m.stats)
                    footer, variant = footer_for("complete", stats, None, "")
                    if footer:
                        turn.set_footer(footer, variant)
        title = clean(conv.title) or conv.id
        await self.note(f"Resumed session {title} ({len(conv.messages)} messages).")
        for warning in conv.load_warnings:
            await self.note(warning, variant="warning")
        _params, changed = self.session_settings()
        if changed:
            shown = ", ".join(f"{k} {clean(str(conv.settings.get(k)))}" for k in changed)
            await self.note(f"This session used other settings ({shown}); "
                            "/set session applies them.")
        if conv.model.get("spec") and conv.model.get("spec") != self.settings.model:
            await self.note(f"This session used {clean(str(conv.model['spec']))}; "
                            f"/model {clean(str(conv.model['spec']))} loads it.")

    def on_resize(self, event: events.Resize) -> None:
        self.set_class(event.size.width < NARROW_WIDTH, "-narrow")

    def watch_state(self, state: str) -> None:
        self.set_class(state == "generating", "-generating")

    async def watch_show_settings(self, show: bool) -> None:
        self.set_class(show, "-show-settings")
        if show:
            await self.panel.build()
            # Focus before the panel is painted, so keys typed as soon as it shows land in it.
            self._focus_panel()
        else:
            await self.settings_closed()
            self.prompt.focus()

    def _focus_panel(self) -> None:
        with contextlib.suppress(Exception):
            self.panel.query_one("#sp-temperature").focus()

    async def on_prompt_input_submitted(self, event: PromptInput.Submitted) -> None:
        command = parse_command(event.text)
        if command is not None:
            await self.run_command(*command)
            return
        await self.send_prompt(unescape_prompt(event.text))

    # -- actions -------------------------------------------------------------------------------

    async def action_stop(self) -> None:
        """Esc: stop the reply, else close the settings panel; otherwise let dialogs have it."""
        if await self.stop_generation():
            return
        if self.show_settings and not isinstance(self.screen, ModalScreen):
            self.show_settings = False
            return
        raise SkipAction()

    async def action_interrupt(self) -> None:
        """Ctrl+C never loses the session: stop the reply, or ask before quitting."""
        if await self.stop_generation():
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

    def ask_quit(self, question: str) -> None:
        def answer(yes: bool | None) -> None:
            if yes:
                self.run_worker(self.cmd_quit(""), exit_on_error=False)

        self.push_screen(ConfirmScreen(question, yes="Quit", no="Stay", kind="-quit"), answer)

    def action_toggle_settings(self) -> None:
        """Show or hide the settings panel."""
        self.show_settings = not self.show_settings

    async def action_retry(self) -> None:
        """Generate the last reply again."""
        await self.retry()

    async def action_continue_reply(self) -> None:
        """Continue a stopped or cut-off reply."""
        await self.continue_reply()

    async def action_copy_reply(self) -> None:
        """Copy the last reply to the local clipboard (OSC 52)."""
        await self.cmd_copy("")

    def action_copy_code(self) -> None:
        """Pick a code block of the last reply to copy."""
        self.copy_code_block()

    async def action_save(self) -> None:
        """Save the conversation as Markdown in the working directory."""
        await self.cmd_save("")

    def action_pick_model(self) -> None:
        """Load another model."""
        if self.generating:
            self.say("Stop the reply first (Esc), then switch models.", severity="warning")
            return
        self.open_model_picker()

    def action_help(self) -> None:
        """Keys and commands."""
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    async def action_sessions(self) -> None:
        """Browse saved sessions."""
        await self.cmd_sessions("")

    def _handle_exception(self, error: Exception) -> None:
        """A crash: keep the conversation, and never show locals (or a secret) on screen.

        Textual's own crash screen is a Rich traceback with show_locals=True: any local that
        holds a token (a library's request headers) would be printed to the terminal.
        We log the traceback, flush the journal, and print a plain, redacted traceback.
        """
        import traceback

        from rich.text import Text

        from llama_tui.text import redact

        log.error("unhandled exception", exc_info=error)
        with contextlib.suppress(Exception):
            if self.recorder is not None:
                self.recorder.flush()
        self._return_code = 1
        if self._exception is None:  # Pilot re-raises the first one in tests
            self._exception = error
            self._exception_event.set()
        tb = redact(clean("".join(traceback.format_exception(error))))
        hint = (
            "\nllama-tui stopped on an internal error (above). The conversation is saved: "
            "`llama-tui --resume` reopens it. Please report this traceback.\n"
        )
        self.bell()
        self.panic(Text(tb), Text(hint))

    async def on_unmount(self) -> None:
        # Stop the engine, keep what was generated, and leave the journal complete.
        if self.turn is not None:
            self.turn.cancel.set()
            with contextlib.suppress(Exception):
                await self.finish_turn("stopped", None)
        with contextlib.suppress(Exception):
            self.remember_settings()
        if self.recorder is not None:
            self.recorder.close()


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
            _arm_exit_watchdog(code)
            app.exit(return_code=code)

        restore = install_signal_flush(lambda: app.recorder, exit=on_signal)
    except ValueError:  # signal handlers can be installed from the main thread only
        log.warning("no signal flush installed", exc_info=True)
    try:
        app.run()
    finally:
        if restore is not None:
            restore()
    code = app.return_code or 0
    if not _threads_finished(EXIT_GRACE_S):
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


def _arm_exit_watchdog(code: int, delay: float = SIGNAL_EXIT_S) -> None:
    """After SIGHUP / SIGTERM the journal is flushed; make sure the process really ends.

    With the terminal gone, Textual's shutdown can block for good writing to it (its output
    queue is full and nothing drains it), and the process would keep the model's memory
    forever. A daemon thread ends the process `delay` seconds later if it is still alive.
    """

    def watchdog() -> None:
        time.sleep(delay)
        log.warning("shutdown after signal took over %.0f s; exiting now", delay)
        with contextlib.suppress(Exception):
            logging.shutdown()
        os._exit(code)

    threading.Thread(target=watchdog, name="llama-tui-exit-watchdog", daemon=True).start()


def _threads_finished(timeout: float) -> bool:
    """Join the other non-daemon threads for up to `timeout` s; True when none is left."""
    deadline = time.monotonic() + timeout
    others = [t for t in threading.enumerate()
              if t is not threading.main_thread() and not t.daemon]
    for t in others:
        t.join(max(0.0, deadline - time.monotonic()))
    return not any(t.is_alive() for t in others)


__all__ = ["LlamaTuiApp", "create_app", "run_app"]

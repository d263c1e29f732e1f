"""The chat screen: the transcript, the input and the reply in flight.

It is the app's main screen and owns the view of the conversation: the transcript, the
prompt, the settings panel's place beside them, and the reply in flight (`replies`, see
`reply_runner.py`). Switching conversation (/clear, /sessions) is shown here. The
conversation and its journal are the App's chat state (`llama_tui.chat.state.ChatState`,
shared with headless mode); what is process-wide (the model, the settings in use, the
status bar's meters, quitting) belongs to the App (`app.py`), reached through `self.host`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, TypeVar, cast

from textual import events, on
from textual.actions import SkipAction
from textual.app import ComposeResult, SuspendNotSupported
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.reactive import reactive
from textual.screen import ModalScreen, Screen
from textual.widget import Widget
from textual.widgets import Footer

from llama_tui.session.transcript import Conversation
from llama_tui.text import clean, redact
from llama_tui.ui.attach_control import AttachControl
from llama_tui.ui.branch_control import BranchControl
from llama_tui.ui.widgets.attachments import PendingFiles
from llama_tui.ui.widgets.prompt_input import PromptInput
from llama_tui.ui.widgets.settings_panel import SettingsPanel
from llama_tui.ui.widgets.status_bar import StatusBar
from llama_tui.ui.widgets.transcript import Transcript

if TYPE_CHECKING:
    # Markdown (markdown_it), copy_save, the reply runner and its messages, and the confirm
    # dialog are imported when first used, not before the first paint
    # (benchmarks/startup_time.py).
    from textual.widgets import Markdown

    from llama_tui.ui.app import LlamaTuiApp
    from llama_tui.ui.messages import ReplyChunk, ReplyFinished, ReplyStarted
    from llama_tui.ui.reply_runner import ReplyRunner

NARROW_WIDTH = 70  # below this the settings panel replaces the chat instead of sitting beside it
W = TypeVar("W", bound=Widget)

EDIT_QUESTION = (
    "Edit the last prompt? It goes back into the input; the last exchange stays as a "
    "branch (Alt+Left / Alt+Right or /branches switch back to it)."
)


class ChatScreen(Screen[None]):
    """One conversation: transcript, input and the reply in flight; the settings panel beside.

    Its keys (Esc, Ctrl+R, Ctrl+Y, ...) are bound by the App as `chat('name')`, which runs
    `action_name` here: the App keeps the one key map, in the order the footer shows. PgUp /
    PgDn and Ctrl+Home / Ctrl+End, bound here, scroll the transcript while the prompt has
    focus (the prompt passes them on), and not while a dialog is open.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        # Not priority: a focused list keeps its own PgUp; the prompt passes it on.
        Binding("pageup", "scroll_transcript('page_up')", "Scroll up", show=False),
        Binding("pagedown", "scroll_transcript('page_down')", "Scroll down", show=False),
        Binding("ctrl+home", "scroll_transcript('home')", "Scroll to top", show=False),
        Binding("ctrl+end", "scroll_transcript('end')", "Scroll to bottom", show=False),
    ]

    show_settings: reactive[bool] = reactive(False)

    def __init__(self, *, resumed: bool = False) -> None:
        super().__init__()
        self.resumed = resumed
        self._replies: ReplyRunner | None = None
        self.branches = BranchControl(self)  # versions of messages: keys, picker, markers
        self.attachments = AttachControl(self)  # files /read attached to the next message
        self._widgets: dict[str, Widget] = {}

    @property
    def replies(self) -> ReplyRunner:
        """The reply in flight (`reply_runner.py`), made when first asked for."""
        if self._replies is None:
            from llama_tui.ui.reply_runner import ReplyRunner

            self._replies = ReplyRunner(self)
        return self._replies

    @property
    def host(self) -> LlamaTuiApp:
        return cast("LlamaTuiApp", self.app)

    def compose(self) -> ComposeResult:
        with Horizontal(id="main"):
            with Vertical(id="chat"):
                with Transcript(id="transcript") as transcript:
                    yield transcript.welcome()
                yield PendingFiles(id="pending-files")
                yield PromptInput(id="prompt")
            yield SettingsPanel(id="settings")
        yield StatusBar(id="status")
        yield Footer()

    # -- typed widget accessors (kept once found: they outlive a shutdown's unmounting) -----

    def _widget(self, selector: str, kind: type[W]) -> W:
        found = self._widgets.get(selector)
        if found is None:
            found = self._widgets[selector] = self.query_one(selector, kind)
        assert isinstance(found, kind)
        return found

    @property
    def transcript(self) -> Transcript:
        return self._widget("#transcript", Transcript)

    @property
    def prompt(self) -> PromptInput:
        return self._widget("#prompt", PromptInput)

    @property
    def status(self) -> StatusBar:
        return self._widget("#status", StatusBar)

    @property
    def panel(self) -> SettingsPanel:
        return self._widget("#settings", SettingsPanel)

    @property
    def conversation(self) -> Conversation:
        """The conversation shown (the App's chat state holds it)."""
        return self.host.chat_state.conversation

    @property
    def generating(self) -> bool:
        return self.replies.turn is not None

    async def note(self, text: str, *, title: str = "", variant: str = "info") -> None:
        """A notice in the transcript (stays visible; not part of the conversation)."""
        await self.transcript.add_notice(redact(text), title=redact(title), variant=variant)

    # -- layout --------------------------------------------------------------------------

    async def on_mount(self) -> None:
        self.prompt.focus()
        self.set_class(self.app.size.width < NARROW_WIDTH, "-narrow")
        await self.host.chat_ready()

    def on_resize(self, event: events.Resize) -> None:
        self.set_class(event.size.width < NARROW_WIDTH, "-narrow")

    async def watch_show_settings(self, show: bool) -> None:
        self.set_class(show, "-show-settings")
        if show:
            await self.panel.build()
            # Focus before the panel is painted, so keys typed as soon as it shows land in it.
            with contextlib.suppress(Exception):
                self.panel.query_one("#sp-temperature").focus()
        else:
            await self.host.prefs.settings_closed()
            self.prompt.focus()

    def toggle_settings(self) -> None:
        self.show_settings = not self.show_settings

    def open_settings(self) -> None:
        self.show_settings = True

    # -- the prompt ------------------------------------------------------------------------

    async def on_prompt_input_submitted(self, event: PromptInput.Submitted) -> None:
        # The command table is imported with the first message, not before the first paint.
        from llama_tui.ui.commands import parse_command, run_command, unescape_prompt

        command = parse_command(event.text)
        if command is not None:
            await run_command(self.host, *command)
            return
        if await self.branches.submit_edit(event.text, continuing=False):
            return  # an edited reply, kept as a new version of it
        await self.send_prompt(unescape_prompt(event.text))

    async def send_prompt(self, text: str) -> None:
        """Add the user's message and start the reply (or queue it while loading)."""
        if self.host.refuse_while_generating():
            self.prompt.give_back(text)
            return
        model = self.host.model
        if model.backend is None and model.loading_spec is None:
            self.prompt.give_back(text)
            self.host.say(f"No model is loaded. {model.pick_hint}", severity="error", timeout=8)
            return
        files = self.attachments.take()
        msg = self.host.chat_state.add_user(text, files)  # journaled (fsynced) before any reply
        self.transcript.show_welcome(False)
        await self.transcript.add_user(text, msg.id, files)
        self.branches.mark()  # an edited prompt is a new version: 2/2
        if model.backend is None:
            await self.replies.wait_for_model()
            return
        await self.replies.start()

    # -- the reply worker's messages: the reply in flight is `replies`' -----------------------

    async def on_reply_started(self, message: ReplyStarted) -> None:
        await self.replies.started(message)

    async def on_reply_chunk(self, message: ReplyChunk) -> None:
        await self.replies.chunk(message)

    async def on_reply_finished(self, message: ReplyFinished) -> None:
        await self.replies.finished(message)

    # -- conversations ---------------------------------------------------------------------

    async def open_first(self) -> None:
        """At startup: a resumed conversation is shown."""
        if self.resumed:
            await self.show_conversation()

    async def show_conversation(self) -> None:
        """Render the conversation (all text through the sanitiser) and notes about it."""
        conv = self.conversation
        self.transcript.show_welcome(not conv.messages)
        # The last screenful now, older turns as the user scrolls up (`Transcript`).
        await self.transcript.show_messages(conv.messages)
        self.branches.mark()
        await self.note(f"Resumed session {clean(conv.title) or conv.id} "
                        f"({len(conv.messages)} messages).")
        for warning in conv.load_warnings:
            await self.note(warning, variant="warning")
        _params, changed = self.host.prefs.session_settings()
        if changed:
            shown = ", ".join(f"{k} {clean(str(conv.settings.get(k)))}" for k in changed)
            await self.note(f"This session used other settings ({shown}); "
                            "/set session applies them.")
        spec = conv.model.get("spec")
        if spec and spec != self.host.model.settings.model:
            await self.note(f"This session used {clean(str(spec))}; "
                            f"/model {clean(str(spec))} loads it.")

    def on_transcript_turns_mounted(self, _event: Transcript.TurnsMounted) -> None:
        """Older turns mounted as the user scrolls: their headers get their `2/3` too."""
        self.branches.mark()

    async def fork_and_continue(self, message_id: str, prefix: str) -> None:
        """A new version of reply `message_id` that starts with `prefix`, generated on from
        there with the current settings (the token inspector's alternatives). The original
        stays as the other version."""
        if self.replies.cannot_start():
            return
        if await self.branches.fork(message_id, prefix) is not None:
            await self.replies.start(continuing=True)

    async def new_conversation(self) -> None:
        """/clear: a new conversation; the old one stays in its journal (resumable)."""
        if self.host.refuse_while_generating():
            return
        prefs, info = self.host.prefs, self.host.model.info
        conv = Conversation(system_prompt=prefs.system_prompt, settings=prefs.params.to_dict())
        if info is not None:
            conv.model = dataclasses.asdict(info)
        await self._switch_to(conv)
        self.transcript.show_welcome(True)
        self.host.say("New conversation. The previous one is kept in the session journal.")

    async def open_session(self, session_id: str) -> None:
        """Switch to a saved session (the current one stays in its journal)."""
        if self.host.refuse_while_generating():
            return
        from llama_tui.session.store import SessionLoadError, load_conversation

        try:
            conv = await asyncio.to_thread(load_conversation, session_id)
        except SessionLoadError as e:
            self.host.say(f"Could not open the session: {e.reason}. F5 lists the saved "
                          "sessions.", severity="error", timeout=10)
            return
        await self._switch_to(conv)
        self.host.prefs.use_session_prompt(conv.system_prompt)
        await self.show_conversation()

    async def _switch_to(self, conv: Conversation) -> None:
        self.host.chat_state.switch(conv, self.host.new_recorder(conv))
        await self.transcript.clear_all()
        self.host.conversation_switched()

    def browse_sessions(self) -> None:
        from llama_tui.ui.screens.sessions import Opened, SessionsScreen, reveal_match

        async def chosen(opened: Opened | None) -> None:
            if opened is None:
                return
            if opened.session_id != self.conversation.id:
                await self.open_session(opened.session_id)
            await reveal_match(self, opened)  # found by a search: scroll to the match

        self.app.push_screen(SessionsScreen(self.conversation.id, self.host.chat_state.rename),
                             chosen)

    # -- actions -------------------------------------------------------------------------

    async def action_stop(self) -> None:
        """Esc: stop the reply, else close the settings panel; otherwise let dialogs have it."""
        if await self.replies.stop():
            return
        if self.show_settings and not isinstance(self.app.screen, ModalScreen):
            self.show_settings = False
            return
        raise SkipAction()

    async def action_retry(self) -> None:
        """Generate the last reply again."""
        await self.replies.retry()

    async def action_continue_reply(self) -> None:
        """Continue a stopped or cut-off reply (or the reply being edited in the input)."""
        if self.branches.editing is not None:
            await self.branches.submit_edit(self.prompt.text, continuing=True)
            return
        await self.replies.continue_reply()

    async def action_branch_prev(self) -> None:
        """Alt+Left: the previous version of the newest fork."""
        await self.branches.step(-1)

    async def action_branch_next(self) -> None:
        """Alt+Right: the next version of the newest fork."""
        await self.branches.step(+1)

    async def action_copy_reply(self) -> None:
        """Copy the last reply to the local clipboard (OSC 52)."""
        from llama_tui.ui import copy_save

        await copy_save.copy_command(self, "")

    def action_copy_code(self) -> None:
        """Pick a code block of the last reply to copy."""
        from llama_tui.ui import copy_save

        copy_save.pick_code_block(self)

    async def action_save(self) -> None:
        """Save the conversation as Markdown (asks where)."""
        from llama_tui.ui import copy_save

        await copy_save.save_command(self, "")

    async def action_edit_last(self) -> None:
        """Ctrl+T: put the last prompt back in the input, once the user agrees to drop it."""
        await self.ask_edit_last()

    async def ask_edit_last(self) -> None:
        """Ctrl+T and /edit: ask before the last exchange is removed; yes edits it."""
        if self.generating or not any(m.role == "user" for m in self.conversation.messages):
            await self.replies.edit_last()  # says why there is nothing to edit now
            return

        from llama_tui.ui.screens.confirm import ConfirmScreen

        def answer(yes: bool | None) -> None:
            if yes:
                if self.prompt.text.strip():  # an unsent draft stays reachable with Up
                    self.prompt.remember(self.prompt.text)
                self.run_worker(self.replies.edit_last(), exit_on_error=False)

        self.app.push_screen(ConfirmScreen(EDIT_QUESTION, yes="Edit", no="Keep", kind="-edit"),
                             answer)

    async def action_scroll_transcript(self, where: str) -> None:
        """PgUp / PgDn / Ctrl+Home / Ctrl+End scroll the conversation while typing."""
        t = self.transcript
        if where == "page_up":
            t.scroll_page_up(animate=False)
        elif where == "page_down":
            t.scroll_page_down(animate=False)
        elif where == "home":
            await t.jump_home()  # mounts the first turns if they are not
        else:
            await t.jump_end()

    # -- links and the editor ------------------------------------------------------------

    def on_markdown_link_clicked(self, event: Markdown.LinkClicked) -> None:
        event.stop()
        href = clean(event.href)
        from llama_tui.ui.screens.confirm import ConfirmScreen

        def answer(yes: bool | None) -> None:
            if yes:
                self.app.open_url(href)

        self.app.push_screen(ConfirmScreen(f"Open this link from the model's reply?\n\n{href}",
                                           yes="Open", no="Cancel", kind="-link"), answer)

    @on(PromptInput.EditorRequested)
    def _editor(self, event: PromptInput.EditorRequested) -> None:
        import shlex  # here, not at the top: not needed before the first paint

        editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
        fd, name = tempfile.mkstemp(prefix="llama-tui-", suffix=".md")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(self.prompt.text)
            try:
                with self.app.suspend():
                    subprocess.run([*shlex.split(editor), name], check=False)
            except SuspendNotSupported:
                self.host.say("This terminal cannot hand over to an editor.", severity="warning")
                return
            except OSError as e:
                self.host.say(f"Could not run {editor}: {e}", severity="error")
                return
            self.prompt.set_text(Path(name).read_text(encoding="utf-8").rstrip("\n"))
        finally:
            with contextlib.suppress(OSError):
                os.unlink(name)
        self.prompt.focus()

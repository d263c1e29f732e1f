"""Slash commands, palette actions, settings, sessions, links and the external editor.

Commands never reach the model; `/name` dispatches to `cmd_name` (save and copy live in
`copy_save.py`; `/set` and remembering settings in `settings_control.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import shlex
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual import on
from textual.app import SuspendNotSupported

from llama_tui.session.transcript import Conversation
from llama_tui.text import clean
from llama_tui.ui.commands import COMMAND_BY_NAME, unknown_command_text
from llama_tui.ui.screens.confirm import ConfirmScreen
from llama_tui.ui.screens.help import HelpScreen
from llama_tui.ui.screens.model_picker import ModelPickerScreen
from llama_tui.ui.settings_control import SettingsControl
from llama_tui.ui.widgets.prompt_input import PromptInput
from llama_tui.ui.widgets.status_bar import human_bytes

if TYPE_CHECKING:
    from textual.widgets import Markdown

log = logging.getLogger(__name__)


class CommandControl(SettingsControl):
    """`/command` handling and the actions behind key bindings."""

    async def run_command(self, name: str, arg: str) -> None:
        if name not in COMMAND_BY_NAME:
            await self.note(unknown_command_text(clean(name)), variant="warning")
            return
        handler = getattr(self, f"cmd_{name}")
        await handler(arg)

    def run_palette_command(self, name: str) -> None:
        """Palette entries: commands needing an argument open their dialog instead."""
        if name == "system" or name == "set":
            self.show_settings = True
            return
        if name == "quit":  # like Ctrl+Q: asks while a reply is being generated
            self.call_later(self.run_action, "quit_app")
            return
        self.run_worker(self.run_command(name, ""), group="palette", exit_on_error=False)

    async def cmd_help(self, arg: str) -> None:
        self.push_screen(HelpScreen())

    async def cmd_quit(self, arg: str) -> None:
        await self.stop_generation()
        self.exit()

    async def cmd_retry(self, arg: str) -> None:
        await self.retry()

    async def cmd_continue(self, arg: str) -> None:
        await self.continue_reply()

    async def cmd_edit(self, arg: str) -> None:
        await self.edit_last()

    async def cmd_settings(self, arg: str) -> None:
        self.show_settings = not self.show_settings

    async def cmd_model(self, arg: str) -> None:
        if self.generating:
            self.say("Stop the reply first (Esc), then switch models.", severity="warning")
            return
        if not arg:
            self.open_model_picker()
            return
        self.start_load(arg)

    def open_model_picker(self) -> None:
        error = "\n".join(x for x in self.load_error or () if x)
        current = self.loading_spec or (self.info.spec if self.info else self.settings.model)

        def chosen(spec: str | None) -> None:
            if spec:
                self.start_load(spec)

        self.push_screen(ModelPickerScreen(error=error, current=current), chosen)

    async def cmd_clear(self, arg: str) -> None:
        """A new conversation; the old one stays in its journal (resumable)."""
        if self.generating:
            self.say("Stop the reply first (Esc).", severity="warning")
            return
        if self.recorder is not None:
            self.recorder.close()
        conv = Conversation(system_prompt=self.system_prompt, settings=self.params.to_dict())
        if self.info is not None:
            conv.model = dataclasses.asdict(self.info)
        self.conversation = conv
        self.recorder = self.new_recorder(conv)
        self.recorded_settings = None
        await self.transcript.clear_all()
        self.transcript.show_welcome(True)
        self.reset_status()
        self.refresh_meters()
        self.say("New conversation. The previous one is kept in the session journal.")

    def reset_status(self) -> None:
        """Another conversation is shown: the last reply's state and speed belong to the old."""
        facts: dict[str, Any] = {"ttft_s": None, "tokens_per_s": None, "detail": ""}
        if self.backend is not None:
            self.state = "ready"
            facts["state"] = "ready"
        self.status.update_facts(**facts)

    async def cmd_sessions(self, arg: str) -> None:
        from llama_tui.ui.screens.sessions import SessionsScreen

        async def chosen(session_id: str | None) -> None:
            if session_id and session_id != self.conversation.id:
                await self.open_session(session_id)

        self.push_screen(SessionsScreen(self.conversation.id, self.rename_conversation), chosen)

    def rename_conversation(self, title: str) -> None:
        """A new title for the open conversation, journaled by its recorder."""
        if self.recorder is not None:
            self.record("title_changed", title)
        else:
            self.conversation.title = title

    async def open_session(self, session_id: str) -> None:
        """Switch to a saved session (the current one stays in its journal)."""
        if self.generating:
            self.say("Stop the reply first (Esc).", severity="warning")
            return
        from llama_tui.session.store import SessionLoadError, load_conversation

        try:
            conv = await asyncio.to_thread(load_conversation, session_id)
        except SessionLoadError as e:
            self.say(f"Could not open the session: {e.reason}. F5 lists the saved sessions.",
                     severity="error", timeout=10)
            return
        if self.recorder is not None:
            self.recorder.close()
        self.conversation = conv
        self.recorder = self.new_recorder(conv)
        # The user's own changes are written first; the session's prompt is not theirs.
        self.remember_settings()
        self.apply_params(self.params, conv.system_prompt, remember=False)
        self.recorded_settings = None
        self.panel.load(self.params, self.defaults, self.system_prompt, self.context_length)
        await self.transcript.clear_all()
        await self.show_conversation()
        self.reset_status()
        self.refresh_meters()

    async def show_conversation(self) -> None:
        raise NotImplementedError

    def new_recorder(self, conv: Conversation) -> Any:
        """A journal for `conv` (None when the session store is unavailable)."""
        try:
            from llama_tui.session.recorder import SessionRecorder
        except ImportError:  # pragma: no cover - the store ships with the app
            return None
        return SessionRecorder(conv, on_error=self._journal_error)

    def _journal_error(self, text: str) -> None:
        self.say(f"{text}. The conversation is kept in memory; /save writes a copy.",
                 severity="error", timeout=10)

    # -- settings ----------------------------------------------------------------------------

    async def cmd_memory(self, arg: str) -> None:
        """Memory per device and the model's placement (the status bar has only the total)."""
        backend, info = self.backend, self.info
        if backend is None or info is None:
            self.say("No model is loaded.")
            return
        try:
            r = await asyncio.to_thread(backend.memory)
        except Exception as e:  # a reading must never break the chat
            self.say(f"Could not read memory: {clean(str(e))}", severity="warning")
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
        await self.note("\n".join(lines), title="memory")

    async def cmd_system(self, arg: str) -> None:
        if not arg:
            current = self.system_prompt or "(none: the model's template may add its own)"
            await self.note(f"System prompt: {current}\nSet it with /system TEXT; /system - "
                            "clears it.")
            return
        self.apply_params(self.params, "" if arg == "-" else arg)
        self.panel.load(self.params, self.defaults, self.system_prompt, self.context_length)
        self.say("System prompt set; it applies from the next reply.")

    # -- links and the editor ----------------------------------------------------------------

    def on_markdown_link_clicked(self, event: Markdown.LinkClicked) -> None:
        event.stop()
        href = clean(event.href)

        def answer(yes: bool | None) -> None:
            if yes:
                self.open_url(href)

        self.push_screen(ConfirmScreen(f"Open this link from the model's reply?\n\n{href}",
                                       yes="Open", no="Cancel", kind="-link"), answer)

    @on(PromptInput.EditorRequested)
    def _editor(self, event: PromptInput.EditorRequested) -> None:
        editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
        fd, name = tempfile.mkstemp(prefix="llama-tui-", suffix=".md")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(self.prompt.text)
            try:
                with self.suspend():
                    subprocess.run([*shlex.split(editor), name], check=False)
            except SuspendNotSupported:
                self.say("This terminal cannot hand over to an editor.", severity="warning")
                return
            except OSError as e:
                self.say(f"Could not run {editor}: {e}", severity="error")
                return
            self.prompt.set_text(Path(name).read_text(encoding="utf-8").rstrip("\n"))
        finally:
            with contextlib.suppress(OSError):
                os.unlink(name)
        self.prompt.focus()


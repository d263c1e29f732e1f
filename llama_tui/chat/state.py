"""The chat in use, without any UI: conversation, journal, settings in use, model.

`ChatState` is what the TUI's chat and headless mode share. It owns the `Conversation`, the
`SessionRecorder` that journals it, the generation params and system prompt in use, and
the loaded model's `ModelInfo`. Every change that must reach the journal goes through one
of its typed methods (`add_user`, `sync_settings`, `model_loaded`, `rename`, `remove_from`,
`clear`, `switch`), so a front end never calls the recorder by name. One thread (the UI's,
or headless mode's main thread) calls it; workers only get snapshots.

`requested_model` / `asking_for` are the one rule for which model is asked for: with
``--server`` the server's model name (``--server-model``; None means the one the server
serves), else ``--model``. `params_for_model` is the one rule for the params a reply uses
once a model is loaded: its defaults with the user's own choices on top. The TUI and
headless mode both go through them.

A journal problem never breaks the chat: the recorder already turns I/O errors into its
`error` attribute, and anything else it raises is logged here and dropped.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ParamSpec

from llama_tui.core.backend import Backend, ModelInfo
from llama_tui.core.params import PARAM_BY_NAME, GenerationParams
from llama_tui.session import tree
from llama_tui.session.attachments import Attachment
from llama_tui.session.transcript import Conversation, Message, MessageStatus

if TYPE_CHECKING:
    from llama_tui.config.settings import Settings
    from llama_tui.session.recorder import SessionRecorder

__all__ = [
    "BUSY",
    "ChatState",
    "asking_for",
    "model_label",
    "params_for_model",
    "requested_model",
    "server_models",
    "user_fields",
]

log = logging.getLogger(__name__)
P = ParamSpec("P")

# The busy guard: the one wording for "not now, a reply is being generated".
BUSY = "A reply is being generated. Press Esc to stop it first."


def requested_model(settings: Settings) -> str | None:
    """The model to ask for: the server's model name with a server (None: the server's
    own choice), else the model spec (repo id, folder, .gguf, demo)."""
    if settings.server:
        return settings.server_model
    return settings.model


def asking_for(settings: Settings, spec: str | None) -> Settings:
    """`settings` asking for `spec` instead (see `requested_model`). With a server, an empty
    or None spec means "whatever the server serves"; without one it keeps the model."""
    if settings.server:
        return dataclasses.replace(settings, server_model=spec or None)
    return dataclasses.replace(settings, model=spec or settings.model)


def model_label(settings: Settings) -> str:
    """What to call the requested model before it is loaded (the server's URL when the
    server chooses)."""
    return requested_model(settings) or settings.server or settings.model


def user_fields(sources: dict[str, str]) -> set[str]:
    """The generation fields the user chose (config, remembered, env, flags): they win over
    a model's defaults and survive a model switch; the others follow the model."""
    return {name for name in GenerationParams.field_names()
            if sources.get(name, "default") != "default"}


def params_for_model(
    defaults: GenerationParams,
    current: GenerationParams,
    chosen: set[str],
    context_length: int | None,
) -> tuple[GenerationParams, list[str]]:
    """The params a reply uses with a newly loaded model: the model's `defaults` with the
    user's `chosen` fields of `current` on top, and a warning for each chosen value that
    does not fit this model (e.g. max_new_tokens above its context), which gives way to
    the model's default."""
    params = defaults.with_changes(**{name: getattr(current, name) for name in chosen})
    problems = params.problems(context_length)
    if not problems:
        return params, []
    params = params.with_changes(**{k: getattr(defaults, k) for k in problems if k in chosen})
    warnings = []
    for name, why in problems.items():
        label = PARAM_BY_NAME[name].label if name in PARAM_BY_NAME else name
        warnings.append(f"{label} {why}; using the model default.")
    return params, warnings


def server_models(settings: Settings, factory: Callable[[Settings], Backend]) -> list[str]:
    """The model names the server in `settings` serves, asked now (blocking: call it off
    the UI thread); [] without a server. Raises what the connection raises."""
    if not settings.server:
        return []
    backend = factory(settings)
    try:
        lister = getattr(backend, "list_models", None)
        return [str(name) for name in lister()] if callable(lister) else []
    finally:
        backend.close()


@dataclass(eq=False)
class ChatState:
    """The conversation, its journal, and the settings and model in use."""

    conversation: Conversation
    params: GenerationParams
    system_prompt: str
    recorder: SessionRecorder | None = None
    model: ModelInfo | None = None
    # The (params, system prompt) last journaled; a reply journals them again on change.
    _recorded: tuple[GenerationParams, str] | None = field(default=None, repr=False)

    # -- the conversation ---------------------------------------------------------------

    def add_user(self, text: str, attachments: Sequence[Attachment] = ()) -> Message:
        """The user's prompt, with any attached files: added and journaled (fsynced, the
        files' text included) before any reply starts."""
        msg = self.conversation.add("user", text)
        msg.attachments = tuple(attachments)
        if self.recorder is not None:
            self._journal(self.recorder.user_message, msg)
        return msg

    def sync_settings(self) -> bool:
        """Before a reply: stamp and journal the settings in use if they changed since the
        last reply. True when they changed (a front end may then remember them)."""
        current = (self.params, self.system_prompt)
        if current == self._recorded:
            return False
        self._recorded = current
        if self.recorder is not None:
            self._journal(self.recorder.settings_changed, self.params.to_dict(),
                          self.system_prompt)
        # The reply about to be added is stamped with these (also without a journal).
        self.conversation.settings = self.params.to_dict()
        self.conversation.system_prompt = self.system_prompt
        return True

    def model_loaded(self, info: ModelInfo) -> None:
        """A model is in use now: kept here and in the conversation's metadata."""
        self.model = info
        record = dataclasses.asdict(info)
        if self.recorder is not None:
            self._journal(self.recorder.model_changed, record)
        else:
            self.conversation.model = record

    def rename(self, title: str) -> None:
        """A new title for the conversation (journaled)."""
        if self.recorder is not None:
            self._journal(self.recorder.title_changed, title)
        else:
            self.conversation.title = title

    def remove_from(self, index: int) -> list[Message]:
        """Delete messages[index:] from the conversation and the journal (a reply stopped
        before its first word, generated again: nothing worth keeping as a branch)."""
        ids = {m.id for m in self.conversation.messages[index:]}
        removed = tree.remove(self.conversation, ids) if ids else []
        if removed and self.recorder is not None:
            self._journal(self.recorder.messages_removed, [m.id for m in removed])
        return removed

    def branch_from(self, index: int) -> list[Message]:
        """Retry / edit: the path ends before messages[index]; those messages stay in the
        tree as a branch, and what is added next becomes their sibling."""
        moved = tree.branch_off(self.conversation, index)
        if moved:
            self._path_changed()
        return moved

    def select(self, tip: str) -> bool:
        """Make the branch through message `tip` active (and the newest path below it)."""
        if not tree.select(self.conversation, tip):
            return False
        self._path_changed()
        return True

    def step_branch(self, delta: int, message: Message | None = None) -> Message | None:
        """Switch the newest fork on the path (or `message`) to its sibling `delta` away.
        The sibling now active, or None when there is none that way."""
        at = message or tree.last_fork(self.conversation)
        if at is None:
            return None
        sibling = tree.step(self.conversation, at, delta)
        if sibling is not None:
            self._path_changed()
        return sibling

    def fork_reply(self, message_id: str, text: str, *, status: MessageStatus = "stopped"
                   ) -> Message | None:
        """A new version of reply `message_id` holding `text` (an edited reply, or a reply cut
        at a token with another one forced): its sibling, on the active path, journaled.
        None when there is no such reply."""
        conv = self.conversation
        target = next((m for m in tree.nodes(conv) if m.id == message_id), None)
        if target is None or target.role != "assistant":
            return None
        if target not in conv.messages:
            tree.select(conv, target.id, descend=False)
        self.branch_from(conv.messages.index(target))
        msg = conv.add("assistant", text, status=status)
        msg.settings, msg.system_prompt = target.settings, target.system_prompt
        if self.recorder is not None:
            self._journal(self.recorder.assistant_finished, msg)
        return msg

    def _path_changed(self) -> None:
        if self.recorder is not None:
            self._journal(self.recorder.path_changed)

    def switch(self, conversation: Conversation, recorder: SessionRecorder | None) -> None:
        """Another conversation (a new one, or a session opened): the old journal is closed
        and the settings are journaled again before the next reply."""
        self.close()
        self.conversation = conversation
        self.recorder = recorder
        self._recorded = None

    def close(self) -> None:
        """Flush and close the journal (quitting, or switching conversations)."""
        if self.recorder is not None:
            self._journal(self.recorder.close)

    # -- a reply's journal records (called by `llama_tui.chat.reply.ReplyRun`) -------------

    def reply_started(self, msg: Message) -> None:
        if self.recorder is not None:
            self._journal(self.recorder.assistant_started, msg)

    def reply_progress(self, msg: Message) -> None:
        """After every chunk; the recorder writes a checkpoint at most once per interval."""
        if self.recorder is not None:
            self._journal(self.recorder.assistant_progress, msg)

    def reply_finished(self, msg: Message) -> None:
        """Full text, status, stats and error; fsynced."""
        if self.recorder is not None:
            self._journal(self.recorder.assistant_finished, msg)

    # -- journal ------------------------------------------------------------------------

    def _journal(self, write: Callable[P, None], *args: P.args, **kwargs: P.kwargs) -> None:
        try:
            write(*args, **kwargs)
        except Exception:  # the chat goes on; the recorder reports I/O errors itself
            log.exception("journal write %s failed", getattr(write, "__name__", write))

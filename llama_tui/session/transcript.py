"""A conversation as plain data: messages with status and stats, plus session metadata.

Only the UI thread mutates a `Conversation`; workers get `history()` snapshots (tuples of
frozen `ChatMessage`). `to_dict` / `from_dict` are the one serialised shape, shared by the
journal (snapshot records) and the JSON export; `from_dict` treats its input as untrusted
(files can be damaged or hand-edited) and raises `ValueError` on anything malformed.
No textual, no torch.
"""

from __future__ import annotations

import math
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from llama_tui.core.backend import ChatMessage, Role
from llama_tui.session.attachments import Attachment, attachments_from, model_text

MessageStatus = Literal["complete", "streaming", "stopped", "error"]

_STATUSES = ("complete", "streaming", "stopped", "error")
_ROLES = ("system", "user", "assistant")

# Session ids become file names (`<id>.jsonl`), and ids read back from files are untrusted:
# a JSON export saying `"id": "../../.bashrc"` must never make the journal append elsewhere.
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def new_id() -> str:
    """A sortable, unique id: UTC timestamp plus random suffix (also used as file stem)."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


def is_safe_id(value: object) -> bool:
    """True when `value` can be used as a session file stem (no path separators, no dots first)."""
    return isinstance(value, str) and _SAFE_ID.fullmatch(value) is not None


def _timestamp(value: object) -> float:
    # Damaged files may hold strings, bools, NaN or huge numbers here; a bad time is not
    # worth losing a message over, so fall back to "now".
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return time.time()
    try:
        f = float(value)
    except OverflowError:
        return time.time()
    return f if math.isfinite(f) else time.time()


def _str_or(value: object, default: str) -> str:
    return value if isinstance(value, str) else default


@dataclass
class Message:
    """One turn. Assistant messages may be partial: status streaming / stopped / error.

    `interrupted` marks a reply that was being generated when the process died (restored
    from the journal's last checkpoint, status "stopped"). A reply also keeps the generation
    `settings` and `system_prompt` it was made with (None when unknown: older files), so an
    export can say which replies used other settings.
    """

    role: Role
    content: str
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    created: float = field(default_factory=time.time)
    status: MessageStatus = "complete"
    stats: dict[str, Any] | None = None
    error: str | None = None
    interrupted: bool = False
    settings: dict[str, Any] | None = None
    system_prompt: str | None = None
    # Files attached to a user message (`/read`, `--file`), their text included: the model
    # gets them before `content` (`session.attachments.model_text`).
    attachments: tuple[Attachment, ...] = ()
    # The message this one follows (None: the first of the conversation). Siblings share
    # a parent: retry and edit add one instead of replacing (`session.tree`).
    parent: str | None = None
    # What regenerating this reply exactly needs (`llama_tui.chat.replay`); None for
    # prompts, older files and replies that never reached the model.
    replay: dict[str, Any] | None = None
    # A reply's thinking, without its markers (`core.thinking`); "" when the model did not
    # think. Shown folded, saved, and handed back to the chat template with the reply.
    thinking: str = ""
    # A reply's per-token logprobs and alternatives, compact (`core.tokens.to_compact`);
    # None when not recorded. Checked in full where it is used (`core.tokens.from_compact`).
    tokens: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "parent": self.parent,
            "replay": self.replay,
            "id": self.id,
            "role": self.role,
            "content": self.content,
            "created": self.created,
            "status": self.status,
            "stats": self.stats,
            "error": self.error,
            "interrupted": self.interrupted,
            "settings": self.settings,
            "system_prompt": self.system_prompt,
            "attachments": [a.to_dict() for a in self.attachments],
            "thinking": self.thinking,
            "tokens": self.tokens,
        }

    @classmethod
    def from_dict(cls, d: object) -> Message:
        """Parse an untrusted dict; `ValueError` when it is not a usable message."""
        if not isinstance(d, dict):
            raise ValueError("message is not an object")
        role = d.get("role")
        if role not in _ROLES:
            raise ValueError(f"bad role {role!r}")
        content = d.get("content", "")
        if not isinstance(content, str):
            raise ValueError("message content is not text")
        status = d.get("status", "complete")
        if status not in _STATUSES:
            status = "complete"
        stats = d.get("stats")
        error = d.get("error")
        msg_id = d.get("id")
        settings, system_prompt = d.get("settings"), d.get("system_prompt")
        parent, replay = d.get("parent"), d.get("replay")
        thinking = d.get("thinking")
        attachments = attachments_from(d.get("attachments"))  # ValueError when damaged
        return cls(
            role=role,
            content=content,
            id=msg_id if isinstance(msg_id, str) and msg_id else uuid.uuid4().hex[:12],
            created=_timestamp(d.get("created")),
            status=status,
            stats=stats if isinstance(stats, dict) else None,
            error=error if isinstance(error, str) and error else None,
            interrupted=d.get("interrupted") is True,
            settings=settings if isinstance(settings, dict) else None,
            system_prompt=system_prompt if isinstance(system_prompt, str) else None,
            attachments=attachments,
            parent=parent if isinstance(parent, str) and parent else None,
            replay=replay if isinstance(replay, dict) else None,
            thinking=thinking if isinstance(thinking, str) else "",
            tokens=_token_log_of(d.get("tokens")),
        )


def _token_log_of(value: object) -> dict[str, Any] | None:
    # core.tokens is imported when a message is read back, not before the TUI's first paint.
    from llama_tui.core.tokens import compact_or_none

    return compact_or_none(value)


@dataclass
class Conversation:
    """A session: id, title, system prompt, the model and settings in use, and its messages.

    `load_warnings` is not part of the conversation: a loader fills it in (e.g. "2 damaged
    lines skipped") so the UI can tell the user; it is never saved.
    """

    id: str = field(default_factory=new_id)
    title: str = ""
    created: float = field(default_factory=time.time)
    system_prompt: str = ""
    model: dict[str, Any] = field(default_factory=dict)  # ModelInfo fields, as recorded
    settings: dict[str, Any] = field(default_factory=dict)  # GenerationParams.to_dict()
    # The active path, oldest first: what the model sees and the transcript shows. Each
    # message's `parent` is the one before it (the first's is None).
    messages: list[Message] = field(default_factory=list)
    # Every other message of the tree (earlier retries and edits, with what followed them),
    # in the order they were made. `session.tree` moves messages between the two lists.
    branches: list[Message] = field(default_factory=list)
    load_warnings: list[str] = field(default_factory=list, compare=False, repr=False)

    def history(self) -> tuple[ChatMessage, ...]:
        """What the model sees: the system prompt, then every user / assistant message.

        Stopped (partial) replies are included so "continue" can extend them; failed
        replies with no text are left out.
        """
        out: list[ChatMessage] = []
        if self.system_prompt:
            out.append(ChatMessage("system", self.system_prompt))
        for m in self.messages:
            if m.role == "system":
                continue
            if m.role == "assistant" and m.status == "error" and not m.content:
                continue
            out.append(ChatMessage(m.role, model_text(m.content, m.attachments),
                                   reasoning=m.thinking))
        return tuple(out)

    def add(self, role: Role, content: str, status: MessageStatus = "complete") -> Message:
        """Append a message; a reply is stamped with the settings and system prompt in
        effect now (the caller updates `settings` before asking for a reply)."""
        parent = self.messages[-1].id if self.messages else None
        msg = Message(role=role, content=content, status=status, parent=parent)
        if role == "assistant":
            msg.settings = dict(self.settings) if self.settings else None
            msg.system_prompt = self.system_prompt
        self.messages.append(msg)
        if not self.title and role == "user":
            self.title = " ".join(content.split())[:60]
        return msg

    def last(self, role: Role | None = None) -> Message | None:
        for m in reversed(self.messages):
            if role is None or m.role == role:
                return m
        return None

    def first_prompt(self) -> str:
        """The first user message (session lists show it), or ""."""
        for m in self.messages:
            if m.role == "user":
                return m.content
        return ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "created": self.created,
            "system_prompt": self.system_prompt,
            "model": self.model,
            "settings": self.settings,
            "messages": [m.to_dict() for m in self.messages],
            "branches": [m.to_dict() for m in self.branches],
        }

    @classmethod
    def from_dict(cls, d: object) -> Conversation:
        """Parse an untrusted dict; `ValueError` when it is not a conversation.

        Unusable messages are dropped (and counted in `load_warnings`) rather than failing
        the whole conversation; an unsafe id is replaced by a fresh one.
        """
        if not isinstance(d, dict):
            raise ValueError("conversation is not an object")
        raw_messages = d.get("messages", [])
        if not isinstance(raw_messages, list):
            raise ValueError("messages is not a list")
        raw_branches = d.get("branches", [])
        if not isinstance(raw_branches, list):
            raw_branches = []
        messages, dropped = _parse_messages(raw_messages)
        branches, dropped_branches = _parse_messages(raw_branches)
        model = d.get("model")
        settings = d.get("settings")
        conv = cls(
            id=d["id"] if is_safe_id(d.get("id")) else new_id(),
            title=_str_or(d.get("title"), ""),
            created=_timestamp(d.get("created")),
            system_prompt=_str_or(d.get("system_prompt"), ""),
            model=model if isinstance(model, dict) else {},
            settings=settings if isinstance(settings, dict) else {},
            messages=messages,
        )
        # The active path is what the file says it is: each message follows the one before
        # (older files have no parents at all). Branches must hang off the tree.
        for before, msg in zip([None, *messages], messages, strict=False):
            msg.parent = before.id if before is not None else None
        conv.branches, orphans = _attached(messages, branches)
        dropped += dropped_branches + orphans
        if dropped:
            conv.load_warnings.append(f"{dropped} unreadable message(s) left out")
        return conv


def _parse_messages(raw: list[Any]) -> tuple[list[Message], int]:
    """The usable messages of an untrusted list (ids made unique), and how many were not."""
    out: list[Message] = []
    seen: set[str] = set()
    dropped = 0
    for item in raw:
        try:
            msg = Message.from_dict(item)
        except ValueError:
            dropped += 1
            continue
        if msg.id in seen:
            msg.id = uuid.uuid4().hex[:12]
        seen.add(msg.id)
        out.append(msg)
    return out, dropped


def _attached(path: list[Message], branches: list[Message]) -> tuple[list[Message], int]:
    """The branch messages whose parents lead back to the tree (no cycles, no ids shared with
    the path), and how many were left out."""
    known = {m.id for m in path}
    pending = [m for m in branches if m.id not in known]
    kept: list[Message] = []
    # A parent may come after its child in a hand-edited file: settle in passes.
    progress = True
    while pending and progress:
        progress = False
        for msg in list(pending):
            if msg.parent is None or msg.parent in known:
                known.add(msg.id)
                kept.append(msg)
                pending.remove(msg)
                progress = True
    order = {id(m): i for i, m in enumerate(branches)}
    kept.sort(key=lambda m: order[id(m)])
    return kept, len(branches) - len(kept)

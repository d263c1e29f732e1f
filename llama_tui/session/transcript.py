"""A conversation as plain data: messages with status and stats, plus session metadata.

Only the UI thread mutates a `Conversation`; workers get `history()` snapshots (tuples of
frozen `ChatMessage`). No textual, no torch.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from llama_tui.engine.base import ChatMessage, Role

MessageStatus = Literal["complete", "streaming", "stopped", "error"]


def new_id() -> str:
    """A sortable, unique id: UTC timestamp plus random suffix (also used as file stem)."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


@dataclass
class Message:
    """One turn. Assistant messages may be partial: status streaming / stopped / error."""

    role: Role
    content: str
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    created: float = field(default_factory=time.time)
    status: MessageStatus = "complete"
    stats: dict[str, Any] | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "role": self.role,
            "content": self.content,
            "created": self.created,
            "status": self.status,
            "stats": self.stats,
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Message:
        role = d.get("role")
        if role not in ("system", "user", "assistant"):
            raise ValueError(f"bad role {role!r}")
        status = d.get("status", "complete")
        if status not in ("complete", "streaming", "stopped", "error"):
            status = "complete"
        stats = d.get("stats")
        return cls(
            role=role,
            content=str(d.get("content", "")),
            id=str(d.get("id") or uuid.uuid4().hex[:12]),
            created=float(d.get("created") or time.time()),
            status=status,
            stats=stats if isinstance(stats, dict) else None,
            error=str(d["error"]) if d.get("error") else None,
        )


@dataclass
class Conversation:
    """A session: id, title, system prompt, the model and settings in use, and its messages."""

    id: str = field(default_factory=new_id)
    title: str = ""
    created: float = field(default_factory=time.time)
    system_prompt: str = ""
    model: dict[str, Any] = field(default_factory=dict)  # ModelInfo fields, as recorded
    settings: dict[str, Any] = field(default_factory=dict)  # GenerationParams.to_dict()
    messages: list[Message] = field(default_factory=list)

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
            out.append(ChatMessage(m.role, m.content))
        return tuple(out)

    def add(self, role: Role, content: str, status: MessageStatus = "complete") -> Message:
        msg = Message(role=role, content=content, status=status)
        self.messages.append(msg)
        if not self.title and role == "user":
            self.title = " ".join(content.split())[:60]
        return msg

    def last(self, role: Role | None = None) -> Message | None:
        for m in reversed(self.messages):
            if role is None or m.role == role:
                return m
        return None

"""What one journal line holds: a builder per record type, and the one line encoding.

The record types and their fields are described in `journal.py` (the file format, its
reader and its paths). Metadata that can echo secrets is redacted here, once, for every
writer (the live recorder, and renaming a closed session). Message text and the system
prompt are written exactly.
"""

from __future__ import annotations

import time
from typing import Any

from llama_tui.session.transcript import Conversation, Message
from llama_tui.text import redact

FORMAT_VERSION = 1

Record = dict[str, Any]


def redact_tree(value: Any) -> Any:
    """`text.redact` applied to every string inside dicts / lists (a copy)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact(str(k)): redact_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_tree(v) for v in value]
    return value


def message_record(msg: Message) -> dict[str, Any]:
    """A message as the journal stores it (inside records and snapshots)."""
    d = msg.to_dict()
    d["stats"] = redact_tree(d["stats"])
    d["settings"] = redact_tree(d["settings"])
    d["error"] = redact(d["error"]) if d["error"] else d["error"]
    return d


def conversation_record(conv: Conversation) -> dict[str, Any]:
    """A whole conversation as a snapshot record stores it."""
    d = conv.to_dict()
    d["title"] = redact(conv.title)
    d["model"] = redact_tree(conv.model)
    d["settings"] = redact_tree(conv.settings)
    d["messages"] = [message_record(m) for m in conv.messages]
    d["branches"] = [message_record(m) for m in conv.branches]
    return d


def state_record(conv: Conversation) -> dict[str, Any]:
    """What a session holds, to tell two copies of it apart (its creation time aside)."""
    d = conversation_record(conv)
    d.pop("created", None)
    return d


# -- one builder per record type ------------------------------------------------------------


def message_rec(msg: Message) -> Record:
    """A finished message (the user's prompt)."""
    return {"type": "message", "message": message_record(msg)}


def reply_started_rec(msg: Message) -> Record:
    return {"type": "assistant_started", "message": message_record(msg)}


def reply_finished_rec(msg: Message) -> Record:
    """The reply's full text, status, stats and error (a reply still marked streaming is
    recorded as complete: it did finish)."""
    record = message_record(msg)
    if record["status"] == "streaming":
        record["status"] = "complete"
    return {"type": "assistant_finished", "message": record}


def checkpoint_rec(message_id: str, offset: int, text: str,
                   thinking: tuple[int, str] | None = None) -> Record:
    """The reply's text from `offset` on; `thinking`: its thought's (offset, text) when that
    changed too (readers from before thinking apply the text and skip these fields)."""
    rec: Record = {"type": "checkpoint", "id": message_id, "offset": offset, "text": text}
    if thinking is not None:
        rec["thinking_offset"], rec["thinking"] = thinking
    return rec


def settings_rec(params: dict[str, Any], system_prompt: str) -> Record:
    return {"type": "settings", "settings": redact_tree(params), "system_prompt": system_prompt}


def model_rec(info: dict[str, Any]) -> Record:
    return {"type": "model", "model": redact_tree(info)}


def title_rec(title: str) -> Record:
    return {"type": "title", "title": redact(title)}


def cleared_rec() -> Record:
    return {"type": "cleared"}


def removed_rec(ids: list[str]) -> Record:
    return {"type": "removed", "ids": list(ids)}


def active_rec(tip: str | None) -> Record:
    """The active path now ends at message `tip` (a branch switch, an edit)."""
    return {"type": "active", "tip": tip}


def snapshot_rec(conv: Conversation) -> Record:
    return {"type": "snapshot", "conversation": conversation_record(conv)}


def encode_record(session_id: str, rec: Record) -> bytes:
    """One journal line: the common fields, then `rec`'s. ensure_ascii: every line is pure
    ASCII, so raw control bytes never reach the file (safe to `cat`), and lone surrogates
    in model output still encode."""
    import json  # here, not at the top: not needed before the TUI's first paint

    full = {"v": FORMAT_VERSION, "type": rec["type"], "ts": time.time(), "session": session_id}
    full.update(rec)
    return (json.dumps(full, ensure_ascii=True, separators=(",", ":")) + "\n").encode("ascii")

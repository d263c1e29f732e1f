"""A conversation as a tree: siblings, the active path, and moving between branches.

Every message has a `parent`; messages with the same parent are siblings (a retried reply,
an edited prompt). `Conversation.messages` is the active path (root to tip) and
`Conversation.branches` holds every other message. These functions are the only code that
moves messages between the two; callers journal the result (`records.active_rec`).
No textual, no torch.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from llama_tui.session.transcript import Conversation, Message


def nodes(conv: Conversation) -> Iterator[Message]:
    """Every message of the tree: the active path, then the branches."""
    yield from conv.messages
    yield from conv.branches


def child_map(conv: Conversation) -> dict[str | None, list[Message]]:
    """parent id -> the messages that follow it, oldest first (None: the first messages).
    Built once per question: conversations can hold thousands of messages."""
    out: dict[str | None, list[Message]] = {}
    for m in nodes(conv):
        out.setdefault(m.parent, []).append(m)
    for group in out.values():
        group.sort(key=lambda m: m.created)  # stable: equal times keep the file's order
    return out


def children(conv: Conversation, parent: str | None) -> list[Message]:
    """The messages that follow `parent` (None: the first messages), oldest first."""
    return child_map(conv).get(parent, [])


def siblings(conv: Conversation, msg: Message) -> list[Message]:
    """`msg` and the other versions of it (same parent), oldest first."""
    return children(conv, msg.parent)


def position(conv: Conversation, msg: Message) -> tuple[int, int]:
    """(1-based index of `msg` among its siblings, number of siblings)."""
    group = siblings(conv, msg)
    return next(i for i, m in enumerate(group, 1) if m is msg), len(group)


def branch_off(conv: Conversation, index: int) -> list[Message]:
    """End the active path before `index`; the messages from there on become a branch
    (kept, reachable again). Returns them."""
    moved = conv.messages[index:]
    del conv.messages[index:]
    conv.branches.extend(moved)
    return moved


def remove(conv: Conversation, ids: set[str]) -> list[Message]:
    """Delete messages and everything that follows them (a reply that never began)."""
    kids = child_map(conv)
    doomed: set[str] = set()
    todo = [m.id for m in nodes(conv) if m.id in ids]
    while todo:  # the messages and their descendants, wherever they are
        mid = todo.pop()
        if mid not in doomed:
            doomed.add(mid)
            todo.extend(m.id for m in kids.get(mid, ()))
    gone = [m for m in nodes(conv) if m.id in doomed]
    keep_path: list[Message] = []
    for m in conv.messages:  # the path ends where the first removed message was
        if m.id in doomed:
            break
        keep_path.append(m)
    on_path = {m.id for m in keep_path}
    conv.branches = [m for m in nodes(conv) if m.id not in doomed and m.id not in on_path]
    conv.messages = keep_path
    return gone


def select(conv: Conversation, tip: str | None, *, descend: bool = True) -> bool:
    """Make the path to message `tip` active (None: an empty path). With `descend`, the path
    goes on below `tip` through the newest reply at each step. False when `tip` is unknown
    (nothing changes)."""
    by_id = {m.id: m for m in nodes(conv)}
    path: list[Message] = []
    at = by_id.get(tip) if tip is not None else None
    if tip is not None and at is None:
        return False
    seen: set[str] = set()
    while at is not None and at.id not in seen:  # `seen`: a damaged file's cycle
        seen.add(at.id)
        path.append(at)
        at = by_id.get(at.parent) if at.parent is not None else None
    path.reverse()
    if descend and path:
        kids = child_map(conv)
        while True:
            below = kids.get(path[-1].id)
            if not below:
                break
            path.append(below[-1])
    on_path = {m.id for m in path}
    conv.branches = [m for m in nodes(conv) if m.id not in on_path]
    conv.messages = path
    return True


def step(conv: Conversation, msg: Message, delta: int) -> Message | None:
    """Switch `msg` (on the active path) for its sibling `delta` away (clamped) and make
    that branch active. The sibling, or None when there is none that way."""
    group = siblings(conv, msg)
    i = next(i for i, m in enumerate(group) if m is msg)
    j = max(0, min(len(group) - 1, i + delta))
    if j == i:
        return None
    select(conv, group[j].id)
    return group[j]


def last_fork(conv: Conversation) -> Message | None:
    """The newest message on the active path that has siblings (what the branch keys move)."""
    kids = child_map(conv)
    for m in reversed(conv.messages):
        if len(kids.get(m.parent, ())) > 1:
            return m
    return None


def other_branches(conv: Conversation) -> int:
    """How many leaves of the tree are not on the active path (for exports)."""
    parents = {m.parent for m in nodes(conv)}
    return sum(1 for m in conv.branches if m.id not in parents)


@dataclass(frozen=True)
class BranchRow:
    """One line of the branch picker: a message where the conversation forks."""

    message: Message
    depth: int  # forks above it
    index: int  # 1-based among its siblings
    count: int  # siblings
    active: bool  # on the active path
    length: int  # messages on its newest path down from here
    tokens: int  # generated tokens on that path


def branch_rows(conv: Conversation) -> list[BranchRow]:
    """The first messages and every fork of the tree, depth first: each version, then the
    forks further down its own branches."""
    active = {m.id for m in conv.messages}
    kids = child_map(conv)
    rows: list[BranchRow] = []
    # Iterative: a linear conversation of thousands of messages is one long chain.
    first = kids.get(None, [])
    stack = [(m, 0, i, len(first)) for i, m in reversed(list(enumerate(first, 1)))]
    while stack:
        msg, depth, index, count = stack.pop()
        length, tokens = _descent(kids, msg)
        rows.append(BranchRow(msg, depth, index, count, msg.id in active, length, tokens))
        at = msg
        while len(below := kids.get(at.id, [])) == 1:
            at = below[0]
        stack.extend((m, depth + 1, i, len(below))
                     for i, m in reversed(list(enumerate(below, 1))))
    return rows


def _descent(kids: dict[str | None, list[Message]], msg: Message) -> tuple[int, int]:
    length, tokens = 0, 0
    at: Message | None = msg
    while at is not None:
        length += 1
        stats = at.stats or {}
        generated = stats.get("generated_tokens")
        if isinstance(generated, int) and not isinstance(generated, bool):
            tokens += generated
        below = kids.get(at.id)
        at = below[-1] if below else None
    return length, tokens

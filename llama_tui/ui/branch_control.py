"""Branches on the chat screen: the `2/3` in turn headers, switching, the picker, forks.

The tree itself is `llama_tui.session.tree` and the chat state changes it (journaled);
this keeps the transcript in step. A switch re-renders only from the first message that
changed, so the turns above stay as they are (and so does the KV cache the engine keeps
for the shared prefix: the next reply prefills only what differs).

Keys: Alt+Left / Alt+Right move the newest fork of the active path to its previous / next
version (terminals send them as ESC [1;3D / ESC [1;3C, which tmux and SSH pass through);
`/branch prev|next` does the same, `/branches` opens the picker.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.content import Content

from llama_tui.session import tree
from llama_tui.session.transcript import Message, MessageStatus
from llama_tui.ui.widgets.turns import AssistantTurn, UserTurn

if TYPE_CHECKING:
    from llama_tui.ui.chat_screen import ChatScreen

# Below a fork with more messages than this, a switch re-shows the path lazily.
EAGER_TURNS = 20
BRANCH_USAGE = "Usage: /branch prev | next (or Alt+Left / Alt+Right); /branches lists them all."


class BranchControl:
    """The chat screen's branch keys, commands and markers."""

    def __init__(self, screen: ChatScreen) -> None:
        self.screen = screen
        self._editing: str | None = None  # the reply being edited in the input

    def mark(self) -> None:
        """Every turn's header says which version it is when it has siblings (`2/3`)."""
        conv = self.screen.conversation
        kids = tree.child_map(conv)
        by_id = {m.id: m for m in conv.messages}
        for turn in self.screen.transcript.query(".turn"):
            msg = by_id.get(getattr(turn, "message_id", ""))
            if msg is None or not isinstance(turn, (UserTurn, AssistantTurn)):
                continue
            base = "you" if isinstance(turn, UserTurn) else "assistant"
            group = kids.get(msg.parent, [])
            if len(group) > 1:
                index = next(i for i, m in enumerate(group, 1) if m is msg)
                turn.border_title = Content(f"{base} · {index}/{len(group)}")
            else:
                turn.border_title = base

    async def step(self, delta: int) -> None:
        """Alt+Left / Alt+Right, /branch prev|next."""
        host = self.screen.host
        if host.refuse_while_generating():
            return
        before = [m.id for m in self.screen.conversation.messages]
        moved = host.chat_state.step_branch(delta)
        if moved is None:
            fork = tree.last_fork(self.screen.conversation)
            host.say("No other versions yet: Ctrl+R (retry) or Ctrl+T (edit) makes one."
                     if fork is None else
                     f"This is the {'first' if delta < 0 else 'last'} version.")
            return
        await self.show_switch(before)
        index, count = tree.position(self.screen.conversation, moved)
        host.say(f"Version {index}/{count}.")

    async def select(self, tip: str) -> None:
        """The picker chose a message: its branch becomes active."""
        host = self.screen.host
        if host.refuse_while_generating():
            return
        before = [m.id for m in self.screen.conversation.messages]
        if host.chat_state.select(tip):
            await self.show_switch(before)

    async def command(self, arg: str) -> None:
        """/branch prev | next."""
        word = arg.strip().lower()
        if word in ("prev", "previous", "p", "-"):
            await self.step(-1)
        elif word in ("next", "n", "+"):
            await self.step(+1)
        else:
            self.screen.host.say(BRANCH_USAGE, severity="warning")

    def open_picker(self) -> None:
        """/branches: the tree of the whole conversation; Enter makes a branch active."""
        from llama_tui.ui.screens.branches import BranchesScreen

        rows = tree.branch_rows(self.screen.conversation)
        if all(r.count == 1 for r in rows):
            self.screen.host.say("This conversation has one branch so far: Ctrl+R (retry) "
                                 "or Ctrl+T (edit) makes another.")
            return

        async def chosen(tip: str | None) -> None:
            if tip:
                await self.select(tip)

        self.screen.app.push_screen(BranchesScreen(rows, self.screen.conversation.model),
                                    chosen)

    async def show_switch(self, before: list[str]) -> None:
        """Re-render the transcript from the first message that differs from `before`."""
        screen = self.screen
        after = screen.conversation.messages
        keep = 0
        while keep < min(len(before), len(after)) and before[keep] == after[keep].id:
            keep += 1
        if len(after) - keep > EAGER_TURNS:
            # A fork far up a long session: show the new path lazily (about one screenful
            # now, the rest as the user scrolls) rather than mount every turn below it.
            await screen.transcript.show_messages(after)
        else:
            for mid in before[keep:]:
                await screen.transcript.remove_message(mid)
            for m in after[keep:]:
                await screen.transcript.add_message(m)
        screen.transcript.show_welcome(not after)
        self.mark()
        screen.host.model.refresh_meters()

    async def fork(self, message_id: str, prefix: str, *, status: MessageStatus = "stopped"
                   ) -> Message | None:
        """A new version of reply `message_id` that starts with `prefix` (the token
        inspector's chosen alternative, an edited reply), shown and made active."""
        before = [m.id for m in self.screen.conversation.messages]
        msg = self.screen.host.chat_state.fork_reply(message_id, prefix, status=status)
        if msg is not None:
            await self.show_switch(before)
        return msg

    # -- editing the model's reply -------------------------------------------------------

    @property
    def editing(self) -> str | None:
        """The id of the reply being edited in the input, or None."""
        return self._editing

    async def edit_reply(self) -> None:
        """/edit reply: the last reply goes into the input; Enter saves the edited text as a
        new version of it, Ctrl+G saves it and lets the model continue from it."""
        screen = self.screen
        if screen.host.refuse_while_generating():
            return
        last = screen.conversation.last("assistant")
        if last is None:
            screen.host.say("No reply to edit yet.")
            return
        if screen.prompt.text.strip():  # an unsent draft stays reachable with Up
            screen.prompt.remember(screen.prompt.text)
        self._editing = last.id
        screen.prompt.set_text(last.content)
        screen.prompt.focus()
        screen.host.say("Editing the reply: Enter keeps it as a new version, Ctrl+G keeps "
                        "it and continues from it; the original stays (Alt+Left).", timeout=8)

    async def submit_edit(self, text: str, *, continuing: bool) -> bool:
        """The edited reply was sent (Enter) or continued (Ctrl+G). False when no edit is
        in progress (the text is an ordinary prompt)."""
        reply_id, self._editing = self._editing, None
        if reply_id is None:
            return False
        screen = self.screen
        if not text.strip():
            screen.host.say("Edit cancelled: the reply is unchanged.")
            return True
        if continuing and screen.replies.cannot_start():
            self._editing = reply_id  # keep the edit: it can be sent once a model is there
            return True
        msg = await self.fork(reply_id, text, status="stopped" if continuing else "complete")
        if msg is None:
            screen.host.say("That reply is gone; the edit was not saved.", severity="warning")
            return True
        screen.prompt.set_text("")
        if continuing:
            await screen.replies.start(continuing=True)
        return True

"""`/inspect [N]` and F8: open the token inspector on a reply, and continue from the
alternative picked there as a new branch (`ChatScreen.fork_and_continue`).

N counts the replies shown, first = 1; without it the last reply is inspected. Which reply
and why it has no numbers are decided here; the screen only draws (`ui.screens.inspector`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llama_tui.chat.tokens import message_tokens
from llama_tui.ui import token_underline
from llama_tui.ui.screens.inspector import ForkRequest, InspectorScreen

if TYPE_CHECKING:
    from llama_tui.session.transcript import Message
    from llama_tui.ui.app import LlamaTuiApp

__all__ = ["open_inspector", "pick_reply"]

USAGE = "/inspect [N]: the token inspector on reply N (1 = the first; default the last)."


def pick_reply(messages: list[Message], arg: str) -> tuple[Message, int] | str:
    """The reply `arg` names and its number, or why there is none (a message to show)."""
    replies = [m for m in messages if m.role == "assistant"]
    if not replies:
        return "There is no reply to inspect yet."
    text = arg.strip()
    if not text:
        return replies[-1], len(replies)
    try:
        n = int(text)
    except ValueError:
        return f"{USAGE} '{text[:20]}' is not a number."
    if not 1 <= n <= len(replies):
        return f"There is no reply {n}: this conversation shows {len(replies)}. {USAGE}"
    return replies[n - 1], n


def _why_none(msg: Message) -> str:
    if msg.status == "streaming":
        return "it is still being written (inspect it when it ends)"
    if msg.tokens is not None:
        return "its stored token data is damaged"
    return "none were recorded for it (made with logprobs 0, or before llama-tui recorded them)"


async def open_inspector(app: LlamaTuiApp, arg: str) -> None:
    """Open the inspector on the reply `arg` names (see the module docstring);
    `/inspect underline N|off` sets the transcript's underlining (`ui.token_underline`)."""
    word, _, rest = arg.strip().partition(" ")
    if word.lower() == "underline":
        await token_underline.command(app, rest)
        return
    picked = pick_reply(app.chat_state.conversation.messages, arg)
    if isinstance(picked, str):
        await app.chat.note(picked, variant="warning")
        return
    msg, number = picked
    log = message_tokens(msg)
    why = "" if log is not None else _why_none(msg)
    covered = log.text() if log is not None else ""
    lead, skip = "", 0
    if msg.content.endswith(covered):  # tokens after a given start (continued from a pick)
        lead = msg.content[: len(msg.content) - len(covered)]
    elif covered.endswith(msg.content):  # tokens of a thought before the answer
        skip = len(covered) - len(msg.content)

    def done(request: ForkRequest | None) -> None:
        if request is not None:
            app.run_worker(
                app.chat.fork_and_continue(request.message_id, request.prefix),
                group="inspector-fork",
                exit_on_error=False,
            )

    app.push_screen(InspectorScreen(msg.id, number, log, why, lead, skip), done)

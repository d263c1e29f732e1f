"""`/inspect underline N`: the transcript underlines the tokens of every reply that the model
gave less than N% (off by default; `/inspect underline off`).

While it is on, a reply with recorded token probabilities is shown as its plain text drawn
token by token (the Markdown rendering steps aside: Markdown has no underline), with the
unsure tokens underlined and bold, so the places where the model guessed stand out while
reading; replies without token data keep their Markdown. The choice lasts for the session.

Two hooks call `show`: a saved reply shown again (`widgets.transcript._restore`) and a reply
that just finished (`reply_runner`); `apply_all` redraws what is on screen when it changes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from weakref import WeakKeyDictionary

from rich.style import Style
from rich.text import Text
from textual.widgets import Static

from llama_tui.chat.tokens import message_tokens
from llama_tui.text import clean

if TYPE_CHECKING:
    from llama_tui.session.transcript import Message
    from llama_tui.ui.app import LlamaTuiApp
    from llama_tui.ui.widgets.turns import AssistantTurn

__all__ = ["LowTokenText", "apply_all", "command", "show"]

_THRESHOLD: WeakKeyDictionary[object, float] = WeakKeyDictionary()  # per app
LOW_STYLE = Style(underline=True, bold=True)
USAGE = "/inspect underline N underlines tokens below N% in the replies; /inspect underline off"


class LowTokenText(Static):
    """A reply's text, token by token, tokens below the threshold underlined."""

    DEFAULT_CSS = "LowTokenText { padding: 0 1; }"


def threshold(app: object) -> float:
    """The probability below which tokens are underlined (0: off)."""
    return _THRESHOLD.get(app, 0.0)


def show(turn: AssistantTurn, msg: Message) -> None:
    """Draw `turn` (showing `msg`) with or without underlines, as the setting says."""
    try:
        app = turn.app
    except Exception:  # not mounted in an app: nothing to decide
        return
    limit = threshold(app)
    existing = list(turn.query(LowTokenText))
    if limit <= 0 and not existing:
        return  # off, as by default: the reply stays as it is
    log = message_tokens(msg) if limit > 0 else None
    markdown = turn.markdown
    if log is None or not log.tokens or log.text() != msg.content:
        for widget in existing:
            widget.remove()
        markdown.display = True
        return
    text = Text()
    for tok in log.tokens:
        text.append(clean(tok.text), LOW_STYLE if tok.prob < limit else None)
    if existing:
        existing[0].update(text)
    else:
        turn.mount(LowTokenText(text), after=markdown)
    markdown.display = False


def apply_all(app: LlamaTuiApp) -> None:
    """Redraw every reply on screen for the current setting."""
    from llama_tui.ui.widgets.turns import AssistantTurn

    by_id = {m.id: m for m in app.chat_state.conversation.messages}
    for turn in app.chat.transcript.query(AssistantTurn):
        msg = by_id.get(turn.message_id)
        if msg is not None:
            show(turn, msg)


async def command(app: LlamaTuiApp, arg: str) -> None:
    """`/inspect underline N|off` (`arg` is what follows "underline")."""
    word = arg.strip().removesuffix("%").strip().lower()
    if word in ("off", "0", "none"):
        value = 0.0
    else:
        try:
            value = float(word) / 100
        except ValueError:
            value = -1.0
        if not 0 < value <= 1:
            await app.chat.note(f"{USAGE} (N from 1 to 100).", variant="warning")
            return
    _THRESHOLD[app] = value
    apply_all(app)
    app.say(
        f"Tokens below {value * 100:g}% are underlined in the replies."
        if value
        else "Tokens are no longer underlined."
    )

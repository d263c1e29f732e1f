"""What the session browser shows of a search, and what opening a hit does.

`hit_rows` lays out the browser's rows: date, model and title (all untrusted, cleaned,
plain text), and for a search hit its matching line under them with the terms in bold.
`Opened` is what the browser closes with; `reveal_match` then scrolls the opened session to
the match, checked against the session as its journal has it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rich.cells import cell_len, set_cell_size
from rich.text import Text

from llama_tui.session.search import Hit, terms_of
from llama_tui.text import clean
from llama_tui.ui.widgets.status_bar import crop_cells

if TYPE_CHECKING:
    from llama_tui.ui.chat_screen import ChatScreen

MODEL_COLUMN = 18  # cells for the model name in a row; longer names end in "…"
# Below this many terminal columns the model column is left out: the title needs the room.
MODEL_COLUMN_MIN_WIDTH = 70


@dataclass(frozen=True)
class Opened:
    """What the browser was closed with: a session to open, and the search that found it
    (`query`, and the message the index matched, to scroll to)."""

    session_id: str
    query: str = ""
    message_id: str | None = None


def hit_rows(
    hits: list[Hit], query: str, current_id: str, with_model: bool, width: int
) -> list[tuple[str, Text]]:
    """(session id, row) for each hit; `width`: the terminal's."""
    model_width = min(
        MODEL_COLUMN,
        max((cell_len(clean(h.model or "?")) for h in hits if not h.error), default=1),
    )
    terms = terms_of(query)
    line_width = max(20, min(width, 100) - 16)
    rows = []
    for h in hits:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(h.modified))
        # A fixed-width mark column keeps the open session's row aligned with the others.
        mark = "* " if h.id == current_id else "  "
        if h.error:
            text = f"{mark}{when}  (unreadable: {clean(h.error)})"
        else:
            model = set_cell_size(crop_cells(clean(h.model or "?"), model_width), model_width)
            title = clean(h.title or h.first_prompt or "(empty)")
            text = f"{mark}{when}  {model}  {title}" if with_model else f"{mark}{when}  {title}"
        row = Text(text[:200])
        if h.line:
            line = Text("\n    " + crop_cells(clean(h.line), line_width), style="dim")
            line.highlight_words(terms, style="bold not dim", case_sensitive=False)
            row.append_text(line)
        rows.append((h.id, row))
    return rows


async def reveal_match(chat: ChatScreen, opened: Opened) -> None:
    """Once `opened` is the conversation shown: scroll to the message matching its search,
    as the conversation just read from its journal has it (`search.locate`), not as the
    index said."""
    from llama_tui.session.search import locate

    conv = chat.conversation
    if not opened.query or conv.id != opened.session_id:
        return  # nothing was searched, or the session did not open (that was said)
    match = locate(conv, opened.query, opened.message_id)
    if match is None:
        chat.host.say(f"This session no longer contains “{clean(opened.query)}”.", timeout=8)
        return
    if match.message_id is None:
        return  # its title, model or date matched: the session as it opens
    # A long session's older turns are mounted lazily: `reveal` mounts the match's turn.
    if await chat.transcript.reveal(match.message_id) is not None:
        return
    # Not on the path shown: an earlier version (a retried reply, an edited prompt).
    if any(m.id == match.message_id for m in conv.branches):
        await chat.branches.select(match.message_id)
        if await chat.transcript.reveal(match.message_id) is not None:
            chat.host.say(
                "The match is in another version of this conversation: shown now "
                "(Alt+Left / Alt+Right switch versions).",
                timeout=8,
            )
            return
    chat.host.say("The match could not be shown in this conversation.", timeout=8)

"""How the token inspector draws a reply: token by token, shaded by probability.

Pure functions from a `core.tokens.TokenLog` to Rich text, so the layout is testable and
one rule decides every token's look:

* the background is shaded by the token's probability (the model's own, `core.tokens`):
  none from 90% up, then darker and warmer steps down to below 2%;
* a token below `LOW` (20%) is also underlined, and below `VERY_LOW` (5%) bold as well, so
  the unsure places read without colour (a monochrome terminal, colour-blind users);
* the cursor's token is drawn in reverse video.

Whitespace stays visible: a line break is drawn as ``↵`` before the break, a tab as ``→``,
a token with no text (the end of the reply) as ``∎``. Token texts are model output and pass
through `text.clean` first.

The inspector wraps lines itself (`layout`), so it knows which line holds the cursor and
scrolls to it, at any width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rich.cells import cell_len
from rich.style import Style
from rich.text import Text

from llama_tui.core.tokens import TokenChoice, TokenLogprob
from llama_tui.text import clean

LOW = 0.20  # underlined below this probability
VERY_LOW = 0.05  # bold and underlined below this
# (lower bound of the probability, background) from the surest down; None: no shading.
SHADES: tuple[tuple[float, str | None], ...] = (
    (0.90, None),
    (0.60, "#2f3b4c"),
    (0.30, "#51461a"),
    (0.10, "#7a4a00"),
    (0.02, "#8c2f00"),
    (0.0, "#8b0000"),
)
END_MARK = "∎"
NEWLINE_MARK = "↵"
TAB_MARK = "→"


def token_style(prob: float, *, cursor: bool = False) -> Style:
    """The look of a token with probability `prob` (see the module docstring)."""
    bg = next((shade for low, shade in SHADES if prob >= low), SHADES[-1][1])
    return Style(
        bgcolor=bg,
        underline=prob < LOW,
        bold=prob < VERY_LOW,
        reverse=cursor,
    )


def shown(text: str) -> str:
    """A token's text as drawn: cleaned, tabs and an empty token made visible (line breaks
    stay; `layout` draws them)."""
    if not text:
        return END_MARK
    return clean(text).replace("\t", TAB_MARK)


def quoted(text: str) -> str:
    """A token's text for the side list: in quotes, line breaks and tabs as marks."""
    if not text:
        return END_MARK + " end"
    return '"' + clean(text).replace("\n", NEWLINE_MARK).replace("\t", TAB_MARK) + '"'


def percent(logprob: float) -> str:
    """``43.2%``, ``0.31%``, ``<0.01%`` for a logprob."""
    return percent_of(math.exp(logprob))


def percent_of(prob: float) -> str:
    """`percent` for a probability."""
    p = prob * 100
    if p >= 10:
        return f"{p:.1f}%"
    if p >= 0.01:
        return f"{p:.2f}%"
    return "<0.01%"


@dataclass(frozen=True)
class Piece:
    """A run of one token's text on one line."""

    token: int  # index into the reply's tokens
    text: str


Line = list[Piece]


def layout(tokens: list[TokenLogprob], width: int) -> list[Line]:
    """The reply's tokens as lines of at most `width` cells: a line break inside a token
    ends its line (after a ``↵`` mark), a token that does not fit goes to the next line,
    and one longer than a line is split."""
    width = max(width, 4)
    lines: list[Line] = [[]]
    used = 0
    for index, tok in enumerate(tokens):
        parts = shown(tok.text).split("\n")
        for n, part in enumerate(parts):
            last = n == len(parts) - 1
            seg = part if last else part + NEWLINE_MARK
            while seg:
                room = width - used
                size = cell_len(seg)
                if size <= room:
                    lines[-1].append(Piece(index, seg))
                    used += size
                    break
                if used and size <= width:
                    lines.append([])  # whole token to the next line
                    used = 0
                    continue
                cut = _fit(seg, room)
                lines[-1].append(Piece(index, seg[:cut]))
                seg = seg[cut:]
                lines.append([])
                used = 0
            if not last:
                lines.append([])
                used = 0
    return lines


def _fit(text: str, cells: int) -> int:
    """How many characters of `text` fit in `cells` (at least one)."""
    used = 0
    for i, ch in enumerate(text):
        used += cell_len(ch)
        if used > cells:
            return max(i, 1)
    return len(text)


def cursor_line(lines: list[Line], cursor: int) -> int:
    for i, line in enumerate(lines):
        if any(p.token == cursor for p in line):
            return i
    return 0


def render(
    tokens: list[TokenLogprob], lines: list[Line], cursor: int, top: int, height: int
) -> Text:
    """Lines `top` .. `top + height` of the layout, styled."""
    out = Text(no_wrap=True, overflow="crop", end="")
    for row, line in enumerate(lines[top : top + height]):
        if row:
            out.append("\n")
        for piece in line:
            tok = tokens[piece.token]
            out.append(piece.text, token_style(tok.prob, cursor=piece.token == cursor))
    return out


def scroll_top(lines: list[Line], cursor: int, top: int, height: int) -> int:
    """The first line to show so that the cursor's line is visible (moving as little as
    possible from `top`)."""
    line = cursor_line(lines, cursor)
    if line < top:
        return line
    if line >= top + height:
        return line - height + 1
    return max(0, min(top, max(0, len(lines) - height)))


def alternative_label(choice: TokenChoice, chosen: bool) -> str:
    """One row of the side list: ``• 43.2% " Paris"`` (• marks the token the reply has)."""
    return f"{'•' if chosen else ' '} {percent(choice.logprob):>7} {quoted(choice.text)}"

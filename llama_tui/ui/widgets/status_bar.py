"""The status bar: model, device, dtype, memory, state, context used / max, speed.

The app pushes facts into it on state changes (load progress, reply finished, a memory or
context reading); it repaints at most on a timer. Nothing here runs per token: during a reply
the app only updates the elapsed time from its timer.

All values are untrusted strings (model names, error kinds) rendered as plain `Content`,
never markup. Widths are terminal cells (`rich.cells.cell_len`), not characters: a CJK or
emoji model name takes two cells a character.

The bar is one widget that draws its pieces itself (their colours are component classes in
app.tcss), not a row of five: the first frame styles, lays out and draws the bar once rather
than six widgets (~3 ms of the first paint, benchmarks/startup_time.py).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar, Literal

from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from rich.style import Style as RichStyle
from textual.content import Content
from textual.strip import Strip
from textual.visual import Visual
from textual.widget import Widget

from llama_tui.text import clean, redact

State = Literal["starting", "loading", "ready", "generating", "stopping", "stopped", "error"]


def human_bytes(n: int) -> str:
    """680 MiB -> '680M', 1.5 GiB -> '1.5G': binary units, compact for a status bar."""
    value = float(n)
    for unit in ("B", "K", "M", "G", "T"):
        if value < 1024 or unit == "T":
            return f"{value:.0f}{unit}" if unit in ("B", "K", "M") else f"{value:.1f}{unit}"
        value /= 1024
    return f"{n}B"  # pragma: no cover (loop always returns)


_DTYPES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


def short_dtype(dtype: str) -> str:
    """float32 -> fp32: the status bar has 80 columns for everything."""
    return _DTYPES.get(dtype.removeprefix("torch."), dtype)


@dataclass(frozen=True)
class StatusFacts:
    """Everything the status bar shows, swapped whole."""

    state: State = "starting"
    detail: str = ""  # e.g. load stage, "3.2 s", error kind
    model: str = ""
    device: str = ""
    dtype: str = ""
    memory: str = ""
    context_used: int | None = None
    context_max: int | None = None
    context_pending: int = 0  # tokens of files attached to the next message (`/read`)
    ttft_s: float | None = None
    tokens_per_s: float | None = None
    assisted: str = ""  # "prompt lookup 2.4 tok/step": the last reply's assisted decoding
    optimising: bool = False  # the engine compiles a faster decode path in the background


def crop_cells(text: str, width: int) -> str:
    """`text` cut to at most `width` terminal cells, ending in "…" when cut."""
    if cell_len(text) <= width:
        return text
    if width <= 1:
        return "…"[:width]
    # set_cell_size pads with a space where it has to split a wide character.
    return set_cell_size(text, width - 1).rstrip() + "…"


# The pieces, in the order shown, and the component class each one is drawn with.
PIECES = ("state", "model", "memory", "context", "speed")
_STYLE = {"state": "status-bar--state", "memory": "status-bar--muted",
          "context": "status-bar--muted", "speed": "status-bar--muted"}


class StatusBar(Widget):
    """One line of facts; pieces are left out on narrow terminals (`_fit`)."""

    # The state (bold, coloured by the bar's state class) and the quieter facts.
    COMPONENT_CLASSES: ClassVar[set[str]] = {"status-bar--state", "status-bar--muted"}

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.facts = StatusFacts()
        self._texts: dict[str, str] = {}
        self._where = ""  # " · cpu bf16": the part of the model text a narrow bar keeps
        self._shown: list[tuple[str, str, int]] = []  # (piece, text, its cells), fitted

    def on_mount(self) -> None:
        self._render_facts()

    def update_facts(self, **changes: Any) -> None:
        """Replace some facts and repaint only if something changed."""
        new = replace(self.facts, **changes)
        if new != self.facts:
            self.facts = new
            self._render_facts()

    def on_resize(self) -> None:
        self._fit()

    def _render_facts(self) -> None:
        f = self.facts
        if f.state == "loading" and f.detail:
            label = f.detail  # the load stage says it all: "Converting demo.gguf… 35%"
        else:
            label = f.state + (f" {f.detail}" if f.detail else "")
        if f.optimising:
            label += " · optimising"
        where = " ".join(x for x in (f.device, short_dtype(f.dtype)) if x)
        ctx = ""
        if f.context_max:
            used = "?" if f.context_used is None else str(f.context_used)
            pending = f"+{f.context_pending}" if f.context_pending else ""
            ctx = f"ctx {used}{pending}/{f.context_max}"
        speed = []
        if f.ttft_s is not None:
            speed.append(f"ttft {f.ttft_s:.2f}s")
        if f.tokens_per_s is not None:
            speed.append(f"{f.tokens_per_s:.1f} tok/s")
        if f.assisted:
            speed.append(f.assisted)
        # Kept apart so that a narrow terminal shortens the name, not the device and dtype.
        self._where = f" · {clean(where)}" if where else ""
        self._texts = {
            # The model id and load detail echo what the user typed: a token-shaped id
            # must not be shown back (redact), nor may control characters (clean).
            "state": redact(clean(label)),
            "model": redact(clean(f.model)) + (f" · {clean(where)}" if where else ""),
            "memory": clean(f.memory),
            "context": ctx,
            "speed": " · ".join(speed),
        }
        for s in ("starting", "loading", "ready", "generating", "stopping", "stopped", "error"):
            self.set_class(s == f.state, f"-{s}")
        self._fit()

    def _fit(self) -> None:
        """Give the model name what is left; drop memory, then speed, when it gets tight.

        Done by hand because the pieces are plain text of known width: the state, context
        and speed matter most on a small terminal. Each piece takes its text's width plus
        the space before it; the model piece takes the room left (at least 12 cells).
        """
        width = self.size.width
        if not self._texts or not width:
            return
        texts = dict(self._texts)
        shown = {k: bool(v) for k, v in texts.items()}
        min_model = 12

        def need() -> int:
            return sum(cell_len(texts[k]) + 1 for k in texts if k != "model" and shown[k])

        for drop in ("memory", "speed"):
            if width - need() < min_model:
                shown[drop] = False
        over = need() + min_model - width
        if over > 0:  # a long load stage: cut it rather than push the rest off the line
            label = texts["state"]
            texts["state"] = crop_cells(label, max(8, cell_len(label) - over))
        text, where = texts["model"], self._where
        room = max(min_model, min(cell_len(text) + 1, width - need()))
        if cell_len(text) + 1 > room:
            if where and text.endswith(where) and room - 1 - cell_len(where) >= 6:
                # Shorten the model name and keep " · cpu bf16": the device matters more.
                name = text[: len(text) - len(where)]
                text = crop_cells(name, room - 1 - cell_len(where)) + where
            else:
                text = crop_cells(text, room - 1)  # the space before it takes one cell
        texts["model"] = text
        self._shown = [(k, texts[k], room - 1 if k == "model" else cell_len(texts[k]))
                       for k in PIECES if shown[k] or k == "model"]
        self.refresh()

    def render_line(self, y: int) -> Strip:
        # Drawn as the row of Static widgets it replaced drew itself, segment for segment:
        # a background cell before each piece, the piece's text rendered as a Static renders
        # it, then background to the piece's width and to the end of the line.
        blank = RichStyle(bgcolor=self.visual_style.rich_style.bgcolor)
        strips: list[Strip] = []
        if y == 0:
            for piece, text, cells in self._shown:
                component = _STYLE.get(piece)
                style = self.get_visual_style(component) if component else self.visual_style
                (line,) = Visual.to_strips(self, Content(text), cells, 1, style)
                strips += [Strip([Segment(" ", blank)]), line.extend_cell_length(cells, blank)]
        return Strip.join(strips).crop_extend(0, self.size.width, blank)

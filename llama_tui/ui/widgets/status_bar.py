"""The status bar: model, device, dtype, memory, state, context used / max, speed.

The app pushes facts into it on state changes (load progress, reply finished, a memory or
context reading); it repaints at most on a timer. Nothing here runs per token: during a reply
the app only updates the elapsed time from its timer.

All values are untrusted strings (model names, error kinds) rendered as plain `Content`,
never markup. Widths are terminal cells (`rich.cells.cell_len`), not characters: a CJK or
emoji model name takes two cells a character.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from typing import Any, Literal

from rich.cells import cell_len, set_cell_size
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.css.query import NoMatches
from textual.widgets import Static

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


class StatusBar(Horizontal):
    """One line of facts; pieces hide themselves on narrow terminals (CSS, `-narrow`)."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.facts = StatusFacts()
        self._texts: dict[str, str] = {}
        self._where = ""  # " · cpu bf16": the part of the model text a narrow bar keeps

    def compose(self) -> ComposeResult:
        yield Static("", markup=False, id="sb-state")
        yield Static("", markup=False, id="sb-model")
        yield Static("", markup=False, id="sb-memory")
        yield Static("", markup=False, id="sb-context")
        yield Static("", markup=False, id="sb-speed")

    def on_mount(self) -> None:
        self._render_facts()

    def update_facts(self, **changes: Any) -> None:
        """Replace some facts and repaint only if something changed."""
        new = replace(self.facts, **changes)
        if new != self.facts:
            self.facts = new
            # A reading can arrive from a worker while the app shuts down and the pieces
            # are already gone: nothing to show then.
            with contextlib.suppress(NoMatches):
                self._render_facts()

    def on_resize(self) -> None:
        with contextlib.suppress(NoMatches):
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
            "sb-state": redact(clean(label)),
            "sb-model": redact(clean(f.model)) + (f" · {clean(where)}" if where else ""),
            "sb-memory": clean(f.memory),
            "sb-context": ctx,
            "sb-speed": " · ".join(speed),
        }
        for key, text in self._texts.items():
            self.query_one(f"#{key}", Static).update(text)
        state = self.query_one("#sb-state", Static)
        for s in ("starting", "loading", "ready", "generating", "stopping", "stopped", "error"):
            state.set_class(s == f.state, f"-{s}")
        self._fit()

    def _fit(self) -> None:
        """Give the model name what is left; drop memory, then speed, when it gets tight.

        Done by hand because the pieces are plain text of known width: the state, context
        and speed matter most on a small terminal.
        """
        width = self.size.width
        if not self._texts or not width:
            return
        texts = dict(self._texts)
        shown = {k: bool(v) for k, v in texts.items()}
        min_model = 12

        def need() -> int:
            return sum(cell_len(texts[k]) + 1 for k in texts if k != "sb-model" and shown[k])

        for drop in ("sb-memory", "sb-speed"):
            if width - need() < min_model:
                shown[drop] = False
        over = need() + min_model - width
        if over > 0:  # a long load stage: cut it rather than push the rest off the line
            label = texts["sb-state"]
            texts["sb-state"] = crop_cells(label, max(8, cell_len(label) - over))
        self.query_one("#sb-state", Static).update(texts["sb-state"])
        for key, visible in shown.items():
            self.query_one(f"#{key}", Static).display = visible or key == "sb-model"
        model = self.query_one("#sb-model", Static)
        text, where = texts["sb-model"], self._where
        room = max(min_model, min(cell_len(text) + 1, width - need()))
        model.styles.width = room
        if cell_len(text) + 1 > room:
            if where and text.endswith(where) and room - 1 - cell_len(where) >= 6:
                # Shorten the model name and keep " · cpu bf16": the device matters more.
                name = text[: len(text) - len(where)]
                text = crop_cells(name, room - 1 - cell_len(where)) + where
            else:
                text = crop_cells(text, room - 1)  # the piece's left padding takes one cell
        model.update(text)

"""The status bar: model, device, dtype, memory, state, context used / max, speed.

The app pushes facts into it on state changes (load progress, reply finished, a memory or
context reading); it repaints at most on a timer. Nothing here runs per token: during a reply
the app only updates the elapsed time from its timer.

All values are untrusted strings (model names, error kinds) rendered as plain `Content`,
never markup.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Static

from llama_tui.text import clean

State = Literal["starting", "loading", "ready", "generating", "stopping", "stopped", "error"]


def human_bytes(n: int) -> str:
    """1536 -> '1.5 KiB'; compact for a status bar."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit in ("B", "KiB", "MiB") else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover (loop always returns)


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
    ttft_s: float | None = None
    tokens_per_s: float | None = None


class StatusBar(Horizontal):
    """One line of facts; pieces hide themselves on narrow terminals (CSS, `-narrow`)."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.facts = StatusFacts()

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
            self._render_facts()

    def _render_facts(self) -> None:
        f = self.facts
        state = self.query_one("#sb-state", Static)
        label = f.state + (f" {f.detail}" if f.detail else "")
        state.update(clean(label))
        for s in ("starting", "loading", "ready", "generating", "stopping", "stopped", "error"):
            state.set_class(s == f.state, f"-{s}")
        where = " ".join(x for x in (f.device, short_dtype(f.dtype)) if x)
        model = clean(f.model) + (f" · {clean(where)}" if where else "")
        self.query_one("#sb-model", Static).update(model)
        self.query_one("#sb-memory", Static).update(clean(f.memory))
        ctx = ""
        if f.context_max:
            used = "?" if f.context_used is None else str(f.context_used)
            ctx = f"ctx {used}/{f.context_max}"
        self.query_one("#sb-context", Static).update(ctx)
        speed = []
        if f.ttft_s is not None:
            speed.append(f"ttft {f.ttft_s:.2f}s")
        if f.tokens_per_s is not None:
            speed.append(f"{f.tokens_per_s:.1f} tok/s")
        self.query_one("#sb-speed", Static).update(" · ".join(speed))

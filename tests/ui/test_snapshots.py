"""SVG snapshots of the quiet states at 80x24 (fake backend, fixed model info, no clock).

Baselines live in `__snapshots__/`; regenerate with `pytest tests/ui/test_snapshots.py
--snapshot-update` after an intended visual change, and review the SVGs before committing.
"""

from __future__ import annotations

from typing import Any

from textual.pilot import Pilot

from llama_tui.core.errors import ModelNotCachedError
from tests.ui.fakes import FakeBackend, FakeFactory
from tests.ui.helpers import make_app, ready, reply_done, send

SIZE = (80, 24)


async def steady(pilot: Pilot[int]) -> None:
    """No blinking cursors: a snapshot must not depend on when it is taken."""
    for widget in pilot.app.query("TextArea, Input"):
        widget.cursor_blink = False  # type: ignore[attr-defined]
    await pilot.pause()
CODE_REPLY = [
    "Here is a function that doubles a number:\n\n",
    "```python\ndef double(x: int) -> int:\n    return 2 * x\n```\n\n",
    "Call it as `double(21)` to get **42**.",
]


def test_empty_chat(snap_compare: Any) -> None:
    async def run_before(pilot: Pilot[int]) -> None:
        await ready(pilot)
        await steady(pilot)

    assert snap_compare(make_app(FakeBackend()), run_before=run_before, terminal_size=SIZE)


def test_finished_conversation_with_code_block(snap_compare: Any) -> None:
    async def run_before(pilot: Pilot[int]) -> None:
        await ready(pilot)
        await steady(pilot)
        await send(pilot, "Write a Python function that doubles a number.")
        await reply_done(pilot)
        await steady(pilot)

    app = make_app(FakeBackend(replies=[CODE_REPLY]))
    assert snap_compare(app, run_before=run_before, terminal_size=SIZE)


def test_settings_panel_with_invalid_value(snap_compare: Any) -> None:
    async def run_before(pilot: Pilot[int]) -> None:
        await ready(pilot)
        await steady(pilot)
        await pilot.press("f2")
        await pilot.press(*"1.5")  # temperature is fine...
        app: Any = pilot.app
        app.chat.panel.set_field("top_p", "1.5")  # ...top_p is not
        app.chat.panel.set_field("top_k", "20")  # an override
        await steady(pilot)

    assert snap_compare(make_app(FakeBackend()), run_before=run_before, terminal_size=SIZE)


def test_load_error(snap_compare: Any) -> None:
    error = ModelNotCachedError(
        "meta-llama/Llama-3.2-1B-Instruct is not in the local cache and HF_HUB_OFFLINE=1.",
        "Run once with network access to download it, or pick a cached model.",
    )
    factory = FakeFactory(**{"meta-llama/Llama-3.2-1B-Instruct": FakeBackend(load_error=error)})

    async def run_before(pilot: Pilot[int]) -> None:
        await ready(pilot)
        await steady(pilot)

    app = make_app(factory=factory, spec="meta-llama/Llama-3.2-1B-Instruct")
    assert snap_compare(app, run_before=run_before, terminal_size=SIZE)

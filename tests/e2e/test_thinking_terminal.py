"""A thinking model through a real terminal: the thought folded on screen, F6 through tmux,
and the view remembered by the next launch.

The model is the tiny random Llama with think tokens and DeepSeek-R1's template shape
(`tests/engine/thinking_models.py`): its generation prompt opens the thought, so the reply
the real local engine writes is a thought. llama-tui runs in default-config tmux with a real
client on a pty (`terminal_rig`), so F6 arrives as the bytes a terminal sends.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from llama_tui.session.journal import parse_journal
from tests.e2e.helpers import E2E_MARKS, LOAD_TIMEOUT, REPLY_TIMEOUT, app_command, e2e_home, ready
from tests.e2e.terminal_rig import TerminalRig
from tests.engine.thinking_models import R1_TEMPLATE, build_thinking_model

pytestmark = E2E_MARKS
# The left bar the expanded thought is drawn with (the random model's text itself may be
# anything: control characters are cleaned out of it on screen).
THOUGHT_BAR = "│ ▌"


@pytest.fixture(scope="module")
def thinker_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_thinking_model(tiny_model_dir, tmp_path_factory.mktemp("r1ish"), R1_TEMPLATE)


@contextlib.contextmanager
def launch(home: Path, model: Path) -> Iterator[TerminalRig]:
    args = (
        "--model",
        str(model),
        "--device",
        "cpu",
        "--dtype",
        "float32",
        "--greedy",
        "--max-new-tokens",
        "8",
    )
    rig = TerminalRig(app_command(home, *args), width=80, height=24)
    try:
        rig.start()
        rig.wait("the model to load", ready, LOAD_TIMEOUT)
        yield rig
    finally:
        rig.close()


def test_thought_folds_f6_shows_it_and_the_next_launch_remembers(
    tmp_path: Path, thinker_dir: Path
) -> None:
    home = e2e_home(tmp_path)
    with launch(home, thinker_dir) as rig:
        rig.type("Hi")
        rig.key("enter")
        screen = rig.wait_for("thought for 8 tokens", REPLY_TIMEOUT)
        rig.wait_for(ready, 30)
        assert "<think>" not in screen
        journals = list((home / "data" / "sessions").glob("*.jsonl"))
        conv, _ = parse_journal(journals[0].read_bytes(), journals[0])
        reply = conv.messages[-1]
        assert reply.thinking and reply.content == ""
        assert THOUGHT_BAR not in screen  # folded: the summary line only
        rig.key("f6")
        rig.wait_for("Thinking shown in full", 30)
        rig.wait_for(THOUGHT_BAR, 30)  # the thought's own text, with its bar on the left
        rig.key("ctrl+q")
        rig.until("the app to exit", rig.pane_dead, 30)
    fields = json.loads((home / "config" / "remembered.json").read_text())["fields"]
    assert fields["thinking"] == {"value": "show"}
    with launch(home, thinker_dir) as rig:
        rig.type("/think")
        rig.key("enter")
        rig.wait_for("Thinking is shown in full", 30)

"""`/read` end to end: the installed llama-tui on the demo model in a real tmux at 80x24.

Attach a file, see it wait above the input with its cost in the context meter, ask about
it, `/save x.json`, and the file's text is in the saved user message (and its chip on the
screen).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.e2e.helpers import E2E_MARKS, REPLY_TIMEOUT, ready, status_line
from tests.e2e.terminal_rig import running_app
from tests.e2e.test_real_terminal_copy_save import journal

pytestmark = E2E_MARKS

DEMO = ("--model", "demo", "--max-new-tokens", "16", "--seed", "1", "--greedy")
NOTES = "The secret word is PINEAPPLE.\nThe meeting is on Thursday.\n"


def test_read_ask_save_json(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text(NOTES)
    with running_app(tmp_path, *DEMO) as (rig, home):
        rig.type(f"/read {notes}")
        rig.key("enter")
        screen = rig.wait_for("Attached to your next message", 30)
        # The cost shows in the context meter before anything is sent: ctx 0+N/8192.
        assert re.search(r"ctx \d+\+\d+/\d+", status_line(screen)), status_line(screen)

        rig.type("What is the secret word?")
        rig.key("enter")
        rig.until(
            "the reply",
            lambda: (
                len(journal(home)) >= 2
                and not journal(home)[-1].interrupted
                and journal(home)[-1].status != "streaming"
            ),
            REPLY_TIMEOUT,
        )
        screen = rig.wait_for(ready, 30)
        assert "notes.txt · 58 B" in screen  # the chip in the user's turn
        assert "Attached to your next message" not in screen
        assert not re.search(r"ctx \d+\+", status_line(screen))  # sent: nothing pending

        rig.type("/save x.json")
        rig.key("enter")
        saved = home / "saved" / "x.json"
        rig.until("the saved file", saved.exists, 30)
        data = json.loads(saved.read_text(encoding="utf-8"))
        conv = data.get("conversation", data)
        user = conv["messages"][0]
        assert user["role"] == "user" and user["content"] == "What is the secret word?"
        [attached] = user["attachments"]
        assert attached["content"] == NOTES and attached["name"].endswith("notes.txt")
        assert attached["tokens"] > 0 and attached["estimated"] is False
        # The model read the file: its prompt is longer than the file's block alone.
        assert conv["messages"][1]["stats"]["prompt_tokens"] > attached["tokens"]

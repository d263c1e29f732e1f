"""Branches through a real terminal on the demo model, across two launches.

Ask; `/set temperature 1.0`; retry twice (Ctrl+R); the reply's header reads `3/3`;
`/branch prev` shows `2/3` and that version's text; Alt+Left / Alt+Right (the bytes an
xterm sends, through default-config tmux) move between versions; `/save x.json`; a second
launch resumes the file and the same branch is active.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from llama_tui.session import tree
from llama_tui.session.export import from_json
from llama_tui.session.journal import parse_journal
from llama_tui.session.transcript import Conversation
from tests.e2e.helpers import E2E_MARKS, REPLY_TIMEOUT, e2e_home, ready
from tests.e2e.test_across_launches import command, launch, quit_app

pytestmark = E2E_MARKS


def latest(home: Path) -> Conversation:
    journals = sorted((home / "data" / "sessions").glob("*.jsonl"),
                      key=lambda p: p.stat().st_mtime)
    return parse_journal(journals[-1].read_bytes(), journals[-1])[0]


def replies_done(home: Path, versions: int) -> bool:
    """The journal holds `versions` finished versions of the last reply."""
    with contextlib.suppress(IndexError, OSError):
        conv = latest(home)
        last = conv.messages[-1]
        group = tree.siblings(conv, last)
        return (last.role == "assistant" and len(group) == versions
                and all(m.stats is not None for m in group))
    return False


def first_words(text: str) -> str:
    """A piece of a reply that fits on one screen line as it is shown."""
    line = next(ln for ln in text.splitlines() if ln.strip())
    return " ".join(line.split()[:3])


def test_retry_switch_save_and_resume_keeps_the_branch(tmp_path: Path) -> None:
    home = e2e_home(tmp_path)
    saved = tmp_path / "x.json"
    with launch(home, "--max-new-tokens", "24") as rig:
        command(rig, "/set temperature 1.0", "Applies from the next reply")
        rig.type("Name a fruit and say why you like it.")
        rig.key("enter")
        rig.until("the first reply", lambda: replies_done(home, 1), REPLY_TIMEOUT)
        rig.wait_for(ready, 30)
        for n in (2, 3):
            rig.key("ctrl+r")
            rig.until(f"version {n}", lambda n=n: replies_done(home, n), REPLY_TIMEOUT)
            rig.wait_for(ready, 30)
        rig.wait_for("assistant · 3/3", 30)
        conv = latest(home)
        versions = tree.siblings(conv, conv.messages[-1])
        command(rig, "/branch prev", "assistant · 2/3")
        rig.wait_for(first_words(versions[1].content), 30)
        rig.key("alt+left")  # ESC [1;3D through tmux
        rig.wait_for("assistant · 1/3", 30)
        rig.key("alt+right")
        rig.wait_for("assistant · 2/3", 30)
        command(rig, f"/save {saved}", "Saved")
        quit_app(rig)
    doc = json.loads(saved.read_text(encoding="utf-8"))
    assert len(doc["conversation"]["branches"]) == 2
    exported = from_json(saved.read_text(encoding="utf-8"))
    assert exported.messages[-1].id == versions[1].id
    with launch(home, "--resume", str(saved)) as rig:
        screen = rig.wait_for("assistant · 2/3", 30)
        assert first_words(versions[1].content) in screen
        command(rig, "/branch next", "assistant · 3/3")
        quit_app(rig)

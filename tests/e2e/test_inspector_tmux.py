"""The token inspector end to end: the installed llama-tui on the demo model in a real tmux at
80x24. Ask, `/inspect`, move to a token, pick another alternative, and the reply continues
from it as a new version (`2/2` in its header) while the original stays in the journal."""

from __future__ import annotations

from pathlib import Path

from llama_tui.core.tokens import load_compact
from llama_tui.session.journal import load_journal
from tests.e2e.helpers import E2E_MARKS, REPLY_TIMEOUT, ready
from tests.e2e.terminal_rig import running_app
from tests.e2e.test_real_terminal_copy_save import chat, journal

pytestmark = E2E_MARKS

DEMO = ("--model", "demo", "--max-new-tokens", "16", "--seed", "1", "--greedy")


def _journal_file(home: Path) -> Path:
    files = sorted((home / "data" / "sessions").glob("*.jsonl"), key=lambda p: p.stat().st_mtime)
    return files[-1]


def test_inspect_pick_an_alternative_new_branch(tmp_path: Path) -> None:
    with running_app(tmp_path, *DEMO) as (rig, home):
        original_text = chat(rig, home, "What is the capital of France?")
        screen = rig.wait_for("p mean", 30)  # the footer's token probabilities
        original = journal(home)[-1]
        log = load_compact(original.tokens)
        assert log is not None and len(log.tokens) >= 3
        assert all(t.top[0].id == t.id for t in log.tokens)  # greedy: always the top one

        rig.type("/inspect")
        rig.key("enter")
        screen = rig.wait_for("Tokens of reply 1", 30)
        assert "token 1/" in screen and "%" in screen
        rig.key("right")
        rig.key("right")
        screen = rig.wait_for("token 3/", 10)
        rig.key("down")
        rig.key("enter")
        forced = log.tokens[0].text + log.tokens[1].text + log.tokens[2].top[1].text

        def forked() -> bool:
            msgs = journal(home)
            return (
                len(msgs) >= 2
                and msgs[-1].id != original.id
                and msgs[-1].status != "streaming"
                and not msgs[-1].interrupted
                and len(msgs[-1].content) > len(forced)
            )

        rig.until("the new version's reply", forked, REPLY_TIMEOUT)
        screen = rig.wait_for(lambda s: "2/2" in s and ready(s), 30)
        new = journal(home)[-1]
        assert new.content.startswith(forced), (new.content, forced)
        conv = load_journal(_journal_file(home))
        kept = [m for m in conv.branches if m.id == original.id]
        assert kept and kept[0].content == original_text  # the original is unchanged

        rig.key("f8")  # the key opens the inspector on the new reply
        rig.wait_for("Tokens of reply 1", 30)
        rig.key("escape")
        rig.wait_for(lambda s: "Tokens of reply" not in s, 10)

"""`llama-tui --sessions [QUERY]`: the saved sessions, or the matches, headless."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from llama_tui import locations
from llama_tui.cli.main import main
from llama_tui.session.recorder import SessionRecorder
from llama_tui.session.transcript import Conversation

TOKEN = "hf_" + "A1b2C3d4" * 5


def record(prompt: str, reply: str, model: str = "") -> Conversation:
    conv = Conversation()
    rec = SessionRecorder(conv)
    if model:
        rec.model_changed({"name": model})
    rec.user_message(conv.add("user", prompt))
    rec.assistant_finished(conv.add("assistant", reply))
    rec.close()
    return conv


def test_lists_every_session_newest_first(capsys: pytest.CaptureFixture[str]) -> None:
    old = record("Tell me about owls", "Owls hunt at night.", model="SmolLM2-135M-Instruct")
    new = record("What is a kiwi?", "A bird.")
    assert main(["--sessions"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in out] == [new.id, old.id]
    _sid, date, model, title = out[1].split("\t")
    assert (model, title) == ("SmolLM2-135M-Instruct", "Tell me about owls")
    assert len(date) == len("2026-11-29 20:23")


def test_a_query_prints_the_matching_line(capsys: pytest.CaptureFixture[str]) -> None:
    owls = record("Tell me about owls", "Owls hunt at NIGHT.\nThey fly silently.")
    record("What is a kiwi?", "A bird.")
    assert main(["--sessions", "night"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1
    assert out[0].split("\t")[0] == owls.id
    assert out[0].split("\t")[-1] == "Owls hunt at NIGHT."


def test_no_match_is_exit_1_with_the_reason(capsys: pytest.CaptureFixture[str]) -> None:
    record("Tell me about owls", "ok")
    assert main(["--sessions", "zebra"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "no session matches 'zebra'" in captured.err and "--sessions" in captured.err


def test_no_sessions_at_all_is_an_empty_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--sessions"]) == 0
    assert capsys.readouterr().out == ""


def test_hostile_text_is_printed_clean_on_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    record(f"owl\tcolumns\x1b]52;c;SGk=\x07 \x1b[2J {TOKEN}", "ok", model="m\x1b[31mx\tm")
    bad = locations.sessions_dir() / "20200101-000000-bad.jsonl"
    bad.write_bytes(b"\xff\x00garbage\n")
    assert main(["--sessions", "owl"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and TOKEN not in out
    (line,) = out.splitlines()
    assert len(line.split("\t")) == 5  # the tab inside the text did not add a column
    assert main(["--sessions"]) == 0
    listed = capsys.readouterr().out
    assert "20200101-000000-bad\t" in listed and "(unreadable:" in listed


def test_installed_command_and_a_closed_pipe(tmp_path: Path) -> None:
    for i in range(50):
        record(f"question {i} about owls", "ok")
    script = Path(sys.executable).parent / "llama-tui"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "llama_tui"]
    done = subprocess.run(
        [*cmd, "--sessions", "owls"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0 and len(done.stdout.splitlines()) == 50, done.stderr
    # `| head -1`: the reader goes away early; no traceback.
    shell = subprocess.run(
        f"{' '.join(cmd)} --sessions owls | head -1",
        shell=True,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert len(shell.stdout.splitlines()) == 1 and "Traceback" not in shell.stderr

"""Headless ``--file``: the real `python -m llama_tui --prompt ... --file PATH` on the tiny
model, in a subprocess like a user's shell (isolated user directories from conftest)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

NOTES = "The meeting moved to Thursday.\n"


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("HF_TOKEN", None)
    return subprocess.run(
        [sys.executable, "-m", "llama_tui", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        cwd=cwd,
    )


def test_file_is_sent_journaled_and_saved(tiny_model_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text(NOTES)
    (tmp_path / "b.md").write_text("# B\n")
    r = _run(
        "--model",
        str(tiny_model_dir),
        "--greedy",
        "--max-new-tokens",
        "3",
        "--file",
        "notes.txt",
        "--file",
        "*.md",
        "--prompt",
        "When?",
        "--save",
        "out.json",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() and r.stderr == ""
    saved = json.loads((tmp_path / "out.json").read_text())
    conv = saved.get("conversation", saved)
    user = conv["messages"][0]
    assert user["content"] == "When?"  # the typed text; the files beside it
    assert [(a["name"], a["content"]) for a in user["attachments"]] == [
        ("notes.txt", NOTES),
        ("b.md", "# B\n"),
    ]
    tokens = user["attachments"][0]["tokens"]
    assert tokens > 0 and user["attachments"][0]["estimated"] is False  # the model's tokenizer
    # The model got the files: the prompt it read is longer than the first file alone.
    assert conv["messages"][1]["stats"]["prompt_tokens"] > tokens

    from llama_tui.session.store import latest_session_id, load_conversation

    journaled = load_conversation(latest_session_id() or "")
    assert journaled.messages[0].attachments[0].content == NOTES


def test_refused_file_fails_before_the_model_loads(tmp_path: Path) -> None:
    (tmp_path / "blob.bin").write_bytes(b"\x00\x01")
    # A model that does not exist: the file is refused first, so this is never reached.
    r = _run(
        "--model", str(tmp_path / "no-model"), "--file", "blob.bin", "--prompt", "hi", cwd=tmp_path
    )
    assert r.returncode == 1 and r.stdout == ""
    assert "blob.bin looks binary" in r.stderr and "Attach text files only" in r.stderr
    r = _run(
        "--model",
        str(tmp_path / "no-model"),
        "--file",
        "gone.txt",
        "--prompt",
        "hi",
        "--json",
        cwd=tmp_path,
    )
    assert r.returncode == 1
    error = json.loads(r.stdout)["error"]
    assert error["kind"] == "AttachmentError" and "gone.txt does not exist" in error["cause"]


def test_file_needs_a_prompt(tmp_path: Path) -> None:
    r = _run("--file", "x.txt", cwd=tmp_path)
    assert r.returncode == 2 and "--file needs --prompt" in r.stderr


def test_file_that_cannot_fit_the_context(tiny_model_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "long.txt").write_text("word " * 400)  # the tiny model's context is 256
    r = _run(
        "--model",
        str(tiny_model_dir),
        "--max-new-tokens",
        "8",
        "--file",
        "long.txt",
        "--prompt",
        "Summarise.",
        cwd=tmp_path,
    )
    assert r.returncode == 1 and r.stdout == ""
    assert "long.txt would take" in r.stderr and "context holds 256" in r.stderr

"""Headless mode end to end: the real `python -m llama_tui --prompt` on the tiny model.

Runs in a subprocess like a user's shell (stdout and stderr are pipes, not terminals), with
the isolated user directories from conftest and HF_HUB_OFFLINE=1.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TOKEN = "hf_" + "Zq9" * 12
NOISE = ("%|", "it/s]", "Loading", "Warning", "warn", "[transformers]", "Traceback")


def _run(
    *args: str, stdin: str | None = None, timeout: int = 180
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("HF_TOKEN", None)
    return subprocess.run(
        [sys.executable, "-m", "llama_tui", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        input=stdin,
        env=env,
    )


def _assert_quiet(stderr: str) -> None:
    for noise in NOISE:
        assert noise not in stderr, stderr


def test_tiny_model_reply(tiny_model_dir: Path) -> None:
    r = _run("--model", str(tiny_model_dir), "--greedy", "--max-new-tokens", "5", "--prompt", "hi")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() and r.stdout.endswith("\n")
    assert not any(ord(c) < 32 and c not in "\n\t" for c in r.stdout)
    _assert_quiet(r.stderr)
    assert r.stderr == ""


def test_tiny_model_is_deterministic_and_reads_stdin(tiny_model_dir: Path) -> None:
    a = _run(
        "--model",
        str(tiny_model_dir),
        "--greedy",
        "--max-new-tokens",
        "6",
        "--prompt",
        "Once upon a time",
    )
    b = _run(
        "--model",
        str(tiny_model_dir),
        "--greedy",
        "--max-new-tokens",
        "6",
        "--prompt",
        "-",
        stdin="Once upon a time",
    )
    assert a.returncode == b.returncode == 0, a.stderr + b.stderr
    assert a.stdout == b.stdout


def test_raw_on_base_model(tiny_base_model_dir: Path) -> None:
    r = _run(
        "--model",
        str(tiny_base_model_dir),
        "--raw",
        "--greedy",
        "--max-new-tokens",
        "8",
        "--prompt",
        "Once upon a time",
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()
    _assert_quiet(r.stderr)


def test_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    r = _run("--model", str(missing), "--prompt", "hi")
    assert r.returncode == 1
    assert r.stdout == ""
    assert str(missing) in r.stderr
    assert "Traceback" not in r.stderr


def test_token_shaped_model_id_is_refused_and_not_echoed() -> None:
    r = _run("--model", TOKEN, "--prompt", "hi", timeout=60)
    assert r.returncode == 1
    assert r.stdout == ""
    assert TOKEN not in r.stderr and TOKEN[:12] not in r.stderr
    assert "token" in r.stderr.lower()


def test_bad_flag_is_usage_error() -> None:
    r = _run("--top-p", "1.5", "--prompt", "hi", timeout=60)
    assert r.returncode == 2
    assert "--top-p" in r.stderr and r.stdout == ""


@pytest.mark.demo
def test_demo_model_names_paris() -> None:
    r = _run(
        "--prompt",
        "What is the capital of France?",
        "--greedy",
        "--max-new-tokens",
        "20",
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    assert "Paris" in r.stdout
    _assert_quiet(r.stderr)


def _sessions() -> list[Path]:
    from llama_tui import locations

    return sorted(locations.sessions_dir().glob("*.jsonl"))


def test_headless_runs_are_journaled_and_resume_appends(tiny_model_dir: Path) -> None:
    from llama_tui.session.store import latest_session_id, load_conversation

    common = ("--model", str(tiny_model_dir), "--greedy", "--max-new-tokens", "4")
    first = _run(*common, "--prompt", "Once upon a time")
    assert first.returncode == 0, first.stderr
    [journal] = _sessions()
    conv = load_conversation(journal.stem)
    assert [m.role for m in conv.messages] == ["user", "assistant"]
    assert conv.messages[1].content.strip() == first.stdout.strip()
    assert conv.messages[1].status == "complete" and conv.messages[1].stats

    second = _run(*common, "--resume", "--prompt", "And then?")
    assert second.returncode == 0, second.stderr
    assert _sessions() == [journal]  # the same session, not a new one
    # What a following `--resume` (TUI or headless) opens: the latest session, with the turn.
    assert latest_session_id() == journal.stem
    resumed = load_conversation(latest_session_id() or "")
    assert [m.content for m in resumed.messages[:3]] == [
        "Once upon a time", conv.messages[1].content, "And then?"]
    assert resumed.messages[3].content.strip() == second.stdout.strip()


def test_headless_save_lists_the_same_versions_as_the_tui(tiny_model_dir: Path,
                                                         tmp_path: Path) -> None:
    out = tmp_path / "out.md"
    r = _run("--model", str(tiny_model_dir), "--greedy", "--max-new-tokens", "3",
             "--prompt", "hi", "--save", str(out))
    assert r.returncode == 0, r.stderr
    versions = next(ln for ln in out.read_text().splitlines() if ln.startswith("- **Versions:**"))
    for dist in ("llama-tui", "transformers", "torch", "textual"):
        assert f"{dist} " in versions


def test_resuming_an_older_export_keeps_the_newer_session(tiny_model_dir: Path,
                                                         tmp_path: Path) -> None:
    """`--resume old.json` after the session went on must not replace the later turns."""
    from llama_tui.session.store import load_conversation

    common = ("--model", str(tiny_model_dir), "--greedy", "--max-new-tokens", "3")
    export = tmp_path / "exp.json"
    assert _run(*common, "--prompt", "Say A", "--save", str(export)).returncode == 0
    assert _run(*common, "--resume", "--prompt", "Say B").returncode == 0
    [journal] = _sessions()
    third = _run(*common, "--resume", str(export), "--prompt", "Say C")
    assert third.returncode == 0, third.stderr
    assert "continues as a new session" in third.stderr
    kept = load_conversation(journal.stem)
    assert [m.content for m in kept.messages if m.role == "user"] == ["Say A", "Say B"]
    [forked] = [p for p in _sessions() if p != journal]
    fork = load_conversation(forked.stem)
    assert [m.content for m in fork.messages if m.role == "user"] == ["Say A", "Say C"]


def test_resuming_the_latest_export_continues_the_same_session(tiny_model_dir: Path,
                                                               tmp_path: Path) -> None:
    common = ("--model", str(tiny_model_dir), "--greedy", "--max-new-tokens", "3")
    export = tmp_path / "exp.json"
    assert _run(*common, "--prompt", "Say A", "--save", str(export)).returncode == 0
    second = _run(*common, "--resume", str(export), "--prompt", "Say B")
    assert second.returncode == 0, second.stderr
    assert "new session" not in second.stderr
    assert len(_sessions()) == 1


@pytest.mark.parametrize("given", ["out.md", "out"])  # no extension: `.md` is added
def test_save_onto_an_existing_file_fails_before_the_model_loads(tiny_model_dir: Path,
                                                                 tmp_path: Path,
                                                                 given: str) -> None:
    existing = tmp_path / "out.md"
    existing.write_text("keep me\n")
    r = _run("--model", str(tiny_model_dir), "--greedy", "--max-new-tokens", "3",
             "--prompt", "hi", "--save", str(tmp_path / given))
    assert r.returncode == 1
    assert f"{existing} exists; choose another --save path" in r.stderr
    assert r.stdout == ""  # no reply generated (and then thrown away)
    assert _sessions() == []  # nothing journaled either
    assert existing.read_text() == "keep me\n"

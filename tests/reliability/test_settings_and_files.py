"""docs/reliability.md rows 7-9 and 14: invalid settings, malformed files, disk full, export names.

The app and the CLI must start whatever is on disk; a bad file is reported with its path,
kept aside or left as it was, never overwritten; a failed save leaves the previous file
byte-identical with no temp file, keeps the conversation in memory, and a retry works.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

import pytest

from llama_tui import locations
from llama_tui.config.remembered import remembered_settings_file
from llama_tui.config.settings import load_settings
from llama_tui.ui.screens.confirm import ConfirmScreen
from llama_tui.ui.screens.save_dialog import SaveDialog
from tests.ui.fakes import FakeBackend
from tests.ui.helpers import make_app, notes, ready, reply_done, send, shown_text, until

pytestmark = pytest.mark.asyncio

# -- row 7: invalid settings -------------------------------------------------------------

BAD_SETTINGS = [
    ("temperature", "0"), ("temperature", "-1"), ("temperature", "nan"),
    ("temperature", "inf"), ("temperature", "abc"),
    ("top_p", "0"), ("top_p", "1.5"), ("top_p", "-0.1"), ("top_p", "nan"),
    ("top_k", "-1"), ("top_k", "2.5"), ("top_k", "many"),
    ("max_new_tokens", "0"), ("max_new_tokens", "-5"), ("max_new_tokens", "100000"),
    ("max_new_tokens", "2048"),  # the fake model's whole context
    ("repetition_penalty", "0"), ("repetition_penalty", "-1"), ("repetition_penalty", "inf"),
]


@pytest.mark.parametrize(("key", "value"), BAD_SETTINGS, ids=[f"{k}={v}" for k, v in BAD_SETTINGS])
async def test_invalid_setting_is_refused_with_reason_and_never_persisted(
    key: str, value: str
) -> None:
    app = make_app(FakeBackend(replies=[["ok"]]))
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        before = app.chat_state.params
        await send(pilot, f"/set {key} {value}")
        await pilot.pause()
        text = shown_text(app)
        assert "Nothing was changed" in text and key in text, text
        assert app.chat_state.params == before
        await send(pilot, "/settings")  # the panel closes: settings are remembered now
        await send(pilot, "/settings")
        await send(pilot, "hello")  # the reply uses the old, valid settings
        await reply_done(pilot)
        assert app.chat_state.conversation.messages[-1].status == "complete"
    path = remembered_settings_file()
    if path.exists():
        assert key not in json.loads(path.read_text())["fields"]


BAD_CONFIG = [
    ("temperature = 0\n", "temperature"),
    ("temperature = nan\n", "temperature"),
    ("temperature = inf\n", "temperature"),
    ("top_p = 1.5\n", "top_p"),
    ("top_k = -3\n", "top_k"),
    ("top_k = 2.5\n", "top_k"),
    ('top_k = "ten"\n', "top_k"),
    ("max_new_tokens = 0\n", "max_new_tokens"),
    ("repetition_penalty = 0\n", "repetition_penalty"),
    ('do_sample = "yes"\n', "do_sample"),
    ('stop = [1, 2]\n', "stop"),
    ('threads = "four"\n', "threads"),
]


@pytest.mark.parametrize(("body", "key"), BAD_CONFIG, ids=[b.strip() for b, _ in BAD_CONFIG])
async def test_bad_config_value_starts_with_default_names_key_and_line(body: str, key: str) -> None:
    cfg = locations.config_file()
    cfg.parent.mkdir(parents=True, exist_ok=True)
    text = '# my settings\nmodel = "fake"\n[generation]\n' + body
    if key == "threads":
        text = 'threads = "four"\nmodel = "fake"\n'
    cfg.write_text(text)
    loaded = load_settings(cwd=cfg.parent)
    line = text.splitlines().index(body.strip() if key != "threads" else 'threads = "four"') + 1
    hits = [w for w in loaded.warnings if key in w]
    assert hits and f"line {line}" in hits[0], loaded.warnings
    default = type(loaded.settings.params)()
    if hasattr(default, key):
        assert getattr(loaded.settings.params, key) == getattr(default, key)
    assert cfg.read_text() == text  # never rewritten
    # The app starts with it and shows the warning.
    from llama_tui.ui.app import create_app
    from tests.ui.fakes import FakeFactory

    app = create_app(loaded, backend_factory=FakeFactory(fake=FakeBackend()))
    async with app.run_test(size=(100, 30), notifications=True) as pilot:
        await ready(pilot)
        assert app.state == "ready"
        assert any(key in n for n in notes(app)), notes(app)


# -- row 8: malformed / binary files; unwritable directories -----------------------------

GARBAGE = {
    "empty": b"",
    "truncated-json": b'{"version": 1, "generation": {"temperature": 0.',
    "binary": bytes(range(256)) * 4,
    "bad-utf8": b"model = \"\xff\xfe\"\n",
    "nul-bytes": b"\x00" * 64,
    "escape-seqs": b"\x1b]52;c;UFdORUQ=\x07\x1b[2J",
    "deep-json": b"[" * 100_000,
}


@pytest.mark.parametrize("content", list(GARBAGE.values()), ids=list(GARBAGE))
async def test_malformed_config_and_remembered_files(content: bytes) -> None:
    cfg = locations.config_file()
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_bytes(content)
    remembered = remembered_settings_file()
    remembered.write_bytes(content)
    loaded = load_settings(cwd=cfg.parent)
    for w in loaded.warnings:
        assert "\x1b" not in w and "\x00" not in w
    app = make_app(FakeBackend(replies=[["ok"]]))
    app.loaded = loaded
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        await send(pilot, "/set temperature 0.5")  # forces the remembered file to be written
        await send(pilot, "/settings")
        await send(pilot, "/settings")
        await send(pilot, "hi")
        await reply_done(pilot)
    assert cfg.read_bytes() == content  # config.toml is never written
    valid = True
    try:
        valid = isinstance(json.loads(content), dict)
    except (ValueError, RecursionError):
        valid = False
    if not valid and content:
        aside = remembered.with_name(remembered.name + ".bad")
        assert aside.read_bytes() == content  # kept aside, not overwritten
        assert json.loads(remembered.read_text())["fields"]["temperature"]["value"] == 0.5


@pytest.mark.parametrize("content", list(GARBAGE.values()), ids=list(GARBAGE))
async def test_malformed_journal_resume_app_and_cli(
    content: bytes, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from llama_tui.cli import main as cli
    from llama_tui.session.journal import SessionLoadError

    sessions = locations.data_dir() / "sessions"
    sessions.mkdir(parents=True, exist_ok=True)
    bad = sessions / "20250101-000000-abcdef.jsonl"
    bad.write_bytes(content)
    # The app: resuming it fails with a clean error naming the path; nothing is lost.
    try:
        app = make_app(FakeBackend(), resume=str(bad))
    except SessionLoadError as e:
        assert str(bad.name) in str(e) and "\x1b" not in str(e)
    else:
        async with app.run_test(size=(80, 24)) as pilot:
            await ready(pilot)
    survivors = list(sessions.iterdir())
    assert any(p.read_bytes() == content for p in survivors), survivors  # kept (maybe aside)
    # The CLI, TUI mode: a clear error and exit code, never a traceback.
    from textual.app import App

    monkeypatch.setattr(App, "run", lambda self, *a, **k: None)
    code = cli.main(["--model", "fake", "--resume", str(bad)])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if code != 0:
        assert "resume" in err.lower() or str(bad.name) in err, err


async def test_unwritable_data_dir_app_still_chats(tmp_path: Path) -> None:
    data = locations.data_dir()
    data.parent.mkdir(parents=True, exist_ok=True)
    data.write_text("a file where the data directory should be")  # mkdir fails, even as root
    app = make_app(FakeBackend(replies=[["ok"]]))
    async with app.run_test(size=(100, 30), notifications=True) as pilot:
        await ready(pilot)
        await send(pilot, "hello")
        await reply_done(pilot)
        assert app.chat_state.conversation.messages[-1].content == "ok"
        assert any("journal" in n.lower() or str(data) in n for n in notes(app)), notes(app)
    assert data.read_text().startswith("a file")


# -- row 9: disk full while saving --------------------------------------------------------


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EIO, errno.EDQUOT])
async def test_disk_full_during_save_keeps_previous_file_and_retry_works(
    err: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "chat.md"
    app = make_app(FakeBackend(replies=[["first"], ["second"]]))
    async with app.run_test(size=(100, 30), notifications=True) as pilot:
        await ready(pilot)
        await send(pilot, "one")
        await reply_done(pilot)
        await send(pilot, f"/save {target}")
        await until(pilot, lambda: target.exists())
        before = target.read_bytes()
        await send(pilot, "two")
        await reply_done(pilot)
        real_write = os.write

        def failing(fd: int, data: Any) -> int:
            if fd > 2:
                real_write(fd, bytes(data[:10]))
                raise OSError(err, os.strerror(err))
            return real_write(fd, data)

        monkeypatch.setattr(os, "write", failing)
        await send(pilot, f"/save {target}")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await until(pilot, lambda: any("Could not save" in n for n in notes(app)))
        assert target.read_bytes() == before
        assert sorted(p.name for p in tmp_path.iterdir() if p.name != "llama_tui_home") == [
            "chat.md"
        ]  # no temp file
        assert [m.content for m in app.chat_state.conversation.messages][-1] == "second"
        monkeypatch.setattr(os, "write", real_write)
        await send(pilot, f"/save {target}")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await until(pilot, lambda: b"second" in target.read_bytes())


# -- row 14: export names -----------------------------------------------------------------

HOSTILE_TITLES = ["../../x", "/", "..", "nul\x00byte", "x" * 300, "\x1b]0;t\x07name",
                  "a/b\\c", "CON", " .hidden", "\u202eexe.txt"]


@pytest.mark.parametrize("title", HOSTILE_TITLES, ids=range(len(HOSTILE_TITLES)))
async def test_export_name_from_title_stays_in_directory(
    title: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    app = make_app(FakeBackend(replies=[["r"]]))
    async with app.run_test(size=(100, 30), notifications=True) as pilot:
        await ready(pilot)
        await send(pilot, "hello")
        await reply_done(pilot)
        app.chat_state.conversation.title = title
        (tmp_path / "outdir").mkdir()
        saved = locations.save_dir()
        await send(pilot, "/save")  # asks where, prefilled with a name in the save folder
        await until(pilot, lambda: isinstance(app.screen, SaveDialog))
        await pilot.press("enter")
        await until(pilot, lambda: saved.is_dir() and any(p.is_file() for p in saved.iterdir()))
        await send(pilot, f"/save {tmp_path / 'outdir'}/")
        await until(pilot, lambda: any((tmp_path / "outdir").iterdir()))
    assert not any(work.iterdir())  # never the working directory
    for d in (saved, tmp_path / "outdir"):
        files = list(d.iterdir())
        assert len(files) == 1, files
        name = files[0].name
        assert files[0].parent == d and not name.startswith(".")
        assert len(name.encode()) <= 255
        assert not any(c in name for c in "\x00\x1b\x07/\\\u202e")
    assert not (tmp_path / "x").exists() and not (tmp_path.parent / "x").exists()


async def test_existing_file_and_symlink_are_not_overwritten_without_asking(
    tmp_path: Path,
) -> None:
    existing = tmp_path / "chat.md"
    existing.write_text("precious")
    victim = tmp_path / "victim.txt"
    victim.write_text("do not touch")
    link = tmp_path / "link.md"
    link.symlink_to(victim)
    app = make_app(FakeBackend(replies=[["r"]]))
    async with app.run_test(size=(100, 30), notifications=True) as pilot:
        await ready(pilot)
        await send(pilot, "hello")
        await reply_done(pilot)
        for path in (existing, link):
            await send(pilot, f"/save {path}")
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            await pilot.press("n")
            await until(pilot, lambda: not isinstance(app.screen, ConfirmScreen))
        assert existing.read_text() == "precious" and victim.read_text() == "do not touch"
        await send(pilot, f"/save {link}")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await until(pilot, lambda: not link.is_symlink())
    assert victim.read_text() == "do not touch"  # the link was replaced, not followed
    assert "hello" in link.read_text()

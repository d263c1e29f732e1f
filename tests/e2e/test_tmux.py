"""End to end: the installed `llama-tui` on the bundled demo model, driven in tmux at 80x24.

Ask a question and watch the reply stream, stop a long reply with Esc, change the
temperature in the settings panel, `/save` to a file, quit; assert on `capture-pane` and on
the saved file. Runs on a private tmux server (`-L`), so the user's tmux is never touched.

LLAMA_TUI_HOME is a temporary folder, except that its `cache/` links to the real llama-tui
cache: converting the demo GGUF takes 15-90 s the first time, and the converted copy is the
same one a user's first run makes. `E2E_CAPTURE_DUMP=FILE` writes every distinct screen seen
(form-feed separated) for a human to look at.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed"),
]

LOAD_TIMEOUT = 300.0  # first run converts the GGUF
REPLY_TIMEOUT = 120.0


def llama_tui_command() -> list[str]:
    script = Path(sys.executable).parent / "llama-tui"
    if script.exists():
        return [str(script)]
    # Not installed as a script (e.g. a plain checkout): the same entry point.
    return [sys.executable, "-m", "llama_tui"]


class Tmux:
    """A detached tmux session on a private server socket."""

    def __init__(self, socket: str, session: str) -> None:
        self.socket, self.session = socket, session
        self.snapshots: list[str] = []

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["tmux", "-L", self.socket, *args], check=check,
                              capture_output=True, text=True, timeout=30)

    def keys(self, *keys: str) -> None:
        self.run("send-keys", "-t", self.session, *keys)

    def text(self, text: str) -> None:
        self.run("send-keys", "-t", self.session, "-l", text)

    def capture(self) -> str:
        out = self.run("capture-pane", "-p", "-t", self.session, check=False).stdout
        self.snapshots.append(out)
        return out

    def pane_status(self) -> int | None:
        """The app's exit status once it has exited (remain-on-exit keeps the pane), else None."""
        out = self.run("list-panes", "-t", self.session, "-F", "#{pane_dead} #{pane_dead_status}",
                       check=False).stdout.split()
        return int(out[1]) if len(out) == 2 and out[0] == "1" else None

    def diagnose(self, home: Path) -> str:
        """The screen, the app's threads and the end of its log: for a failed exit."""
        pid = self.run("display", "-p", "-t", self.session, "#{pane_pid}", check=False)
        script = (
            "for p in $(pgrep -P {0}) {0}; do for t in /proc/$p/task/*; do "
            "echo $p $(basename $t) $(cat $t/comm) $(cat $t/wchan) $(cut -d' ' -f3 $t/stat); "
            "done; done; tail -20 {1}"
        ).format(pid.stdout.strip() or "0", home / "log" / "llama_tui.log")
        threads = subprocess.run(["sh", "-c", script], capture_output=True, text=True).stdout
        return f"{self.capture()}\n--- threads ---\n{threads}"

    def alive(self) -> bool:
        return self.run("has-session", "-t", self.session, check=False).returncode == 0

    def wait(self, what: str, cond: Callable[[str], bool], timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.capture()
            if cond(screen):
                return screen
            if time.monotonic() > deadline or not self.alive():
                raise AssertionError(f"timed out waiting for {what}; screen:\n{screen}")
            time.sleep(0.1)  # polling a real terminal: there is no event to wait on


def exited(pid: str) -> bool:
    """True when process `pid` has ended (gone, or a zombie waiting to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def status_line(screen: str) -> str:
    lines = [ln for ln in screen.splitlines() if ln.strip()]
    return lines[-2] if len(lines) >= 2 else ""


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[tuple[Tmux, Path]]:
    import platformdirs

    home = tmp_path / "home"
    home.mkdir()
    real_cache = Path(platformdirs.user_cache_dir("llama_tui", appauthor=False))
    real_cache.mkdir(parents=True, exist_ok=True)
    (home / "cache").symlink_to(real_cache, target_is_directory=True)
    env = {
        "LLAMA_TUI_HOME": str(home),
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "TERM": "xterm-256color",
        "COLORTERM": "truecolor",
        "TEXTUAL_ANIMATIONS": "none",
    }
    env_prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    command = f"env -u TMUX {env_prefix} {shlex.join(llama_tui_command())} --model demo"
    # Short first replies keep the test quick; the long reply raises the limit with /set.
    command += " --max-new-tokens 64 --seed 1"
    t = Tmux(f"llama-tui-e2e-{uuid.uuid4().hex[:8]}", "e2e")
    t.run("-f", "/dev/null", "new-session", "-d", "-s", t.session, "-x", "80", "-y", "24",
          "-c", os.getcwd(), command)
    t.run("set-option", "-t", t.session, "remain-on-exit", "on", check=False)
    try:
        yield t, home
    finally:
        t.run("kill-server", check=False)
        # Distinct screens, in order, for a human to look at (E2E_CAPTURE_DUMP=path).
        dump = os.environ.get("E2E_CAPTURE_DUMP")
        if dump:
            distinct = [s for i, s in enumerate(t.snapshots) if i == 0 or s != t.snapshots[i - 1]]
            Path(dump).write_text("\n\f\n".join(distinct))


def test_chat_stop_settings_save_quit(tmux: tuple[Tmux, Path], tmp_path: Path) -> None:
    t, home = tmux
    # Paints at once, then loads the model in the background.
    t.wait("first paint", lambda s: "Type a message" in s or "loading" in s, 30)
    t.wait("the model to load", lambda s: status_line(s).lstrip().startswith("ready"),
           LOAD_TIMEOUT)

    # Ask a question: the reply streams (seen mid-way), then stats show.
    t.text("What is the capital of France?")
    t.keys("Enter")
    t.wait("generating", lambda s: "generating" in status_line(s), 30)
    t.wait("the reply", lambda s: "tok/s" in s
           and status_line(s).lstrip().startswith("ready"), REPLY_TIMEOUT)
    streamed = [s for s in t.snapshots if "generating" in status_line(s)]
    assert streamed, "never saw the reply while it was generated"
    screen = t.capture()
    assert "What is the capital of France?" in screen
    assert "assistant" in screen

    # A long reply, stopped with Esc mid-stream.
    t.text("/set max_new_tokens 1000")
    t.keys("Enter")
    t.wait("the setting", lambda s: "Applies from the next reply" in s, 10)
    t.text("Write a very long story about a dragon who learns to cook, in ten chapters.")
    t.keys("Enter")
    t.wait("a long reply to start", lambda s: "generating" in status_line(s), 30)
    time.sleep(1.5)  # let some text stream (a real terminal; nothing to wait on)
    t.keys("Escape")
    screen = t.wait("the stopped marker", lambda s: "■ stopped" in s, 30)
    assert "stopped" in status_line(screen)

    # Temperature in the settings panel (F2 focuses it; typing replaces the value).
    t.keys("F2")
    t.wait("the settings panel", lambda s: "Settings" in s and "Temperature" in s, 10)
    t.text("0.3")
    t.wait("the new value", lambda s: any("Temperature" in ln and "0.3" in ln
                                          for ln in s.splitlines()), 10)
    t.keys("F2")
    t.wait("the panel to close", lambda s: "Temperature" not in s, 10)
    remembered = home / "config" / "remembered.json"
    assert json.loads(remembered.read_text())["generation"]["temperature"] == 0.3

    # Save, then quit.
    target = tmp_path / "chat.md"
    t.text(f"/save {target}")
    t.keys("Enter")
    deadline = time.monotonic() + 20
    while not target.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    saved = target.read_text()
    assert "What is the capital of France?" in saved
    assert "dragon who learns to cook" in saved
    assert "stopped" in saved.lower()
    assert "SmolLM2" in saved
    pid = t.run("display", "-p", "-t", t.session, "#{pane_pid}").stdout.strip()
    t.keys("C-q")
    deadline = time.monotonic() + 20
    while t.pane_status() is None and not exited(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    # tmux sometimes leaves the exited app a zombie for a while before marking the pane
    # dead; either way the process is gone, and when tmux knows the status it must be 0.
    assert t.pane_status() in (0, None) and (t.pane_status() == 0 or exited(pid)), (
        t.diagnose(home))

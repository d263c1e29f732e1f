"""Shared helpers for the end-to-end tests: the real `llama-tui` in a private tmux server.

`e2e_home` makes an isolated LLAMA_TUI_HOME whose `cache/` links to the real llama-tui
cache, so the demo GGUF is converted once per machine (15-90 s), not once per test: the
converted copy is the same one a user's first run makes. `app_command` builds the shell
command that starts the app with a clean environment; `Tmux.start` runs it detached on its
own server socket (`-L`), so the user's tmux is never touched. `E2E_CAPTURE_DUMP=FILE`
writes every distinct screen seen (form-feed separated) for a human to look at.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

LOAD_TIMEOUT = 300.0  # first run converts the GGUF
REPLY_TIMEOUT = 120.0
CLOSE_GRACE_S = 10.0  # how long a hung-up app gets to exit before the tests kill it

# `pytestmark` of every e2e test module.
E2E_MARKS = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed"),
]


def llama_tui_command() -> list[str]:
    """The installed console script, else the same entry point through `python -m`."""
    script = Path(sys.executable).parent / "llama-tui"
    if script.exists():
        return [str(script)]
    # Not installed as a script (e.g. a plain checkout): the same entry point.
    return [sys.executable, "-m", "llama_tui"]


def e2e_home(tmp_path: Path) -> Path:
    """A private LLAMA_TUI_HOME under `tmp_path`, sharing the real converted-model cache."""
    import platformdirs

    home = tmp_path / "home"
    home.mkdir()
    real_cache = Path(platformdirs.user_cache_dir("llama_tui", appauthor=False))
    real_cache.mkdir(parents=True, exist_ok=True)
    (home / "cache").symlink_to(real_cache, target_is_directory=True)
    return home


def app_command(home: Path, *args: str) -> str:
    """Shell command running llama-tui with `args`, isolated in `home`, offline."""
    env = {
        "LLAMA_TUI_HOME": str(home),
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "TERM": "xterm-256color",
        "COLORTERM": "truecolor",
        "TEXTUAL_ANIMATIONS": "none",
    }
    env_prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    # `env` execs the app, so the pane's process is the app itself (signals reach it).
    # COLUMNS / LINES: readline (loaded by pytest) may have put 80x24 into the C-level
    # environment that tmux inherits; they would override the pane's real size.
    unset = "-u TMUX -u COLUMNS -u LINES"
    return f"env {unset} {env_prefix} {shlex.join([*llama_tui_command(), *args])}"


class Tmux:
    """A detached tmux session on a private server socket."""

    def __init__(self, socket: str, session: str, width: int = 80, height: int = 24) -> None:
        self.socket, self.session = socket, session
        self.width, self.height = width, height
        self.snapshots: list[str] = []

    @classmethod
    def start(cls, command: str, *, width: int = 80, height: int = 24) -> Tmux:
        """Run `command` in a new detached session; the pane stays after the app exits."""
        t = cls(f"llama-tui-e2e-{uuid.uuid4().hex[:8]}", "e2e", width, height)
        t._new_session(command)
        return t

    def _new_session(self, command: str) -> None:
        self.run("-f", "/dev/null", "new-session", "-d", "-s", self.session, "-x",
                 str(self.width), "-y", str(self.height), "-c", os.getcwd(), command)
        self.run("set-option", "-t", self.session, "remain-on-exit", "on", check=False)

    def restart(self, command: str) -> None:
        """End the session (its app too, if alive) and run `command` in a fresh one.

        A fresh session rather than `respawn-pane`: a respawned pane of a detached session
        can come back at tmux's default 80x24 instead of the size asked for.
        """
        self.run("kill-session", "-t", self.session, check=False)
        self._new_session(command)

    def close(self) -> list[str]:
        """Kill the private server; dump the distinct screens when E2E_CAPTURE_DUMP is set.

        Killing the server hangs up the apps' terminals: they should exit by themselves.
        One still running after `CLOSE_GRACE_S` is killed (by pid) so that no test leaves a
        process behind; the pids so killed are returned.
        """
        pids = self.run("list-panes", "-a", "-F", "#{pane_pid}", check=False).stdout.split()
        self.run("kill-server", check=False)
        hung = []
        deadline = time.monotonic() + CLOSE_GRACE_S
        for pid in pids:
            while not exited(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if not exited(pid):
                with contextlib.suppress(OSError):
                    os.kill(int(pid), signal.SIGKILL)
                hung.append(pid)
        dump = os.environ.get("E2E_CAPTURE_DUMP")
        if dump:
            snaps = self.snapshots
            distinct = [s for i, s in enumerate(snaps) if i == 0 or s != snaps[i - 1]]
            Path(dump).write_text("\n\f\n".join(distinct))
        return hung

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

    def pane_pid(self) -> str:
        """The pid of the pane's process (the app: `app_command` execs it)."""
        return self.run("display", "-p", "-t", self.session, "#{pane_pid}").stdout.strip()

    def pane_status(self) -> int | None:
        """The app's exit status once it has exited (remain-on-exit keeps the pane), else None.

        None too when a signal killed it (tmux then has no exit status to show).
        """
        out = self.run("list-panes", "-t", self.session, "-F", "#{pane_dead} #{pane_dead_status}",
                       check=False).stdout.split()
        return int(out[1]) if len(out) == 2 and out[0] == "1" else None

    def pane_dead(self) -> bool:
        out = self.run("list-panes", "-t", self.session, "-F", "#{pane_dead}", check=False)
        return out.stdout.strip() == "1"

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


def zombie_status(pid: str) -> int | None:
    """The exit code of process `pid` if it is a zombie (-N: killed by signal N), else None.

    tmux sometimes leaves an exited app a zombie for a while before it reaps it and marks
    the pane dead; the kernel already knows the status (/proc/PID/stat field 52).
    """
    try:
        rest = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    if rest[0] != "Z" or len(rest) < 50:
        return None
    status = int(rest[49])  # field 52, as waitpid(2) reports it
    return status >> 8 if status & 0x7F == 0 else -(status & 0x7F)


def status_line(screen: str) -> str:
    lines = [ln for ln in screen.splitlines() if ln.strip()]
    return lines[-2] if len(lines) >= 2 else ""


def ready(screen: str) -> bool:
    """The status bar says the model is loaded and idle."""
    return status_line(screen).lstrip().startswith("ready")

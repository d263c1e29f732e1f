"""A real terminal for end-to-end tests: llama-tui in tmux, a tmux client on a test-owned pty.

`Tmux` (helpers.py) drives a detached tmux server with `send-keys`, which hands the pane
ready-made keys. That skips the layer where terminal bugs live: the bytes a terminal sends
(ESC CR for Alt+Enter, 0x02 for Ctrl+B, a bracketed paste with CR line ends) being parsed
by tmux and then by the app. `TerminalRig` attaches a real `tmux attach` client to the
session through a pseudo-terminal this process owns, so a test plays the terminal:

- `write(bytes)`, `type(text)`, `key(name)` (see `KEYS`), `paste(text)` write into the
  client's pty master what a terminal would send; `paste_buffer(text)` takes tmux's own
  `set-buffer` + `paste-buffer -p` route instead.
- a background thread keeps everything tmux sends to the outer terminal: `outer_bytes()`,
  `wait_outer(pattern)` (e.g. an OSC 52 clipboard sequence).
- `screen()` / `wait_for(text_or_predicate)` read the pane with capture-pane;
  `show_buffer()` / `list_buffers()` read tmux's paste buffers.

`running_app(tmp_path, *args)` is the context manager a test fixture wraps: the app started
with `args`, loaded and ready, everything killed and closed afterwards even on failure.

tmux runs with its DEFAULT configuration (`-f /dev/null`, prefix C-b, escape-time 500 ms)
on a private `-L` socket; `options` are set (`set -g`) before the app starts. The pane is
`width` x `height`; the client's pty has one more row for tmux's status line.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import termios
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from tests.e2e.helpers import LOAD_TIMEOUT, Tmux, app_command, e2e_home, ready

# What an xterm-compatible terminal sends for each key (normal cursor-key mode).
KEYS: dict[str, bytes] = {
    "enter": b"\r", "alt+enter": b"\x1b\r", "tab": b"\t", "shift+tab": b"\x1b[Z",
    "escape": b"\x1b", "backspace": b"\x7f", "delete": b"\x1b[3~",
    "up": b"\x1b[A", "down": b"\x1b[B", "right": b"\x1b[C", "left": b"\x1b[D",
    "home": b"\x1b[H", "end": b"\x1b[F", "ctrl+home": b"\x1b[1;5H", "ctrl+end": b"\x1b[1;5F",
    "pgup": b"\x1b[5~", "pgdn": b"\x1b[6~", "shift+pgup": b"\x1b[5;2~",
    "shift+pgdn": b"\x1b[6;2~", "ctrl+pgup": b"\x1b[5;5~", "ctrl+pgdn": b"\x1b[6;5~",
    "shift+up": b"\x1b[1;2A", "shift+down": b"\x1b[1;2B",
    "alt+left": b"\x1b[1;3D", "alt+right": b"\x1b[1;3C",
    "f1": b"\x1bOP", "f2": b"\x1bOQ", "f3": b"\x1bOR", "f4": b"\x1bOS", "f5": b"\x1b[15~",
    "f6": b"\x1b[17~", "f7": b"\x1b[18~", "f8": b"\x1b[19~", "f9": b"\x1b[20~",
    "f10": b"\x1b[21~", "f11": b"\x1b[23~", "f12": b"\x1b[24~",
}
KEYS.update({f"ctrl+{c}": bytes([ord(c) - 96]) for c in "abcdefghijklmnopqrstuvwxyz"})
KEYS.update({f"alt+{c}": b"\x1b" + c.encode() for c in "abcdefghijklmnopqrstuvwxyz"})

PASTE_START, PASTE_END = b"\x1b[200~", b"\x1b[201~"
BRACKETED_ON, BRACKETED_OFF = b"\x1b[?2004h", b"\x1b[?2004l"
ESCAPE_TIME_S = 0.6  # tmux's default escape-time is 500 ms: a lone ESC waits that long


class TerminalRig(Tmux):
    """The app in a default-config tmux, with a real tmux client on a pty the test owns."""

    def __init__(self, command: str, *, width: int = 80, height: int = 24,
                 options: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(f"llama-tui-rig-{uuid.uuid4().hex[:8]}", "rig", width, height)
        self.command, self.options = command, list(options)
        self.master = self.slave = -1
        self.client: subprocess.Popen[bytes] | None = None
        self._outer = bytearray()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._reader: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------
    def start(self) -> TerminalRig:  # type: ignore[override]
        """Start the server (options first, then the app's session) and attach the client."""
        chain: list[str] = []
        for name, value in self.options:
            chain += ["set-option", "-g", name, value, ";"]
        self.run("-f", "/dev/null", *chain, "new-session", "-d", "-s", self.session,
                 "-x", str(self.width), "-y", str(self.height), "-c", os.getcwd(), self.command)
        self.run("set-option", "-t", self.session, "remain-on-exit", "on", check=False)
        self.master, self.slave = pty.openpty()
        winsize = struct.pack("HHHH", self.height + 1, self.width, 0, 0)  # + tmux status line
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, winsize)
        env = {k: v for k, v in os.environ.items() if k not in ("TMUX", "COLUMNS", "LINES")}
        env.update(TERM="xterm-256color", LANG="C.UTF-8")
        self.client = subprocess.Popen(
            ["tmux", "-u", "-L", self.socket, "attach-session", "-t", self.session],
            stdin=self.slave, stdout=self.slave, stderr=self.slave, env=env,
            start_new_session=True, preexec_fn=_take_controlling_tty)
        self._reader = threading.Thread(target=self._read_outer, daemon=True)
        self._reader.start()
        # Bytes written before the client puts the tty in raw mode would be line-edited.
        self.until("the tmux client to attach", lambda: self._attached(), 20)
        return self

    def set_option(self, name: str, value: str) -> None:
        """`set -g` on the running server (before `start`, pass `options` instead)."""
        self.run("set-option", "-g", name, value)

    def close(self) -> list[str]:
        """Kill the server and the app (helpers.Tmux.close), the client, the pty, the reader."""
        try:
            return super().close()
        finally:
            self._stop.set()
            if self.client is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.client.wait(5)
                if self.client.poll() is None:
                    self.client.kill()
                    self.client.wait(5)
            if self._reader is not None:
                self._reader.join(5)
            for fd in (self.master, self.slave):
                with contextlib.suppress(OSError):
                    os.close(fd)

    def _attached(self) -> bool:
        clients = self.run("list-clients", "-F", "#{client_tty}", check=False).stdout
        return bool(clients.strip()) and not termios.tcgetattr(self.slave)[3] & termios.ICANON

    # -- the terminal's input ----------------------------------------------------
    def write(self, data: bytes) -> None:
        """Bytes as a terminal sends them to tmux."""
        view = memoryview(data)
        while view:
            view = view[os.write(self.master, view):]

    def type(self, text: str) -> None:
        self.write(text.encode())

    def key(self, name: str) -> None:
        """One key by name (`KEYS`); a lone escape waits out tmux's escape-time."""
        self.write(KEYS[name])
        if name == "escape":
            time.sleep(ESCAPE_TIME_S)  # tmux cannot tell ESC from an escape sequence sooner

    def bracketed_paste_on(self) -> bool:
        """Whether tmux last asked the outer terminal for bracketed paste (the pane app did)."""
        data = self.outer_bytes()
        return data.rfind(BRACKETED_ON) > data.rfind(BRACKETED_OFF)

    def paste(self, text: str) -> None:
        """A terminal's paste: bracketed (once enabled), line ends sent as CR."""
        self.until("bracketed paste mode", self.bracketed_paste_on, 20)
        body = text.replace("\r\n", "\n").replace("\n", "\r").encode()
        self.write(PASTE_START + body + PASTE_END)

    def paste_buffer(self, text: str, name: str = "rig") -> None:
        """tmux's own paste: `set-buffer` then `paste-buffer -p` (LF becomes CR)."""
        self.run("set-buffer", "-b", name, "--", text)
        self.run("paste-buffer", "-p", "-b", name, "-t", self.session)

    # -- what the terminal receives ------------------------------------------------
    def _read_outer(self) -> None:
        while not self._stop.is_set():
            try:
                readable, _, _ = select.select([self.master], [], [], 0.1)
                chunk = os.read(self.master, 65536) if readable else b""
            except OSError:
                return  # pty closed
            if chunk:
                with self._cond:
                    self._outer += chunk
                    self._cond.notify_all()

    def outer_bytes(self) -> bytes:
        """Everything tmux has sent to the outer terminal so far."""
        with self._cond:
            return bytes(self._outer)

    def wait_outer(self, pattern: bytes | re.Pattern[bytes], timeout: float = 10) -> bytes:
        """Wait until tmux has sent `pattern` (bytes or regex) to the terminal; the match."""
        regex = pattern if isinstance(pattern, re.Pattern) else re.compile(re.escape(pattern))
        deadline = time.monotonic() + timeout
        with self._cond:
            while (found := regex.search(bytes(self._outer))) is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    tail = bytes(self._outer[-400:])
                    raise AssertionError(f"tmux never sent {regex.pattern!r}; tail: {tail!r}")
                self._cond.wait(left)
            return found.group(0)

    def screen(self) -> str:
        return self.capture()

    def wait_for(self, what: str | Callable[[str], bool], timeout: float = 30) -> str:
        """The screen once it contains `what` (text) or satisfies it (a predicate)."""
        cond = what if callable(what) else (lambda s: what in s)
        return self.wait(repr(what), cond, timeout)

    def show_buffer(self, name: str | None = None) -> str:
        args = ["-b", name] if name else []
        return self.run("show-buffer", *args, check=False).stdout

    def list_buffers(self) -> list[str]:
        return self.run("list-buffers", "-F", "#{buffer_name}", check=False).stdout.split()

    def until(self, what: str, cond: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.05)  # tmux state has no event to wait on


def _take_controlling_tty() -> None:
    """In the client (after setsid): make stdin, the pty slave, its controlling terminal."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


@contextlib.contextmanager
def running_app(tmp_path: Path, *args: str, options: Sequence[tuple[str, str]] = (),
                width: int = 80, height: int = 24) -> Iterator[tuple[TerminalRig, Path]]:
    """llama-tui with `args` in a rig, loaded and ready; the rig and LLAMA_TUI_HOME."""
    home = e2e_home(tmp_path)
    rig = TerminalRig(app_command(home, *args), width=width, height=height, options=options)
    try:
        rig.start()
        rig.wait("the model to load", ready, LOAD_TIMEOUT)
        yield rig, home
    finally:
        rig.close()


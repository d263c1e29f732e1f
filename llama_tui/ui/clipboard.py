"""Copy text to the user's clipboard: OSC 52, through tmux or GNU screen, or to a file.

Outside a multiplexer we write a bare OSC 52 sequence (it works over SSH). GNU screen
(`$STY`) swallows it unless it is wrapped in screen's DCS passthrough, chunked.

tmux (`$TMUX`) needs more care, because what works depends on its options:

- `load-buffer -w -` always puts the text in a tmux paste buffer and, whatever
  `set-clipboard` says, forwards it to the attached client's terminal when tmux believes
  that terminal can set the clipboard (terminfo `Ms`, or `terminal-features` `clipboard`).
- A bare OSC 52 from the pane is taken (and forwarded) only with `set-clipboard on`; the
  default `external` drops it.
- The DCS-wrapped sequence passes straight to the outer terminal only with
  `allow-passthrough on` (tmux 3.3 and later; older versions always pass it).

So we ask tmux (its binary, on the socket named in `$TMUX`), load the buffer, and choose:
`plan_tmux_copy` is that decision, a pure function of what tmux said (`TmuxReport`). When
the text cannot reach the outer clipboard, the notice names the tmux option that fixes it.
Only sanitised text is ever copied: we clean again here because a clipboard write is
exactly the attack surface OSC 52 injection targets.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from llama_tui.atomic import make_private_dirs
from llama_tui.text import clean, safe_filename

# GNU screen drops DCS strings longer than about 768 bytes, so its passthrough is chunked.
_SCREEN_CHUNK = 768
_TMUX_TIMEOUT_S = 3.0
PASTE_HINT = "prefix ] pastes it"
FILE_HINT = "/copy file writes it to a file"


def osc52(text: str) -> str:
    """The bare OSC 52 "set clipboard" sequence for `text`."""
    payload = base64.b64encode(clean(text).encode("utf-8")).decode("ascii")
    return f"\x1b]52;c;{payload}\x07"


def tmux_passthrough(seq: str) -> str:
    """``ESC P tmux; <seq with every ESC doubled> ESC \\`` (needs `allow-passthrough on`)."""
    return "\x1bPtmux;" + seq.replace("\x1b", "\x1b\x1b") + "\x1b\\"


def screen_passthrough(seq: str) -> str:
    """``ESC P <chunk> ESC \\`` per chunk of `seq`, for GNU screen."""
    return "".join(
        "\x1bP" + seq[i : i + _SCREEN_CHUNK] + "\x1b\\" for i in range(0, len(seq), _SCREEN_CHUNK)
    )


@dataclass(frozen=True)
class CopyOutcome:
    """What to write to the terminal (maybe nothing) and what to tell the user."""

    sequence: str
    message: str
    warning: bool = False


@dataclass(frozen=True)
class TmuxReport:
    """What tmux said when asked to take the text (see `ask_tmux`)."""

    in_buffer: bool = False  # `load-buffer` worked: the text is in a tmux paste buffer
    sent_to_client: bool = False  # `load-buffer -w` worked with a client attached
    client: str = ""  # the client's tty, "" when none is attached
    term: str = ""  # the client's TERM
    has_ms: bool | None = None  # tmux can set that terminal's clipboard (None: unknown)
    set_clipboard: str = ""  # on / external / off ("" unknown)
    passthrough: str = ""  # allow-passthrough: on / all / off ("" unknown)
    error: str = ""  # why tmux could not be asked at all


def _counted(what: str, text: str) -> str:
    return f"{what} ({len(text)} characters)"


def plan_copy(text: str, what: str, env: Mapping[str, str], tmux: TmuxReport | None) -> CopyOutcome:
    """How to copy `text`, given the environment and (inside tmux) what tmux reported."""
    if env.get("TMUX"):
        return plan_tmux_copy(text, what, tmux or TmuxReport(error="tmux was not asked"))
    seq = osc52(text)
    if env.get("STY"):
        seq = screen_passthrough(seq)
    return CopyOutcome(seq, f"Copied {_counted(what, text)} with OSC 52. Nothing arrived? "
                            f"Your terminal may not support it: {FILE_HINT}.")


def plan_tmux_copy(text: str, what: str, r: TmuxReport) -> CopyOutcome:
    """The tmux decision: forwarded by tmux, passthrough, bare OSC 52, or a buffer only."""
    done = _counted(what, text)
    buffer = f" (also in a tmux paste buffer: {PASTE_HINT})" if r.in_buffer else ""
    if r.error:
        # Could not ask: send both forms, one of which the usual settings let through.
        return CopyOutcome(
            tmux_passthrough(osc52(text)) + osc52(text),
            f"Sent {done} with OSC 52, but could not ask tmux ({r.error}). Nothing arrived? "
            f"Add `set -g set-clipboard on` to ~/.tmux.conf, or {FILE_HINT}.", warning=True)
    if r.sent_to_client and r.has_ms is not False:
        return CopyOutcome("", f"Copied {done} to your clipboard through tmux{buffer}.")
    if r.passthrough in ("on", "all"):
        return CopyOutcome(tmux_passthrough(osc52(text)),
                           f"Copied {done} with OSC 52 through tmux's passthrough{buffer}.")
    if r.set_clipboard == "on" and r.has_ms is not False and r.client:
        # Old tmux without `load-buffer -w`: tmux takes the bare sequence and forwards it.
        return CopyOutcome(osc52(text), f"Copied {done} with OSC 52 through tmux "
                                        f"(set-clipboard on){buffer}.")
    if not r.client:
        why, fix = "no tmux client is attached", "attach, then copy again"
    elif r.has_ms is False:
        term = clean(r.term) or "your-terminal"
        why = f"tmux does not know that your terminal ({term}) can set the clipboard"
        fix = (f"add `set -as terminal-features ',{term}:clipboard'` to ~/.tmux.conf "
               "(or `set -g allow-passthrough on`)")
    else:
        why, fix = "this tmux cannot forward it", "add `set -g set-clipboard on` to ~/.tmux.conf"
    if r.in_buffer:
        return CopyOutcome("", f"Copied {done} to a tmux paste buffer ({PASTE_HINT}), but not "
                               f"to your terminal's clipboard: {why}. To fix, {fix}.",
                           warning=True)
    return CopyOutcome(osc52(text), f"Sent {done} with OSC 52, but tmux may drop it: {why}. "
                                    f"To fix, {fix}; or {FILE_HINT}.", warning=True)


# -- asking tmux ---------------------------------------------------------------------------

Runner = Callable[[list[str], str | None], subprocess.CompletedProcess[str]]


def _run(args: list[str], stdin: str | None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, input=stdin, capture_output=True, text=True,
                          timeout=_TMUX_TIMEOUT_S, check=False)


def ask_tmux(text: str, env: Mapping[str, str], run: Runner = _run) -> TmuxReport:
    """Load `text` into a tmux buffer (forwarding it with `-w`) and read the options that
    decide the rest. Blocking (a few tmux commands): call off the UI thread. Never raises."""
    exe = shutil.which("tmux", path=env.get("PATH"))
    socket = env.get("TMUX", "").split(",")[0]
    if not exe or not socket:
        return TmuxReport(error="the tmux program was not found")
    base = [exe, "-S", socket]
    pane = ["-t", env["TMUX_PANE"]] if env.get("TMUX_PANE") else []
    try:
        info = run([*base, "display-message", "-p", *pane, "#{client_tty}\t#{client_termname}"],
                   None)
        if info.returncode != 0:
            return TmuxReport(error=clean(info.stderr.strip()) or "tmux did not answer")
        client, _, term = info.stdout.rstrip("\n").partition("\t")
        set_clipboard = _option(run([*base, "show-options", "-gv", "set-clipboard"], None))
        passthrough = run([*base, "show-options", "-Apv", *pane, "allow-passthrough"], None)
        terminals = run([*base, "show-messages", "-T"], None).stdout if client else ""
        target = ["-t", client] if client else []
        loaded = run([*base, "load-buffer", "-w", *target, "-"], text)
        sent = loaded.returncode == 0 and bool(client)
        if loaded.returncode != 0:  # tmux before 3.2 has no -w
            loaded = run([*base, "load-buffer", "-"], text)
    except (OSError, subprocess.SubprocessError) as e:
        return TmuxReport(error=clean(str(e)) or e.__class__.__name__)
    return TmuxReport(
        in_buffer=loaded.returncode == 0,
        sent_to_client=sent,
        client=client,
        term=term,
        has_ms=terminal_has_ms(terminals, client),
        set_clipboard=set_clipboard,
        # tmux before 3.3 has no such option and passes DCS sequences through always.
        passthrough=(_option(passthrough) if passthrough.returncode == 0
                     else "on" if "invalid option" in passthrough.stderr else ""),
    )


def _option(done: subprocess.CompletedProcess[str]) -> str:
    return done.stdout.strip() if done.returncode == 0 else ""


def terminal_has_ms(show_messages_t: str, client_tty: str) -> bool | None:
    """From `tmux show-messages -T`: can tmux set the clipboard of the terminal on
    `client_tty` (its `Ms` capability)? None when that terminal is not listed."""
    current = False
    for line in show_messages_t.splitlines():
        if line.startswith("Terminal "):
            current = f" for {client_tty}," in line
        elif current and line.split(":", 1)[-1].startswith(" Ms:"):
            return "[missing]" not in line
    return None


def copy_text(text: str, what: str, env: Mapping[str, str] | None = None) -> CopyOutcome:
    """Copy `text` (cleaned here): asks tmux when inside it, so call off the UI thread."""
    env = os.environ if env is None else env
    text = clean(text)
    report = ask_tmux(text, env) if env.get("TMUX") else None
    return plan_copy(text, what, env, report)


# -- writing a copy to a file --------------------------------------------------------------


def write_copy_file(text: str, directory: Path, name: str) -> Path:
    """Write `text` (cleaned) to a new file `name` in `directory`, never overwriting (a
    ``-N`` suffix is added instead); return its path."""
    make_private_dirs(directory)  # the user's save folder: an existing one keeps its mode
    safe = safe_filename(name, default="copy.txt")
    stem, dot, ext = safe.rpartition(".")
    if not dot or not stem:
        stem, ext = safe, "txt"
    for n in range(1000):
        path = directory / (f"{stem}.{ext}" if n == 0 else f"{stem}-{n}.{ext}")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(clean(text))
        return path
    raise FileExistsError(f"too many copy files named {stem}-N.{ext} in {directory}")

"""Copying: the tmux decision per option set, asking tmux, code blocks as the transcript
shows them (markdown-it), file names and extensions."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import pytest

from llama_tui.ui.clipboard import (
    TmuxReport,
    ask_tmux,
    osc52,
    plan_copy,
    plan_tmux_copy,
    terminal_has_ms,
    tmux_passthrough,
    write_copy_file,
)
from llama_tui.ui.code_blocks import code_blocks, extension_for

TEXT = "Paris is the capital."
BARE = osc52(TEXT)
WRAPPED = tmux_passthrough(BARE)
TMUX_ENV = {"TMUX": "/tmp/tmux-1/default,42,0", "TMUX_PANE": "%3", "PATH": "/usr/bin:/bin"}
ATTACHED = {"client": "/dev/pts/7", "term": "xterm-256color"}


def _payload(seq: str) -> str:
    return base64.b64decode(seq.split(";c;")[1].split("\x07")[0]).decode()


# -- the decision, per tmux configuration ----------------------------------------------------


def test_default_tmux_forwards_through_load_buffer_w() -> None:
    # set-clipboard external (the default), terminal with Ms: tmux itself sets the clipboard.
    r = TmuxReport(in_buffer=True, sent_to_client=True, has_ms=True, set_clipboard="external",
                   passthrough="off", **ATTACHED)
    out = plan_tmux_copy(TEXT, "the last reply", r)
    assert out.sequence == "" and not out.warning
    assert "to your clipboard through tmux" in out.message and "paste buffer" in out.message


def test_terminal_without_clipboard_names_terminal_features() -> None:
    r = TmuxReport(in_buffer=True, sent_to_client=True, has_ms=False, set_clipboard="on",
                   passthrough="off", **ATTACHED)
    out = plan_tmux_copy(TEXT, "the last reply", r)
    assert out.sequence == "" and out.warning
    assert "tmux paste buffer" in out.message and "not to your terminal's clipboard" in out.message
    assert "set -as terminal-features ',xterm-256color:clipboard'" in out.message
    assert "allow-passthrough on" in out.message


def test_allow_passthrough_sends_the_wrapped_sequence() -> None:
    r = TmuxReport(in_buffer=True, sent_to_client=True, has_ms=False, set_clipboard="external",
                   passthrough="on", **ATTACHED)
    out = plan_tmux_copy(TEXT, "the last reply", r)
    assert out.sequence == WRAPPED and not out.warning
    assert _payload(out.sequence) == TEXT
    assert "passthrough" in out.message


def test_old_tmux_with_set_clipboard_on_gets_the_bare_sequence() -> None:
    # No `load-buffer -w` (tmux < 3.2), passthrough off: the bare OSC 52 is what tmux takes.
    r = TmuxReport(in_buffer=True, sent_to_client=False, has_ms=True, set_clipboard="on",
                   passthrough="off", **ATTACHED)
    out = plan_tmux_copy(TEXT, "x", r)
    assert out.sequence == BARE and not out.warning


def test_old_tmux_without_set_clipboard_on_says_so() -> None:
    r = TmuxReport(in_buffer=True, sent_to_client=False, has_ms=True, set_clipboard="external",
                   passthrough="off", **ATTACHED)
    out = plan_tmux_copy(TEXT, "x", r)
    assert out.warning and "set -g set-clipboard on" in out.message


def test_no_client_attached() -> None:
    r = TmuxReport(in_buffer=True, set_clipboard="external", passthrough="off")
    out = plan_tmux_copy(TEXT, "x", r)
    assert out.warning and "no tmux client is attached" in out.message


def test_tmux_unreachable_sends_both_forms_and_says_why() -> None:
    out = plan_tmux_copy(TEXT, "x", TmuxReport(error="no server running"))
    assert out.sequence == WRAPPED + BARE and out.warning
    assert "no server running" in out.message and "set-clipboard on" in out.message


def test_outside_tmux_bare_and_screen_chunked() -> None:
    assert plan_copy(TEXT, "x", {}, None).sequence == BARE
    long = "y" * 3000
    seq = plan_copy(long, "x", {"STY": "1.pts-0"}, None).sequence
    chunks = seq.split("\x1b\\")[:-1]
    assert len(chunks) > 1 and all(c.startswith("\x1bP") for c in chunks)
    assert "".join(c.removeprefix("\x1bP") for c in chunks) == osc52(long)


def test_copied_text_is_sanitised() -> None:
    out = plan_copy("a\x1b]52;c;ZXZpbA==\x07b", "x", {}, None)
    assert "\x1b" not in _payload(out.sequence)


# -- asking tmux -----------------------------------------------------------------------------

SHOW_T = """Terminal 0: screen for /dev/pts/2, flags=0x20:
 191: Ms: (string) \\033]52;%p1%s;%p2%s\\a
Terminal 1: xterm-256color for /dev/pts/7, flags=0x20:
 190: Ml: [missing]
 192: Ms: [missing]
"""


def test_terminal_has_ms_reads_the_clients_terminal() -> None:
    assert terminal_has_ms(SHOW_T, "/dev/pts/7") is False
    assert terminal_has_ms(SHOW_T, "/dev/pts/2") is True
    assert terminal_has_ms(SHOW_T, "/dev/pts/9") is None


class FakeTmux:
    """Answers tmux commands from a table keyed by the subcommand; records the calls."""

    def __init__(self, answers: dict[str, tuple[int, str, str]]) -> None:
        self.answers = answers
        self.calls: list[tuple[list[str], str | None]] = []

    def __call__(self, args: list[str], stdin: str | None) -> subprocess.CompletedProcess[str]:
        self.calls.append((args, stdin))
        key = args[3] + (" -w" if "-w" in args else "")
        if args[3] == "show-options":
            key += " " + args[-1]
        rc, out, err = self.answers.get(key, (0, "", ""))
        return subprocess.CompletedProcess(args, rc, out, err)


def test_ask_tmux_default_configuration() -> None:
    run = FakeTmux({
        "display-message": (0, "/dev/pts/7\txterm-256color\n", ""),
        "show-options set-clipboard": (0, "external\n", ""),
        "show-options allow-passthrough": (0, "off\n", ""),
        "show-messages": (0, SHOW_T.replace(" 192: Ms: [missing]", " 192: Ms: (string) x"), ""),
    })
    r = ask_tmux(TEXT, TMUX_ENV, run)
    assert r == TmuxReport(in_buffer=True, sent_to_client=True, client="/dev/pts/7",
                           term="xterm-256color", has_ms=True, set_clipboard="external",
                           passthrough="off")
    socket = [a for a in run.calls[0][0][1:3]]
    assert socket == ["-S", "/tmp/tmux-1/default"]
    load = next(c for c in run.calls if "load-buffer" in c[0])
    assert load[0][-4:] == ["-w", "-t", "/dev/pts/7", "-"] and load[1] == TEXT


def test_ask_tmux_old_versions() -> None:
    # tmux 3.1: no allow-passthrough (it always passes DCS through), no load-buffer -w.
    run = FakeTmux({
        "display-message": (0, "/dev/pts/7\tscreen\n", ""),
        "load-buffer -w": (1, "", "unknown flag -w"),
    })
    run.answers["show-options allow-passthrough"] = (1, "", "invalid option: allow-passthrough")
    r = ask_tmux(TEXT, TMUX_ENV, run)
    assert r.passthrough == "on" and r.in_buffer and not r.sent_to_client
    assert plan_tmux_copy(TEXT, "x", r).sequence == WRAPPED


def test_ask_tmux_failures_become_the_report_error() -> None:
    r = ask_tmux(TEXT, TMUX_ENV, FakeTmux({"display-message": (1, "", "no server running\n")}))
    assert r.error == "no server running"

    def broken(args: list[str], stdin: str | None) -> subprocess.CompletedProcess[str]:
        raise subprocess.TimeoutExpired(args, 3)

    assert ask_tmux(TEXT, TMUX_ENV, broken).error
    assert ask_tmux(TEXT, {**TMUX_ENV, "PATH": "/nonexistent"}).error == (
        "the tmux program was not found")


# -- code blocks, as the transcript renders them ------------------------------------------------

LIST_AND_QUOTE = """Steps:

1. Install it:

   ```bash
   pip install thing
     --upgrade
   ```

2. Then:
   ```python
   def f():
       return 1
   ```

> In a quote:
> ```js
> console.log(1)
> ```

- item

      indented code in a list item

~~~ rust extra words
fn main() {}
"""


def test_code_blocks_in_lists_and_blockquotes_lose_their_indentation() -> None:
    blocks = code_blocks(LIST_AND_QUOTE)
    assert [b.language for b in blocks] == ["bash", "python", "js", "", "rust"]
    assert blocks[0].code == "pip install thing\n  --upgrade\n"
    assert blocks[1].code == "def f():\n    return 1\n"
    assert blocks[2].code == "console.log(1)\n"  # no "> "
    assert blocks[3].code == "indented code in a list item\n"
    assert blocks[4].code == "fn main() {}\n"  # unclosed: runs to the end


def test_not_a_fence_is_not_a_block() -> None:
    assert code_blocks("inline ``` three backticks ``` here\n\n`code`") == []


def test_language_extensions() -> None:
    assert [extension_for(x) for x in ("python", "Python", "bash", "rust", "c++", "weird", "")] \
        == ["py", "py", "sh", "rs", "cpp", "txt", "txt"]
    assert [b.extension for b in code_blocks(LIST_AND_QUOTE)] == ["sh", "py", "js", "txt", "rs"]


@pytest.mark.parametrize("name", ["2026-11-29-chat-code-1.py", "x-reply.md"])
def test_write_copy_file_keeps_extension_and_never_overwrites(tmp_path: Path, name: str) -> None:
    first = write_copy_file("a", tmp_path, name)
    second = write_copy_file("b\x1b[2J", tmp_path, name)
    assert first.name == name
    stem, ext = name.rsplit(".", 1)
    assert second.name == f"{stem}-1.{ext}" and "\x1b" not in second.read_text()
    assert first.read_text() == "a"


def test_write_copy_file_creates_every_missing_folder_private(tmp_path: Path) -> None:
    """Each folder it creates is 0700, parents included (mkdir's mode covers only the last
    one); a folder that already exists keeps its mode."""
    import stat

    tmp_path.chmod(0o755)
    path = write_copy_file("a", tmp_path / "Documents" / "llama-tui", "x.txt")
    for folder in (path.parent, path.parent.parent):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o755

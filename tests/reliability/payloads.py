"""Hostile strings shared by the reliability tests.

Each terminal payload comes with `residue`: substrings of the sequence's parameters that
must never reach the terminal (the sanitiser removes sequences whole, so not even their
parameters are shown). Visible markers around a payload must stay visible.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Payload:
    id: str
    seq: str
    residue: tuple[str, ...]


TERMINAL_PAYLOADS = [
    Payload("osc52-bel", "\x1b]52;c;UFdORUQ=\x07", ("52;c", "UFdORUQ")),
    Payload("osc52-st", "\x1b]52;p;cm0gLXJmIH4=\x1b\\", ("52;p", "cm0gLXJmIH4")),
    Payload("osc8-link", "\x1b]8;;https://evil.example/x\x1b\\click\x1b]8;;\x1b\\",
            ("evil.example", "8;;")),
    Payload("osc0-title", "\x1b]0;EVILTITLE\x07", ("EVILTITLE",)),
    Payload("osc2-title-st", "\x1b]2;EVILTITLE\x1b\\", ("EVILTITLE",)),
    Payload("csi-cursor-up-erase", "\x1b[3A\x1b[2K", ("[3A", "[2K")),
    Payload("csi-clear-home", "\x1b[2J\x1b[H", ("[2J",)),
    Payload("csi-hvp-save-restore", "\x1b7\x1b[10;10f\x1b8", ("[10;10f",)),
    Payload("csi-sgr-blink-reverse", "\x1b[5;7m", ("[5;7m",)),
    Payload("esc-c-reset", "\x1bc", ("\x1bc",)),
    Payload("mouse-mode", "\x1b[?1000h\x1b[?1006h", ("?1000h", "?1006h")),
    Payload("device-status-report", "\x1b[6n\x1b[21t", ("[6n", "[21t")),
    Payload("dcs-tmux-passthrough", "\x1bPtmux;\x1b\x1b]52;c;UFdORUQ=\x07\x1b\\",
            ("tmux;", "UFdORUQ")),
    Payload("apc", "\x1b_Gf=100;AAAA\x1b\\", ("Gf=100",)),
    Payload("c1-csi", "\x9b2J\x9b?1000h", ("2J", "?1000h")),
    Payload("c1-osc", "\x9d52;c;UFdORUQ=\x9c", ("52;c", "UFdORUQ")),
    Payload("c1-osc-bel", "\x9d0;EVILTITLE\x07", ("EVILTITLE",)),
    Payload("bell-and-nul", "\x07\x00\x0b\x0c", ()),
]

# Text that moves the cursor back over what came before: after sanitising, all of it shows.
HIDING_PAYLOADS = [
    ("carriage-return", "SAFEPART\rEVILPART", "SAFEPARTEVILPART"),
    ("backspaces", "rmrfhome" + "\x08" * 8 + "echohi", "rmrfhomeechohi"),
    ("crlf-is-newline", "LINEONE\r\nLINETWO", "LINETWO"),
    ("del", "KEEP\x7fTHIS", "KEEPTHIS"),
]

# Markup-shaped text: Textual markup / Rich markup would crash on or act on these.
MARKUP_PAYLOADS = [
    "[/INST]",
    "list[/] end",
    "[b unterminated",
    "[link=https://evil.example]x[/link]",
    "[@click=app.quit]x[/]",
    "arr[0] [red]",
    "[INST] hello [/INST]",
    "[$accent]var[/]",
]


def chunkings(s: str, how: str, seed: int = 0) -> list[str]:
    """Split `s` into streamed chunks: whole, one per character, or random cuts."""
    if how == "whole":
        return [s]
    if how == "per-char":
        return list(s)
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(s)), min(len(s) - 1, max(1, len(s) // 4))))
    return [s[a:b] for a, b in zip([0, *cuts], [*cuts, len(s)], strict=True)]

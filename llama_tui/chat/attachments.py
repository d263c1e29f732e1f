"""Reading files to attach to the next message (`/read` in the TUI, `--file` headless).

One rule for both front ends:

- `expand_paths` turns what the user typed into paths: shell-like words (quote a name with
  spaces), ``~`` expanded, relative to the working directory, a word with ``*``, ``?`` or
  ``[`` a glob (sorted; ``**`` recursive) unless a file has that very name.
- `read_attachment` reads one file and refuses, with a cause and a fix
  (`AttachmentError`): a path that is missing, unreadable, a folder or not a regular file
  (a device such as /dev/zero, a FIFO or a socket: the check comes before any read, and
  the file is opened non-blocking, so none of them can hang the app); a file over the size
  cap (the ``attach_max_kb`` setting); and a binary file (NUL bytes, or not UTF-8).
  The text is sanitised like any untrusted text (`session.attachments.sanitise_content`).
- `count_tokens` counts each file's block with the model's own tokenizer (chat template
  included, the template's fixed cost taken off), or estimates chars / 4 when there is no
  model yet or the backend itself only estimates.
- `check_fits` refuses files whose total cannot fit the context with room for the reply.

What the model then gets is `session.attachments.model_text`. No textual, no torch.
"""

from __future__ import annotations

import glob
import itertools
import math
import os
import shlex
import stat
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from llama_tui.core.backend import Backend, ChatMessage
from llama_tui.core.errors import LlamaTuiError
from llama_tui.session.attachments import (
    Attachment,
    file_block,
    human_size,
    one_line_name,
    sanitise_content,
)

__all__ = [
    "MAX_FILES",
    "AttachmentError",
    "check_fits",
    "count_tokens",
    "estimate_tokens",
    "expand_paths",
    "read_attachment",
]

MAX_FILES = 32  # files in one message: a glob such as ~/** must not read a whole home folder
CHARS_PER_TOKEN = 4  # the estimate without a tokenizer (the remote backend's, too)
_BINARY_SNIFF = 8192  # bytes looked at for NUL


class AttachmentError(LlamaTuiError):
    """A file that cannot be attached; the cause names the file."""


def _shown(path: str) -> str:
    """A path as messages and the model show it: the home folder as ``~``."""
    home = os.path.expanduser("~")
    if home not in ("", "/", "~") and (path == home or path.startswith(home + os.sep)):
        return "~" + path[len(home) :]
    return path


def expand_paths(words: str | Sequence[str], cwd: Path | None = None) -> list[tuple[Path, str]]:
    """(path, name shown) for each file named by `words` (a typed line, or words already
    split by the shell), in order, without repeats. Raises `AttachmentError` for a line
    that cannot be split, a glob that matches nothing, or more than `MAX_FILES` files."""
    if isinstance(words, str):
        try:
            words = shlex.split(words)
        except ValueError as e:
            raise AttachmentError(
                f"Cannot read the file names: {e}.", 'Quote a name with spaces as "my notes.txt".'
            ) from None
    base = cwd or Path.cwd()
    out: list[tuple[Path, str]] = []
    seen: set[Path] = set()
    for word in words:
        expanded = os.path.expanduser(word)
        full = base / expanded
        if glob.has_magic(expanded) and not os.path.lexists(full):
            # Folders a pattern matches are passed over (`src/*` means its files). At most
            # one match past the limit is looked for: `~/**` must not walk a whole home
            # folder before saying it is too many.
            found_iter = glob.iglob(expanded, root_dir=base, recursive=True)
            files = (m for m in found_iter if not os.path.isdir(base / m))
            matches = sorted(itertools.islice(files, MAX_FILES + 1))
            if not matches:
                raise AttachmentError(
                    f"No file matches {one_line_name(word)}.",
                    f"Check the pattern; it is relative to {one_line_name(_shown(str(base)))}.",
                )
            found = [(base / m, _shown(m)) for m in matches]
        else:
            found = [(full, _shown(expanded))]
        for path, shown in found:
            if path not in seen:
                seen.add(path)
                out.append((path, shown))
    if len(out) > MAX_FILES:
        raise AttachmentError(
            f"That names more than {MAX_FILES} files, the most one message takes.",
            "Name fewer files, or a narrower pattern.",
        )
    return out


def read_attachment(path: Path, name: str, max_bytes: int) -> Attachment:
    """The file at `path` as an attachment called `name` (its tokens not counted yet), or
    `AttachmentError` saying why not and what to do."""
    shown = one_line_name(name)
    try:
        info = path.stat()  # follows links: what matters is what would be read
    except FileNotFoundError:
        raise AttachmentError(
            f"{shown} does not exist.",
            f"Check the name; a relative path starts in {one_line_name(_shown(str(Path.cwd())))}.",
        ) from None
    except OSError as e:
        raise _os_error(shown, e) from None
    _check_kind(shown, info.st_mode)
    if info.st_size > max_bytes:
        raise _too_big(shown, info.st_size, max_bytes)
    try:
        # O_NONBLOCK: a FIFO put in the file's place since the check must not hang us.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except OSError as e:
        raise _os_error(shown, e) from None
    with os.fdopen(fd, "rb") as f:
        _check_kind(shown, os.fstat(fd).st_mode)
        try:
            data = f.read(max_bytes + 1)  # the file may have grown since stat
        except OSError as e:
            raise _os_error(shown, e) from None
    if len(data) > max_bytes:
        raise _too_big(shown, len(data), max_bytes)
    return Attachment(name=shown, content=_decode(shown, data), size=len(data))


def _check_kind(shown: str, mode: int) -> None:
    if stat.S_ISDIR(mode):
        raise AttachmentError(
            f"{shown} is a folder.", f"Name the files in it, e.g. /read {shown}/*.py."
        )
    if not stat.S_ISREG(mode):
        raise AttachmentError(
            f"{shown} is not a regular file (a device, pipe or socket).",
            "Attach a text file; save the output to a file first.",
        )


def _os_error(shown: str, e: OSError) -> AttachmentError:
    if isinstance(e, PermissionError):
        return AttachmentError(
            f"{shown} cannot be read: permission denied.",
            "Check its permissions (ls -l), or copy it somewhere readable.",
        )
    reason = e.strerror or type(e).__name__
    return AttachmentError(f"{shown} cannot be read: {reason}.", "Check the path.")


def _too_big(shown: str, size: int, max_bytes: int) -> AttachmentError:
    return AttachmentError(
        f"{shown} is {human_size(size)}, over the {max_bytes // 1024} KiB limit for an "
        "attached file.",
        "Attach a smaller part of it, or raise attach_max_kb in config.toml "
        "(LLAMA_TUI_ATTACH_MAX_KB).",
    )


def _decode(shown: str, data: bytes) -> str:
    if b"\x00" in data[:_BINARY_SNIFF]:
        raise AttachmentError(
            f"{shown} looks binary (it has NUL bytes), not text.",
            "Attach text files only (source, notes, logs, CSV, JSON).",
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise AttachmentError(
            f"{shown} is not UTF-8 text (byte {e.start} cannot be decoded); it may be binary.",
            "Attach text files only; convert other encodings first, e.g. iconv -f latin1 -t utf-8.",
        ) from None
    return sanitise_content(text)


# -- tokens --------------------------------------------------------------------------------


def estimate_tokens(text: str) -> int:
    """Tokens without a tokenizer: chars / 4, rounded up."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def count_tokens(backend: Backend | None, files: Sequence[Attachment]) -> list[Attachment]:
    """`files` with their token counts: each file's block counted by the model's tokenizer
    less an empty message's (the template's fixed cost), else estimated. Blocking (a remote
    backend asks its server): call it off the UI thread, holding the model's lock."""
    out: list[Attachment] = []
    baseline: int | None = None
    for a in files:
        tokens: int | None = None
        if backend is not None:
            try:
                if baseline is None:
                    baseline = backend.count_tokens([ChatMessage("user", "")])
                tokens = max(
                    0, backend.count_tokens([ChatMessage("user", file_block(a))]) - baseline
                )
            except Exception:  # no tokenizer yet, a template that refuses: estimate
                tokens = None
        estimated = tokens is None or bool(getattr(backend, "token_count_approximate", False))
        if tokens is None:
            tokens = estimate_tokens(file_block(a))
        out.append(replace(a, tokens=tokens, estimated=estimated))
    return out


def check_fits(
    files: Sequence[Attachment], context_length: int | None, max_new_tokens: int
) -> None:
    """`AttachmentError` when the files alone cannot fit the context with room for the
    reply (older messages are left out to make room, the new message never is)."""
    if not context_length or not files:
        return
    total = sum(a.tokens or 0 for a in files)
    room = context_length - max_new_tokens
    if total <= room:
        return
    approx = "about " if any(a.estimated for a in files) else ""
    what = files[0].name if len(files) == 1 else f"{len(files)} files"
    raise AttachmentError(
        f"{what} would take {approx}{total} tokens, but the context holds {context_length} "
        f"with {max_new_tokens} kept for the reply ({max(room, 0)} left for the message).",
        "Attach fewer or smaller files, lower max new tokens (/set max_new_tokens N), or use "
        "a model with a longer context.",
    )

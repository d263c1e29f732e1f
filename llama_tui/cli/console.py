"""Exit codes and stderr messages, shared by the command line and headless mode.

Everything here writes to stderr only (stdout carries the headless reply and nothing else),
sanitised and redacted. Imports nothing heavy.
"""

from __future__ import annotations

import sys
from typing import IO, Any

from llama_tui.core import errors as core_errors
from llama_tui.text import clean, redact

__all__ = [
    "EXIT_BROKEN_PIPE",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "describe_error",
    "err",
    "isatty",
]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141


def err(msg: str) -> None:
    """One message to stderr, sanitised and redacted."""
    try:
        sys.stderr.write(redact(clean(msg)).rstrip("\n") + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def isatty(stream: IO[str] | Any) -> bool:
    """Whether `stream` is a terminal; False for anything that cannot say."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def describe_error(exc: BaseException) -> str:
    """`llama_tui.core.errors.describe_error` as stderr text: the cause, then the fix."""
    cause, fix, _kind = core_errors.describe_error(exc)
    return f"{cause}\n{fix}" if fix else cause

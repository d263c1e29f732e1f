"""Logging to a private file, never to the terminal, with secrets redacted.

While the TUI runs, anything written to the terminal by a log handler corrupts the screen,
and transformers / huggingface_hub install their own stderr handlers. `setup_logging`:

- sends the root logger to `locations.log_file()` (directory 0700, file 0600), through a
  filter that redacts token-shaped strings (`text.redact`) and strips control characters;
- removes terminal handlers from the root logger and from transformers' and
  huggingface_hub's library loggers, and makes them propagate to the file instead;
- routes `warnings.warn` to the log (`logging.captureWarnings`);
- makes the file handler the `logging.lastResort`, so a logger with no handler never falls
  back to stderr;
- installs a post-import hook so the same happens to transformers / huggingface_hub when
  they are imported later (lazily, in a worker thread). `quiet_libraries()` does it by hand.

Nothing here imports torch, transformers or textual.
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import logging
import os
import sys
import threading
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llama_tui import locations
from llama_tui.atomic import make_private_dirs
from llama_tui.text import clean, redact

__all__ = ["RedactingFilter", "quiet_libraries", "setup_logging"]

LIBRARY_LOGGERS = ("transformers", "huggingface_hub", "accelerate", "bitsandbytes", "torch")
_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(threadName)s] %(message)s"
_lock = threading.Lock()
_handler: logging.Handler | None = None
_original_last_resort: logging.Handler | None = logging.lastResort


class RedactingFilter(logging.Filter):
    """Redacts token-shaped strings and control characters from every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not lose the record
            message = f"{record.msg!r} {record.args!r}"
        record.msg = redact(clean(message)) if message else message
        record.args = None
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            # Format now, so the traceback text is redacted too.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(clean(record.exc_text))
        record.exc_info = None if record.exc_text else record.exc_info
        return True


def _private_file(path: Path) -> Path:
    make_private_dirs(path.parent, chmod_existing=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)
    return path


def _is_terminal_handler(h: logging.Handler) -> bool:
    """A handler that writes to stdout / stderr or a terminal (not a file handler).

    Plain `logging.StreamHandler`s count whatever their stream is: libraries create them on
    ``sys.stderr`` at that moment, which may be a wrapper (Textual redirects it while it runs).
    Subclasses (pytest's capture handler, for one) count only when they write to a terminal.
    """
    if isinstance(h, logging.FileHandler) or not isinstance(h, logging.StreamHandler):
        return False
    if type(h) is logging.StreamHandler:
        return True
    stream = getattr(h, "stream", None)
    if stream is None:
        return False
    return stream in (sys.stderr, sys.stdout, sys.__stderr__, sys.__stdout__) or _safe_isatty(
        stream
    )


def _safe_isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (ValueError, OSError):
        return False


def quiet_libraries(names: Sequence[str] = LIBRARY_LOGGERS) -> None:
    """Detach terminal handlers of library loggers; they propagate to our file instead.

    Safe to call at any time and more than once. Call it after importing transformers if
    `setup_logging` has not installed its import hook.
    """
    for name in names:
        lg = logging.getLogger(name)
        for h in list(lg.handlers):
            if _is_terminal_handler(h):
                lg.removeHandler(h)
        lg.propagate = True
    tlog = sys.modules.get("transformers.utils.logging")
    if tlog is not None:
        _quiet_transformers(tlog)


def _quiet_transformers(tlog: types.ModuleType) -> None:
    """transformers' public logging API: no stderr handler, propagate to ours, no bars.

    `disable_default_handler` also creates the default handler first if transformers has
    not yet, so it cannot be added (to stderr) later. Progress bars from transformers' own
    tqdm wrapper write to stderr too.
    """
    for name in ("disable_default_handler", "enable_propagation", "disable_progress_bar"):
        call = getattr(tlog, name, None)
        if callable(call):
            with contextlib.suppress(Exception):
                call()


# Modules whose import should be followed by `quiet_libraries()`.
_HOOKED = frozenset({"transformers.utils.logging", "huggingface_hub.utils.logging"})


class _QuietAfterImport:
    """Runs `quiet_libraries()` right after a library's logging module executes.

    A meta path finder by its `find_spec` alone: subclassing `importlib.abc.MetaPathFinder`
    would import importlib.abc and importlib.resources (~1.5 ms before the TUI's first paint).
    """

    def __init__(self) -> None:
        self._busy: set[str] = set()

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: types.ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in _HOOKED or fullname in self._busy:
            return None
        self._busy.add(fullname)
        try:
            spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        finally:
            self._busy.discard(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        loader: Any = spec.loader
        original = loader.exec_module

        def exec_module(module: types.ModuleType) -> None:
            original(module)
            name = module.__name__.split(".")[0]
            quiet_libraries((name,))

        loader.exec_module = exec_module
        return spec


_hook: _QuietAfterImport | None = None


def _install_hook() -> None:
    global _hook
    if _hook is None:
        _hook = _QuietAfterImport()
        sys.meta_path.insert(0, _hook)


def setup_logging(level: int = logging.INFO, path: Path | None = None) -> Path:
    """Route all logging to the private log file; return its path. Idempotent.

    After this, no logging handler writes to the terminal: the TUI owns it, and headless
    mode keeps stdout for the reply and stderr for our own messages.
    """
    global _handler
    target = locations.log_file() if path is None else path
    with _lock:
        _private_file(target)
        root = logging.getLogger()
        for h in list(root.handlers):
            if _is_terminal_handler(h) or h is _handler:
                root.removeHandler(h)
        handler = logging.FileHandler(target, encoding="utf-8", delay=False)
        handler.setFormatter(logging.Formatter(_FORMAT))
        handler.addFilter(RedactingFilter())
        root.addHandler(handler)
        root.setLevel(level)
        if _handler is not None:
            _handler.close()
        _handler = handler
        logging.lastResort = handler
        logging.captureWarnings(True)
        quiet_libraries()
        _install_hook()
    return target


def teardown_logging() -> None:
    """Undo `setup_logging` (tests)."""
    global _handler, _hook
    with _lock:
        root = logging.getLogger()
        if _handler is not None:
            root.removeHandler(_handler)
            _handler.close()
            if logging.lastResort is _handler:
                logging.lastResort = _original_last_resort
            _handler = None
        logging.captureWarnings(False)
        if _hook is not None:
            with contextlib.suppress(ValueError):
                sys.meta_path.remove(_hook)
            _hook = None

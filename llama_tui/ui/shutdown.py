"""The end of the process: a crash report with no secrets, and making sure the process
ends after a signal or with worker threads still running."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import traceback

from rich.text import Text

from llama_tui.text import clean, redact

log = logging.getLogger(__name__)


def crash_report(error: BaseException) -> tuple[Text, Text]:
    """A plain, redacted traceback and what to do next (never Rich's locals)."""
    tb = redact(clean("".join(traceback.format_exception(error))))
    hint = (
        "\nllama-tui stopped on an internal error (above). The conversation is saved: "
        "`llama-tui --resume` reopens it. Please report this traceback.\n"
    )
    return Text(tb), Text(hint)


def arm_exit_watchdog(code: int, delay: float) -> None:
    """After SIGHUP / SIGTERM the journal is flushed; make sure the process really ends.

    With the terminal gone, Textual's shutdown can block for good writing to it (its output
    queue is full and nothing drains it), and the process would keep the model's memory
    forever. A daemon thread ends the process `delay` seconds later if it is still alive.
    """

    def watchdog() -> None:
        time.sleep(delay)
        log.warning("shutdown after signal took over %.0f s; exiting now", delay)
        with contextlib.suppress(Exception):
            logging.shutdown()
        os._exit(code)

    threading.Thread(target=watchdog, name="llama-tui-exit-watchdog", daemon=True).start()


def threads_finished(timeout: float) -> bool:
    """Join the other non-daemon threads for up to `timeout` s; True when none is left."""
    deadline = time.monotonic() + timeout
    others = [t for t in threading.enumerate()
              if t is not threading.main_thread() and not t.daemon]
    for t in others:
        t.join(max(0.0, deadline - time.monotonic()))
    return not any(t.is_alive() for t in others)

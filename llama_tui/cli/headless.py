"""Headless mode (``llama-tui --prompt TEXT``): one reply to stdout, then exit.

Output contract: stdout carries the reply and nothing else (so it pipes), streamed as it is
generated and ended with a newline. It is always sanitised with `StreamCleaner`, tty or not:
the reply is untrusted and a pipe usually ends in a terminal or a file someone will `cat`.
Everything else (progress when stderr is a terminal, errors with their cause and fix) goes
to stderr, redacted; library logging goes to the log file. Every run is journaled like a
TUI turn (a new session, or with ``--resume`` the same one), so a later ``--resume`` shows
it; with ``--save`` the conversation is also written out.

`run_headless` returns the exit code (`llama_tui.cli.console`): 0 done, 1 error, 2 usage error,
130 interrupted (what was printed stays), 141 stdout closed early. torch, transformers and
the session store are imported only when a reply is asked for.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from dataclasses import asdict
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from llama_tui.cli.console import (
    EXIT_BROKEN_PIPE,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    describe_error,
    err,
    isatty,
)
from llama_tui.config.settings import LoadedSettings
from llama_tui.text import StreamCleaner, clean, looks_like_token, redact

if TYPE_CHECKING:
    from llama_tui.core.backend import LoadProgress

__all__ = ["run_headless"]

# Logged under the command line's name, as before headless mode had its own module.
log = logging.getLogger("llama_tui.cli.main")


def _progress_printer() -> Any:
    """A `ProgressCallback` that reports loading on stderr, only when it is a terminal."""
    if not isatty(sys.stderr):
        return None
    state = {"inline": False}

    def report(p: LoadProgress) -> None:
        msg = redact(clean(p.message))
        try:
            if p.fraction is not None:
                sys.stderr.write(f"\r\x1b[K{msg} {p.fraction * 100:3.0f}%")
                state["inline"] = True
            else:
                if state["inline"]:
                    sys.stderr.write("\n")
                    state["inline"] = False
                sys.stderr.write(f"{msg}\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass

    return report


def _read_prompt(value: str) -> str | None:
    if value == "-":
        try:
            # Trailing newlines are not part of the prompt (`echo` adds one, and it changes
            # the reply); strip them as shells do for $(...).
            return sys.stdin.read().rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as e:
            err(f"llama-tui: error: cannot read the prompt from stdin: {e}")
            return None
    return value


def _store() -> Any:
    """The session store module, or None with an error printed."""
    try:
        from llama_tui.session import store
    except ImportError as e:
        err(f"llama-tui: error: saving and resuming sessions is not available ({e})")
        return None
    return store


def run_headless(loaded: LoadedSettings, args: dict[str, Any], report: Any = None) -> int:
    """Answer ``args["prompt"]`` once on stdout with `loaded`'s settings; the exit code.

    `report` (``--json``: `llama_tui.cli.headless_json.JsonReport`) is told of an exception
    (`failed`) and of the finished turn (`finished`).
    """
    from llama_tui.session.transcript import Conversation

    settings = loaded.settings
    prompt = _read_prompt(str(args["prompt"]))
    if prompt is None:
        return EXIT_ERROR
    if not prompt.strip():
        err("llama-tui: error: the prompt is empty")
        return EXIT_USAGE

    store: Any = None
    resume = args.get("resume")
    save = args.get("save")
    if resume is not None or save is not None:
        store = _store()
        if store is None:
            return EXIT_ERROR
    if resume is not None:
        try:
            target = resume or store.latest_session_id()
            if not target:
                err("llama-tui: error: there is no saved session to resume")
                return EXIT_ERROR
            conv = store.load_conversation(target)
        except Exception as e:
            err(
                f"llama-tui: error: cannot resume {resume or 'the last session'}: "
                f"{describe_error(e)}"
            )
            return EXIT_ERROR
        system_prompt = conv.system_prompt
        if loaded.sources.get("system_prompt") not in (None, "default"):
            system_prompt = settings.system_prompt
    else:
        conv = Conversation(system_prompt=settings.system_prompt)
        system_prompt = settings.system_prompt

    if settings.server is None and looks_like_token(settings.model):
        err(
            "llama-tui: error: the model id looks like an access token, so it was refused "
            "(it was not sent anywhere).\nPass a model id such as "
            "HuggingFaceTB/SmolLM2-135M-Instruct; to log in use `hf auth login`."
        )
        return EXIT_ERROR

    demo = loaded.sources.get("model", "default") == "default" and not settings.server
    if demo and isatty(sys.stderr):
        err("llama-tui: using the bundled demo model (choose another with --model)")

    # Journaled like a TUI turn, so the next --resume (TUI or headless) shows it. Made before
    # anything changes `conv`: an existing journal is then appended to as it is.
    from llama_tui.session.recorder import SessionRecorder, install_signal_flush

    recorder = SessionRecorder(conv, on_error=lambda t: err(f"llama-tui: warning: {t}"))
    restore_signals = install_signal_flush(lambda: recorder)
    try:
        code = _answer(conv, prompt, settings, system_prompt, recorder, report)
    finally:
        recorder.close()
        restore_signals()
    if report is not None:
        report.finished(conv, recorder)
    if code == EXIT_BROKEN_PIPE:
        return code

    if save is not None and conv.messages:
        path = Path(save).expanduser()
        overwrite = bool(resume) and _same_file(path, Path(str(resume)).expanduser())
        try:
            store.save_conversation(conv, path, overwrite=overwrite)
        except FileExistsError:
            err(f"llama-tui: error: {path} exists; choose another --save path")
            return EXIT_ERROR if code == EXIT_OK else code
        except Exception as e:
            err(f"llama-tui: error: could not save to {path}: {describe_error(e)}")
            return EXIT_ERROR if code == EXIT_OK else code
    return code


def _answer(
    conv: Any, prompt: str, settings: Any, system_prompt: str, recorder: Any, report: Any
) -> int:
    """Load the model, stream one reply to stdout and journal the turn; the exit code."""
    from llama_tui.core.backend import StopReason
    from llama_tui.engine.factory import make_backend

    cancel = threading.Event()
    backend: Any = None
    stdout = sys.stdout
    cleaner = StreamCleaner()
    reply: Any = None
    asked = False
    code = EXIT_OK
    try:
        backend = make_backend(settings)
        info = backend.load(_progress_printer())
        recorder.model_changed(asdict(info))
        recorder.settings_changed(settings.params.to_dict(), system_prompt)
        recorder.user_message(conv.add("user", prompt))  # fsynced before generating
        asked = True
        generation = backend.stream(conv.history(), settings.params, cancel)
        reply = conv.add("assistant", "", status="streaming")
        recorder.assistant_started(reply)
        for chunk in generation:
            reply.content += chunk
            recorder.assistant_progress(reply)
            out = cleaner.feed(chunk)
            if out:
                stdout.write(out)
                stdout.flush()
        stdout.write(cleaner.flush() + "\n")
        stdout.flush()
        stats = generation.stats
        reply.status = "complete"
        if stats is not None:
            reply.stats = stats.to_dict()
            if stats.stop_reason is StopReason.CANCELLED:
                reply.status = "stopped"
    except KeyboardInterrupt:
        cancel.set()
        _finish_line(stdout, cleaner, reply)
        err("llama-tui: interrupted")
        code = EXIT_INTERRUPTED
        if reply is not None:
            reply.status = "stopped"
    except BrokenPipeError:
        cancel.set()
        _silence_stdout()
        code = EXIT_BROKEN_PIPE
        if reply is not None:
            reply.status = "stopped"
    except Exception as e:
        cancel.set()
        if reply is not None and reply.content:
            _finish_line(stdout, cleaner, reply)
        log.exception("headless run failed")
        if report is not None:
            report.failed(e)
        error = describe_error(e)
        err(f"llama-tui: error: {error}")
        code = EXIT_ERROR
        if reply is None and asked:
            reply = conv.add("assistant", "")
        if reply is not None:
            reply.status, reply.error = "error", redact(clean(error))
    finally:
        if reply is not None:
            recorder.assistant_finished(reply)
        if backend is not None:
            try:
                backend.close()
            except Exception:  # closing must not hide the real outcome
                log.exception("closing the backend failed")
    return code


def _finish_line(stdout: IO[str], cleaner: StreamCleaner, reply: Any) -> None:
    """End the partial reply with a newline, keeping what was printed."""
    try:
        stdout.write(cleaner.flush() + ("\n" if reply is not None and reply.content else ""))
        stdout.flush()
    except (OSError, ValueError):
        pass


def _silence_stdout() -> None:
    """After EPIPE: point stdout at /dev/null so the interpreter's final flush is quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except (OSError, RuntimeError):
        return False

"""Headless mode (``llama-tui --prompt TEXT``): one reply to stdout, then exit.

Output contract: stdout carries the reply and nothing else (so it pipes), streamed as it is
generated and ended with a newline. It is always sanitised with `StreamCleaner`, tty or not:
the reply is untrusted and a pipe usually ends in a terminal or a file someone will `cat`.
Everything else (progress when stderr is a terminal, errors with their cause and fix) goes
to stderr, redacted; library logging goes to the log file. Every run is journaled like a
TUI turn (a new session, or with ``--resume`` the same one), so a later ``--resume`` shows
it; with ``--save`` the conversation is also written out.

The reply itself is the chat core's (`llama_tui.chat.reply.run_reply`, the same code the
TUI runs); this module only reads the prompt, opens the conversation, prints, and turns the
outcome into an exit code (`llama_tui.cli.console`): 0 done, 1 error, 2 usage error, 130
interrupted (what was printed stays), 141 stdout closed early. torch, transformers and the
session store are imported only when a reply is asked for.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

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
from llama_tui.core.errors import LlamaTuiError
from llama_tui.text import StreamCleaner, clean, looks_like_token, redact

if TYPE_CHECKING:
    from llama_tui.chat.state import ChatState
    from llama_tui.core.backend import Backend, LoadProgress
    from llama_tui.session.attachments import Attachment
    from llama_tui.session.recorder import SessionRecorder
    from llama_tui.session.transcript import Conversation

__all__ = ["HeadlessReport", "run_headless"]

log = logging.getLogger(__name__)


class HeadlessReport(Protocol):
    """Told what a run did (``--json``: `llama_tui.cli.headless_json.JsonReport`)."""

    def failed(self, exc: BaseException) -> None:
        """The run raised `exc` (already shown on stderr)."""

    def finished(self, conversation: Conversation, recorder: SessionRecorder) -> None:
        """The turn is over, whatever the outcome."""


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


def run_headless(
    loaded: LoadedSettings, args: dict[str, Any], report: HeadlessReport | None = None
) -> int:
    """Answer ``args["prompt"]`` once on stdout with `loaded`'s settings; the exit code.

    `report` is told of an exception (`failed`) and of the finished turn (`finished`).
    """
    prompt = _read_prompt(str(args["prompt"]))
    if prompt is None:
        return EXIT_ERROR
    if not prompt.strip():
        err("llama-tui: error: the prompt is empty")
        return EXIT_USAGE
    resume, save = args.get("resume"), args.get("save")
    save_path = Path(save).expanduser() if save is not None else None
    if save_path is not None and _save_path_taken(save_path, resume):
        return EXIT_ERROR  # before the model loads and the reply is generated for nothing
    store: Any = None
    if resume is not None or save is not None:
        from llama_tui.session import store as session_store

        store = session_store
    opened = _open_conversation(loaded, resume, store)
    if isinstance(opened, int):
        return opened
    conv, system_prompt = opened
    if not _model_is_usable(loaded):
        return EXIT_ERROR
    files = _read_files(args.get("file") or [], loaded, report)
    if files is None:
        return EXIT_ERROR
    code = _journaled_reply(conv, prompt, loaded, system_prompt, report, files)
    if code == EXIT_BROKEN_PIPE or save_path is None or not conv.messages:
        return code
    return _save(store, conv, save_path, resume, code)


def _open_conversation(
    loaded: LoadedSettings, resume: str | None, store: Any
) -> tuple[Conversation, str] | int:
    """The conversation to answer in and the system prompt to use, or an exit code.

    A resumed session keeps its own system prompt unless one was given for this run."""
    from llama_tui.session.transcript import Conversation

    settings = loaded.settings
    if resume is None:
        return Conversation(system_prompt=settings.system_prompt), settings.system_prompt
    try:
        target = resume or store.latest_session_id()
        if not target:
            err("llama-tui: error: there is no saved session to resume")
            return EXIT_ERROR
        conv: Conversation = store.load_conversation(target)
    except Exception as e:
        err(f"llama-tui: error: cannot resume {resume or 'the last session'}: "
            f"{describe_error(e)}")
        return EXIT_ERROR
    for warning in conv.load_warnings:
        err(f"llama-tui: {clean(warning)}")
    if loaded.sources.get("system_prompt") not in (None, "default"):
        return conv, settings.system_prompt
    return conv, conv.system_prompt


def _model_is_usable(loaded: LoadedSettings) -> bool:
    """Refuse a token-shaped model id (never sent anywhere); mention the demo model."""
    settings = loaded.settings
    if settings.server is None and looks_like_token(settings.model):
        err(
            "llama-tui: error: the model id looks like an access token, so it was refused "
            "(it was not sent anywhere).\nPass a model id such as "
            "HuggingFaceTB/SmolLM2-135M-Instruct; to log in use `hf auth login`."
        )
        return False
    demo = loaded.sources.get("model", "default") == "default" and not settings.server
    if demo and isatty(sys.stderr):
        err("llama-tui: using the bundled demo model (choose another with --model)")
    return True


def _read_files(
    words: list[str], loaded: LoadedSettings, report: HeadlessReport | None
) -> list[Attachment] | None:
    """The ``--file`` attachments, read before the model loads; None (said on stderr)
    when one is refused: a script gets no reply that silently lacks a file."""
    if not words:
        return []
    from llama_tui.chat.attachments import expand_paths, read_attachment

    max_bytes = loaded.settings.attach_max_kb * 1024
    try:
        return [read_attachment(path, name, max_bytes) for path, name in expand_paths(words)]
    except LlamaTuiError as e:
        _failed(report, e, f"{e.cause}\n{e.fix}")
        return None


def _journaled_reply(
    conv: Conversation, prompt: str, loaded: LoadedSettings, system_prompt: str,
    report: HeadlessReport | None, files: list[Attachment],
) -> int:
    """One reply in `conv`, journaled like a TUI turn (so the next --resume, TUI or
    headless, shows it); the exit code. The recorder is made before anything changes
    `conv`: an existing journal is then appended to as it is."""
    from llama_tui.chat.state import ChatState
    from llama_tui.session.recorder import SessionRecorder, install_signal_flush

    recorder = SessionRecorder(conv, on_error=lambda t: err(f"llama-tui: warning: {t}"))
    state = ChatState(conv, loaded.settings.params, system_prompt, recorder)
    restore_signals = install_signal_flush(lambda: recorder)
    try:
        code = _answer(state, prompt, loaded, report, files)
    finally:
        state.close()
        restore_signals()
    if report is not None:
        report.finished(conv, recorder)
    return code


def _answer(
    state: ChatState, prompt: str, loaded: LoadedSettings, report: HeadlessReport | None,
    files: list[Attachment],
) -> int:
    """Load the model and stream one reply to stdout; the exit code. Attached `files` are
    counted with the model's tokenizer and refused if they cannot fit its context."""
    from llama_tui.chat.attachments import AttachmentError, check_fits, count_tokens
    from llama_tui.chat.reply import run_reply
    from llama_tui.engine.factory import make_backend

    backend: Backend | None = None
    printer = _Printer(sys.stdout)
    try:
        backend = make_backend(loaded.settings)
        _use_model(state, backend, loaded)
        if files:
            files = count_tokens(backend, files)
            check_fits(files, state.model.context_length if state.model else None,
                       state.params.max_new_tokens)
        outcome = run_reply(state, backend, prompt, on_chunk=printer.write, attachments=files)
        if outcome.error is None:
            printer.end_reply()
    except KeyboardInterrupt:
        printer.end_line()
        err("llama-tui: interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except AttachmentError as e:  # the files cannot fit this model's context
        return _failed(report, e, f"{e.cause}\n{e.fix}")
    except Exception as e:  # loading failed: no reply was asked for
        log.exception("headless run failed")
        return _failed(report, e, describe_error(e))
    finally:
        if backend is not None:
            _close_quietly(backend)
    if outcome.error is not None:
        printer.end_line()
        error = outcome.error
        return _failed(report, error.exception, f"{error.cause}\n{error.fix}".strip())
    return EXIT_OK


def _use_model(state: ChatState, backend: Backend, loaded: LoadedSettings) -> None:
    """Load the model; the params in use become its defaults with the user's choices on
    top (as in the TUI), and a choice that does not fit it is named on stderr."""
    from llama_tui.chat.state import params_for_model, user_fields

    info = backend.load(_progress_printer())
    state.model_loaded(info)
    state.params, warnings = params_for_model(
        backend.default_params(), loaded.settings.params, user_fields(loaded.sources),
        info.context_length)
    for warning in warnings:
        err(f"llama-tui: warning: {warning}")


def _failed(report: HeadlessReport | None, exc: BaseException | None, text: str) -> int:
    """A failure: its cause and fix on stderr, the exception to `report`; EXIT_ERROR."""
    if exc is not None and report is not None:
        report.failed(exc)
    err(f"llama-tui: error: {text}")
    return EXIT_ERROR


class _Printer:
    """The reply on stdout as it streams, sanitised; what was printed is never taken back."""

    def __init__(self, stdout: IO[str]) -> None:
        self.stdout = stdout
        self.cleaner = StreamCleaner()
        self.printed = False

    def write(self, chunk: str) -> None:
        out = self.cleaner.feed(chunk)
        if out:
            self.stdout.write(out)
            self.stdout.flush()
            self.printed = True

    def end_reply(self) -> None:
        """The reply is complete: the rest of it and a newline (raises on a closed pipe)."""
        self.stdout.write(self.cleaner.flush() + "\n")
        self.stdout.flush()

    def end_line(self) -> None:
        """End a partial reply (interrupted, failed) with a newline, keeping what was
        printed; quiet when nothing was."""
        rest = self.cleaner.flush()
        try:
            if self.printed or rest:
                self.stdout.write(rest + "\n")
                self.stdout.flush()
        except (OSError, ValueError):
            pass


def _save_path_taken(path: Path, resume: str | None) -> bool:
    """`--save` onto an existing file would fail after the reply: say so up front. The
    file `save_conversation` writes: a folder gets a new name inside, no extension `.md`."""
    if str(path).endswith(("/", os.sep)) or path.is_dir() or _may_overwrite(path, resume):
        return False
    target = path if path.suffix else path.with_name(path.name + ".md")
    if not os.path.lexists(target):
        return False
    _exists(target)
    return True


def _may_overwrite(path: Path, resume: str | None) -> bool:
    """Saving back onto the file a session was resumed from replaces it."""
    return bool(resume) and _same_file(path, Path(str(resume)).expanduser())


def _exists(path: Path) -> None:
    err(f"llama-tui: error: {path} exists; choose another --save path")


def _save(store: Any, conv: Conversation, path: Path, resume: str | None, code: int) -> int:
    """`--save PATH` after the reply; the exit code (an error here fails a good run)."""
    overwrite = _may_overwrite(path, resume)
    try:
        store.save_conversation(conv, path, overwrite=overwrite)
    except FileExistsError:
        _exists(path)
        return EXIT_ERROR if code == EXIT_OK else code
    except Exception as e:
        err(f"llama-tui: error: could not save to {path}: {describe_error(e)}")
        return EXIT_ERROR if code == EXIT_OK else code
    return code


def _close_quietly(backend: Backend) -> None:
    try:
        backend.close()
    except Exception:  # closing must not hide the real outcome
        log.exception("closing the backend failed")


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

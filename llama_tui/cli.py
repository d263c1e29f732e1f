"""Command line: argument parsing, startup checks, headless mode, and starting the TUI.

``llama-tui`` with no ``--prompt`` starts the TUI (`llama_tui.ui.app.run_app`);
``llama-tui --prompt TEXT`` (or ``--prompt -`` for stdin) prints one reply and exits.

Only the flags the user typed override the other settings layers (every option defaults to
`argparse.SUPPRESS`). ``--help`` and ``--version`` import nothing heavy: torch, transformers,
textual and huggingface_hub are imported only inside the functions that need them.

Headless output contract: stdout carries the reply and nothing else (so it pipes), streamed
as it is generated and ended with a newline. It is always sanitised with `StreamCleaner`,
tty or not: the reply is untrusted and a pipe usually ends in a terminal or a file someone
will `cat`. Everything else (warnings, progress when stderr is a terminal, errors with their
cause and fix) goes to stderr, redacted; library logging goes to the log file.

Exit codes: 0 done, 1 error, 2 usage error, 130 interrupted (Ctrl+C; what was printed
stays), 141 stdout closed early (like a process killed by SIGPIPE).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import os
import re
import sys
import threading
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from llama_tui import __version__
from llama_tui.config import LoadedSettings, endpoint_warning, load_settings
from llama_tui.text import StreamCleaner, clean, looks_like_token, redact

if TYPE_CHECKING:
    from llama_tui.engine.base import LoadProgress

__all__ = [
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "build_parser",
    "endpoint_warning",
    "main",
    "startup_warnings",
]

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141

# Flags that are not settings: they steer this run only.
_RUN_KEYS = ("prompt", "config", "resume", "save", "list_models")

# Security floors (also in pyproject.toml); checked from package metadata, no import.
SECURITY_FLOORS: tuple[tuple[str, tuple[int, ...], str], ...] = (
    (
        "transformers",
        (5, 3),
        "CVE-2026-4372: remote code can run even with trust_remote_code=False",
    ),
    (
        "torch",
        (2, 6),
        "CVE-2025-32434: torch.load can run code from a malicious checkpoint",
    ),
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser. Every option defaults to SUPPRESS: absent means "not typed"."""
    p = argparse.ArgumentParser(
        prog="llama-tui",
        description="A terminal chat app for LLaMA-family models. Without --prompt, starts "
        "the TUI; with --prompt, prints one reply to stdout and exits.",
        epilog="Settings come from defaults < config.toml < remembered panel settings < .env "
        "< LLAMA_TUI_* environment variables < these flags. See .env.example for every "
        "variable.",
        argument_default=argparse.SUPPRESS,
    )
    p.add_argument("--version", action="version", version=f"llama-tui {__version__}")

    m = p.add_argument_group("model")
    m.add_argument(
        "--model",
        "-m",
        metavar="SPEC",
        help="hub repo id[@revision], local folder, .gguf file, or 'demo' (default: demo)",
    )
    m.add_argument("--server", metavar="URL", help="use an OpenAI-compatible server instead")
    m.add_argument("--server-model", metavar="NAME", help="model name to ask the server for")
    m.add_argument(
        "--api-key-env",
        metavar="VAR",
        help="name of the environment variable holding the server's API key "
        "(default: LLAMA_TUI_API_KEY)",
    )
    m.add_argument(
        "--no-verify-tls",
        dest="verify_tls",
        action="store_false",
        help="do not verify the server's TLS certificate",
    )
    m.add_argument("--device", metavar="DEV", help="auto, cpu, cuda, cuda:N or mps")
    m.add_argument("--dtype", metavar="TYPE", help="auto, float32, bfloat16 or float16")
    m.add_argument("--threads", type=int, metavar="N", help="torch CPU threads")
    m.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow the model's own Python code to run (only for models you trust)",
    )
    m.add_argument(
        "--allow-pickle",
        action="store_true",
        help="load pickle (.bin/.pt) weights when no safetensors exist",
    )
    m.add_argument(
        "--no-compile", dest="compile", action="store_false", help="no compiled decode path"
    )
    m.add_argument(
        "--no-kv-reuse",
        dest="kv_reuse",
        action="store_false",
        help="re-encode the whole history every turn",
    )
    m.add_argument("--device-map", metavar="MAP", help="e.g. auto: spread over all GPUs")
    m.add_argument("--load-in-4bit", action="store_true", help="4-bit weights (bitsandbytes)")
    m.add_argument("--load-in-8bit", action="store_true", help="8-bit weights (bitsandbytes)")

    g = p.add_argument_group("generation")
    g.add_argument("--system", dest="system_prompt", metavar="TEXT", help="system prompt")
    g.add_argument("--max-new-tokens", type=int, metavar="N")
    g.add_argument("--temperature", type=float, metavar="T")
    g.add_argument("--top-p", type=float, metavar="P")
    g.add_argument("--top-k", type=int, metavar="K", help="0 means off")
    g.add_argument("--min-p", type=float, metavar="P", help="0 means off")
    g.add_argument("--repetition-penalty", type=float, metavar="R", help="1.0 means off")
    g.add_argument("--seed", type=int, metavar="N")
    g.add_argument(
        "--greedy", dest="do_sample", action="store_false", help="greedy decoding (no sampling)"
    )
    g.add_argument("--stop", action="append", metavar="TEXT", help="stop string (repeatable)")
    g.add_argument(
        "--raw", action="store_true", help="no chat template: the prompt is sent as typed"
    )

    r = p.add_argument_group("run")
    r.add_argument(
        "--prompt",
        metavar="TEXT",
        help="headless: print one reply to stdout and exit ('-' reads stdin)",
    )
    r.add_argument("--config", metavar="PATH", help="config file instead of config.toml")
    r.add_argument(
        "--resume",
        nargs="?",
        const="",
        metavar="ID|PATH",
        help="continue a saved session (the last one without an argument)",
    )
    r.add_argument("--save", metavar="PATH", help="headless: save the conversation (.md/.json)")
    r.add_argument(
        "--list-models", action="store_true", help="list cached Hugging Face models and exit"
    )
    return p


# --- startup checks --------------------------------------------------------------------------


def _version_tuple(v: str) -> tuple[int, ...]:
    parts: list[int] = []
    for piece in v.split("."):
        m = re.match(r"\d+", piece)
        if not m:
            break
        parts.append(int(m.group()))
        if m.end() != len(piece):
            break
    return tuple(parts)


def startup_warnings(versions: dict[str, str] | None = None) -> list[str]:
    """Warnings for installed packages below the security floors, naming the CVE.

    Reads package metadata only (no import of torch or transformers). `versions` overrides
    the installed versions (tests).
    """
    out: list[str] = []
    for dist, floor, cve in SECURITY_FLOORS:
        if versions is not None:
            v = versions.get(dist)
        else:
            try:
                v = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                v = None
        if v is None:
            continue
        if _version_tuple(v) < floor:
            need = ".".join(map(str, floor))
            out.append(
                f"{dist} {v} is older than {need} ({cve}); upgrade: pip install -U '{dist}>={need}'"
            )
    return out


# --- helpers ---------------------------------------------------------------------------------


def _err(msg: str) -> None:
    """One message to stderr, sanitised and redacted."""
    try:
        sys.stderr.write(redact(clean(msg)).rstrip("\n") + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def _isatty(stream: IO[str] | Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def _describe_error(exc: BaseException) -> str:
    """The classified cause and fix for our errors; type and message for anything else."""
    from llama_tui.engine.base import LlamaTuiError

    if isinstance(exc, LlamaTuiError):
        return str(exc)
    if isinstance(exc, OSError) and exc.strerror and exc.filename:
        return f"{exc.strerror}: {exc.filename}"
    return f"unexpected error: {type(exc).__name__}: {exc}"


def _settings_cli(args: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in args.items() if k not in _RUN_KEYS}


def _list_models() -> int:
    """Print the bundled demo model and every model in the Hugging Face cache."""
    lines = ["demo\tbundled SmolLM2-135M-Instruct (Q4_1 GGUF)"]
    try:
        from huggingface_hub import scan_cache_dir

        info = scan_cache_dir()
        for repo in sorted(info.repos, key=lambda r: r.repo_id):
            if repo.repo_type != "model":
                continue
            lines.append(f"{repo.repo_id}\t{repo.size_on_disk_str}")
    except Exception as e:  # no cache yet, unreadable cache: just say so
        name = type(e).__name__
        if name != "CacheNotFound":
            _err(f"llama-tui: warning: could not read the Hugging Face cache: {e}")
    for line in lines:
        sys.stdout.write(redact(clean(line)) + "\n")
    sys.stdout.flush()
    return EXIT_OK


def _progress_printer() -> Any:
    """A `ProgressCallback` that reports loading on stderr, only when it is a terminal."""
    if not _isatty(sys.stderr):
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


# --- headless --------------------------------------------------------------------------------


def _read_prompt(value: str) -> str | None:
    if value == "-":
        try:
            return sys.stdin.read()
        except (OSError, UnicodeDecodeError) as e:
            _err(f"llama-tui: error: cannot read the prompt from stdin: {e}")
            return None
    return value


def _store() -> Any:
    """The session store module, or None with an error printed."""
    try:
        from llama_tui.session import store
    except ImportError as e:
        _err(f"llama-tui: error: saving and resuming sessions is not available ({e})")
        return None
    return store


def _headless(loaded: LoadedSettings, args: dict[str, Any]) -> int:
    from llama_tui.engine.base import StopReason
    from llama_tui.engine.factory import make_backend
    from llama_tui.session.transcript import Conversation

    settings = loaded.settings
    prompt = _read_prompt(str(args["prompt"]))
    if prompt is None:
        return EXIT_ERROR
    if not prompt.strip():
        _err("llama-tui: error: the prompt is empty")
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
                _err("llama-tui: error: there is no saved session to resume")
                return EXIT_ERROR
            conv = store.load_conversation(target)
        except Exception as e:
            _err(
                f"llama-tui: error: cannot resume {resume or 'the last session'}: "
                f"{_describe_error(e)}"
            )
            return EXIT_ERROR
        if loaded.sources.get("system_prompt") not in (None, "default"):
            conv.system_prompt = settings.system_prompt
    else:
        conv = Conversation(system_prompt=settings.system_prompt)

    if settings.server is None and looks_like_token(settings.model):
        _err(
            "llama-tui: error: the model id looks like an access token, so it was refused "
            "(it was not sent anywhere).\nPass a model id such as "
            "HuggingFaceTB/SmolLM2-135M-Instruct; to log in use `hf auth login`."
        )
        return EXIT_ERROR

    demo = loaded.sources.get("model", "default") == "default" and not settings.server
    if demo and _isatty(sys.stderr):
        _err("llama-tui: using the bundled demo model (choose another with --model)")

    cancel = threading.Event()
    backend: Any = None
    stdout = sys.stdout
    cleaner = StreamCleaner()
    parts: list[str] = []
    status = "complete"
    code = EXIT_OK
    error: str | None = None
    try:
        backend = make_backend(settings)
        info = backend.load(_progress_printer())
        conv.model = asdict(info)
        conv.settings = settings.params.to_dict()
        conv.add("user", prompt)
        generation = backend.stream(conv.history(), settings.params, cancel)
        for chunk in generation:
            parts.append(chunk)
            out = cleaner.feed(chunk)
            if out:
                stdout.write(out)
                stdout.flush()
        stdout.write(cleaner.flush() + "\n")
        stdout.flush()
        stats = generation.stats
        if stats is not None:
            if stats.stop_reason is StopReason.CANCELLED:
                status = "stopped"
            conv.messages.append(_assistant(conv, "".join(parts), status, stats.to_dict()))
        else:
            conv.messages.append(_assistant(conv, "".join(parts), status, None))
    except KeyboardInterrupt:
        cancel.set()
        _finish_line(stdout, cleaner, parts)
        _err("llama-tui: interrupted")
        status, code = "stopped", EXIT_INTERRUPTED
        if conv.messages and conv.messages[-1].role == "user":
            conv.messages.append(_assistant(conv, "".join(parts), status, None))
    except BrokenPipeError:
        cancel.set()
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except Exception as e:
        cancel.set()
        if parts:
            _finish_line(stdout, cleaner, parts)
        log.exception("headless run failed")
        error = _describe_error(e)
        _err(f"llama-tui: error: {error}")
        status, code = "error", EXIT_ERROR
        if conv.messages and conv.messages[-1].role == "user":
            msg = _assistant(conv, "".join(parts), status, None)
            msg.error = redact(clean(error))
            conv.messages.append(msg)
    finally:
        if backend is not None:
            try:
                backend.close()
            except Exception:  # closing must not hide the real outcome
                log.exception("closing the backend failed")

    if save is not None and conv.messages:
        path = Path(save).expanduser()
        overwrite = bool(resume) and _same_file(path, Path(str(resume)).expanduser())
        try:
            store.save_conversation(conv, path, overwrite=overwrite)
        except FileExistsError:
            _err(f"llama-tui: error: {path} exists; choose another --save path")
            return EXIT_ERROR if code == EXIT_OK else code
        except Exception as e:
            _err(f"llama-tui: error: could not save to {path}: {_describe_error(e)}")
            return EXIT_ERROR if code == EXIT_OK else code
    return code


def _assistant(conv: Any, content: str, status: str, stats: dict[str, Any] | None) -> Any:
    from llama_tui.session.transcript import Message

    msg = Message(role="assistant", content=content, status=status)  # type: ignore[arg-type]
    msg.stats = stats
    return msg


def _finish_line(stdout: IO[str], cleaner: StreamCleaner, parts: list[str]) -> None:
    """End the partial reply with a newline, keeping what was printed."""
    try:
        stdout.write(cleaner.flush() + ("\n" if parts else ""))
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


# --- entry point -----------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run llama-tui with `argv` (default: sys.argv[1:]); return the exit code."""
    parser = build_parser()
    try:
        ns = parser.parse_args(list(argv) if argv is not None else None)
    except SystemExit as e:  # --help, --version (0) and usage errors (2)
        return e.code if isinstance(e.code, int) else (EXIT_OK if e.code is None else EXIT_USAGE)
    args = vars(ns)

    config_path = Path(args["config"]).expanduser() if "config" in args else None
    loaded = load_settings(cli=_settings_cli(args), config_path=config_path)
    loaded.resume = args.get("resume")
    # HF_HOME / HF_HUB_OFFLINE / HF_ENDPOINT from .env, before huggingface_hub is imported.
    loaded.apply_env_exports()
    if loaded.errors:
        for problem in loaded.errors:
            _err(f"llama-tui: error: {problem}")
        return EXIT_USAGE

    if args.get("list_models"):
        return _list_models()

    headless = "prompt" in args
    if not headless and "save" in args:
        _err("llama-tui: error: --save needs --prompt (in the TUI, use /save)")
        return EXIT_USAGE

    notes = startup_warnings()
    ep = endpoint_warning()
    if ep:
        notes.append(ep)

    from llama_tui import logs

    if headless:
        # stdout is for the reply only: keep hub progress bars off a non-terminal stderr.
        # (TQDM_DISABLE also covers bars libraries draw with plain tqdm, like transformers'
        # GGUF conversion.)
        if not _isatty(sys.stderr):
            os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
            os.environ.setdefault("TQDM_DISABLE", "1")
        os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
        try:
            logs.setup_logging()
        except OSError as e:
            _err(f"llama-tui: warning: cannot write the log file: {e}")
        for w in loaded.warnings + notes:
            _err(f"llama-tui: warning: {w}")
        for w in loaded.warnings:
            log.warning("%s", w)
        try:
            return _headless(loaded, args)
        except KeyboardInterrupt:
            _err("llama-tui: interrupted")
            return EXIT_INTERRUPTED

    try:
        logs.setup_logging()
    except OSError as e:
        _err(f"llama-tui: warning: cannot write the log file: {e}")
    # The UI shows these; they would vanish behind the full-screen app on stderr.
    loaded.warnings.extend(notes)
    for w in loaded.warnings:
        log.warning("%s", w)
    try:
        from llama_tui.ui.app import run_app
    except ImportError as e:
        _err(f"llama-tui: error: the TUI could not start ({e}); --prompt still works")
        return EXIT_ERROR
    from llama_tui.engine.base import LlamaTuiError

    try:
        return int(run_app(loaded, resume=loaded.resume))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except LlamaTuiError as e:  # --resume of a session that cannot be read
        _err(
            f"llama-tui: error: cannot resume {loaded.resume or 'the last session'}: "
            f"{_describe_error(e)}"
        )
        return EXIT_ERROR

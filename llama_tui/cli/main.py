"""Command line: argument parsing, then headless mode, --list-models or the TUI.

``llama-tui`` with no ``--prompt`` starts the TUI (`llama_tui.ui.app.run_app`);
``llama-tui --prompt TEXT`` (or ``--prompt -`` for stdin) prints one reply and exits.

Only the flags the user typed override the other settings layers (every option defaults to
`argparse.SUPPRESS`). ``--help`` and ``--version`` import nothing heavy: torch, transformers,
textual and huggingface_hub are imported only inside the functions that need them.

Headless mode lives in `llama_tui.cli.headless` (its output contract is documented there: stdout
carries the reply and nothing else, sanitised); the startup checks in `llama_tui.startup`;
exit codes and stderr messages in `llama_tui.cli.console`. Warnings go to stderr in headless
mode, to the UI otherwise; library logging goes to the log file.

Exit codes: 0 done, 1 error, 2 usage error, 130 interrupted (Ctrl+C; what was printed
stays), 141 stdout closed early (like a process killed by SIGPIPE).
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Never

from llama_tui import __version__
from llama_tui.cli.console import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from llama_tui.cli.console import describe_error as _describe_error
from llama_tui.cli.console import err as _err
from llama_tui.cli.console import isatty as _isatty
from llama_tui.config.settings import LoadedSettings, load_settings
from llama_tui.core.params import PARAM_FIELDS, ParamField
from llama_tui.startup import endpoint_warning, startup_warnings
from llama_tui.text import clean, redact

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

# Flags that are not settings: they steer this run only.
_RUN_KEYS = ("prompt", "config", "resume", "save", "list_models", "show_config", "json",
             "replay", "turn",
             "file", "sessions")


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
    _add_model_flags(p.add_argument_group("model"))
    _add_generation_flags(p.add_argument_group("generation"))
    _add_run_flags(p.add_argument_group("run"))
    return p


def _add_model_flags(m: argparse._ArgumentGroup) -> None:
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
    m.add_argument(
        "--dtype", metavar="TYPE", help="auto, float32, bfloat16, float16 or int4 (CPU)"
    )
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
        "--no-compile",
        dest="compile",
        action="store_false",
        help="plain generate: no fast decoder (compiled on CUDA, lean step on CPU)",
    )
    m.add_argument(
        "--no-kv-reuse",
        dest="kv_reuse",
        action="store_false",
        help="re-encode the whole history every turn",
    )
    m.add_argument("--device-map", metavar="MAP", help="e.g. auto: spread over all GPUs")
    m.add_argument(
        "--draft-model",
        metavar="SPEC",
        help="assisted decoding: a small model with the same tokenizer guesses tokens that "
        "the main model checks (same output, faster when it guesses well)",
    )
    m.add_argument(
        "--prompt-lookup",
        metavar="MODE",
        help="assisted decoding by guessing from the prompt: auto (greedy replies to a long "
        "message on a CPU; see the README), on or off (default: auto)",
    )
    m.add_argument(
        "--load-in-4bit", action="store_true", help="4-bit weights (CPU: torch; GPU: bitsandbytes)"
    )
    m.add_argument(
        "--load-in-8bit", action="store_true", help="8-bit weights (CPU: torch; GPU: bitsandbytes)"
    )


def _add_generation_flags(g: argparse._ArgumentGroup) -> None:
    """--system and --raw, and one flag per generation setting in `PARAM_FIELDS`."""
    g.add_argument("--system", dest="system_prompt", metavar="TEXT", help="system prompt")
    for f in PARAM_FIELDS:
        _add_param_flag(g, f)
    g.add_argument(
        "--raw", action="store_true", help="no chat template: the prompt is sent as typed"
    )


def _add_run_flags(r: argparse._ArgumentGroup) -> None:
    """Flags that steer this run only (`_RUN_KEYS`), not settings."""
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
        "--replay",
        metavar="FILE",
        help="regenerate the recorded replies of a session (journal, .json or id) and say "
        "for each whether it is identical; exit 0 only if all are",
    )
    r.add_argument("--turn", type=int, metavar="N", help="--replay: only the Nth reply")
    r.add_argument(
        "--file",
        action="append",
        metavar="PATH",
        help="headless: attach a text file to the prompt (repeatable; like /read in the TUI)",
    )
    r.add_argument(
        "--json",
        action="store_true",
        help="headless: print one JSON object (reply, model, stats; or the error) instead",
    )
    r.add_argument(
        "--list-models", action="store_true", help="list cached Hugging Face models and exit"
    )
    r.add_argument(
        "--sessions",
        nargs="?",
        const="",
        metavar="QUERY",
        help="list saved sessions (id, date, model, title), or those matching QUERY with "
        "the matching line, and exit",
    )
    r.add_argument(
        "--show-config",
        action="store_true",
        help="print every effective setting and where it came from (secrets hidden), and exit",
    )


def _add_param_flag(group: argparse._ArgumentGroup, f: ParamField) -> None:
    """The flag of one generation setting, from its row in the field table."""
    extra: dict[str, Any] = {"help": f.flag_help} if f.flag_help else {}
    if f.kind == "bool":
        action = "store_false" if f.inverse else "store_true"
        group.add_argument(f.flag, dest=f.name, action=action, **extra)
    elif f.kind == "strlist":
        group.add_argument(f.flag, dest=f.name, action="append", metavar=f.metavar, **extra)
    else:
        kind = float if f.kind == "float" else int
        group.add_argument(f.flag, dest=f.name, type=kind, metavar=f.metavar, **extra)


# --- helpers --------------------------------------------------------------------------------


def _settings_cli(args: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in args.items() if k not in _RUN_KEYS}


def _list_models() -> int:
    """Print the bundled demo model and every model in the Hugging Face cache."""
    from llama_tui.engine.loading.hub import cached_models

    lines = ["demo\tbundled SmolLM2-135M-Instruct (Q4_1 GGUF)"]
    try:
        models = sorted(cached_models(), key=lambda m: m.repo_id)
    except Exception as e:  # an unreadable cache: say so, still list the demo
        _err(f"llama-tui: warning: could not read the Hugging Face cache: {e}")
        models = []
    lines += [f"{m.repo_id}\t{m.size}" for m in models]
    for line in lines:
        sys.stdout.write(redact(clean(line)) + "\n")
    sys.stdout.flush()
    return EXIT_OK


def _json_usage_error(problem: str, fix: str = "Fix the flag's value.") -> None:
    import json

    error = {"kind": "usage", "cause": redact(clean(problem)), "fix": fix}
    sys.stdout.write(json.dumps({"error": error}, ensure_ascii=False) + "\n")
    sys.stdout.flush()


# --- entry point -----------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run llama-tui with `argv` (default: sys.argv[1:]); return the exit code."""
    raw = list(argv) if argv is not None else sys.argv[1:]
    parser = build_parser()
    if "--json" in raw:
        # A script that asked for JSON reads stdout: argparse's own errors (an unknown flag, a
        # value of the wrong type) must come out as the same error object as ours.
        def json_error(message: str) -> Never:
            parser.print_usage(sys.stderr)
            _err(f"llama-tui: error: {message}")
            _json_usage_error(message, "See `llama-tui --help` for the flags and their values.")
            raise SystemExit(EXIT_USAGE)

        parser.error = json_error  # type: ignore[method-assign]
    try:
        ns = parser.parse_args(raw)
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
        if args.get("json"):
            _json_usage_error(loaded.errors[0])
        return EXIT_USAGE
    if args.get("show_config"):
        return _show_config(loaded)
    if args.get("list_models"):
        return _list_models()
    if "sessions" in args:
        from llama_tui.cli.sessions import run_sessions

        return run_sessions(args["sessions"])
    needs_prompt = _mode_problem(args)
    if needs_prompt:
        _err(f"llama-tui: error: {needs_prompt}")
        if args.get("json"):
            _json_usage_error(needs_prompt, "See `llama-tui --help`.")
        return EXIT_USAGE

    # The TUI checks the package floors itself, in a worker after its first paint (reading
    # package metadata costs ~15 ms): see `LlamaTuiApp.chat_ready`.
    notes = startup_warnings() if "prompt" in args else []
    ep = endpoint_warning()
    if ep:
        notes.append(ep)
    from llama_tui import logs

    # The one place logging is set up, for both front ends: nothing may log to the terminal
    # (the TUI owns it; headless mode keeps stdout for the reply).
    try:
        logs.setup_logging()
    except OSError as e:
        _err(f"llama-tui: warning: cannot write the log file: {e}")
    if "replay" in args:
        from llama_tui.cli.replay import run_replay

        for w in loaded.warnings + notes:
            _err(f"llama-tui: warning: {w}")
        return run_replay(loaded, args)
    if "prompt" in args:
        return _run_headless(loaded, args, notes)
    return _run_tui(loaded, notes)


def _show_config(loaded: LoadedSettings) -> int:
    from llama_tui.cli.show_config import config_lines

    for w in loaded.warnings:
        _err(f"llama-tui: warning: {w}")
    sys.stdout.write("".join(line + "\n" for line in config_lines(loaded)))
    sys.stdout.flush()
    return EXIT_OK


def _mode_problem(args: dict[str, Any]) -> str | None:
    """A flag that needs --prompt, given without it."""
    if "turn" in args and "replay" not in args:
        return "--turn needs --replay FILE"
    if "prompt" in args or "replay" in args:
        return None
    if "save" in args:
        return "--save needs --prompt (in the TUI, use /save)"
    if "file" in args:
        return "--file needs --prompt (in the TUI, use /read PATH)"
    if args.get("json"):
        return "--json needs --prompt (it describes one headless reply)"
    return None


def _run_headless(loaded: LoadedSettings, args: dict[str, Any], notes: list[str]) -> int:
    # stdout is for the reply only: keep hub progress bars off a non-terminal stderr.
    # (TQDM_DISABLE also covers bars libraries draw with plain tqdm, like transformers'
    # GGUF conversion.)
    if not _isatty(sys.stderr):
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    for w in loaded.warnings + notes:
        _err(f"llama-tui: warning: {w}")
    for w in loaded.warnings:
        log.warning("%s", w)
    from llama_tui.cli.headless import run_headless  # not at the top: the TUI never needs it

    try:
        if args.get("json"):
            from llama_tui.cli.headless_json import run_json

            return run_json(loaded, args)
        return run_headless(loaded, args)
    except KeyboardInterrupt:
        _err("llama-tui: interrupted")
        return EXIT_INTERRUPTED


def _run_tui(loaded: LoadedSettings, notes: list[str]) -> int:
    # The UI shows these; they would vanish behind the full-screen app on stderr.
    loaded.warnings.extend(notes)
    for w in loaded.warnings:
        log.warning("%s", w)
    # No garbage collection until the first frame is drawn: importing Textual and the UI
    # and building the first screen make objects that live on, so the ~100 collections
    # they would trigger free next to nothing and cost ~10 ms of the first paint
    # (benchmarks/startup_time.py). The App turns it back on after its first refresh
    # (`LlamaTuiApp.chat_ready`), before the model load starts.
    gc.disable()
    try:
        from llama_tui.core.errors import LlamaTuiError
        from llama_tui.ui.app import run_app

        try:
            return int(run_app(loaded, resume=loaded.resume))
        except KeyboardInterrupt:
            return EXIT_INTERRUPTED
        except LlamaTuiError as e:  # --resume of a session that cannot be read
            _err(f"llama-tui: error: {_describe_error(e)}")  # its cause names the session
            return EXIT_ERROR
    finally:
        gc.enable()  # on already, unless the app ended before its first frame

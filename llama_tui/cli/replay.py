"""`llama-tui --replay FILE [--turn N]`: regenerate recorded replies and compare them exactly.

FILE is a session journal, a JSON export or a session id. The model is the one the replies
recorded (a `--model` flag overrides it), loaded in the recorded dtype unless `--dtype` is
given. Each turn prints one line to stdout: ``turn N: identical``, ``turn N: differs: first
different token at index I: recorded '...', replayed '...'``, or ``turn N: impossible: why``.
Exit status 0 only when every replayed turn is identical, 1 otherwise (and on errors),
2 for usage errors. The comparison itself is `llama_tui.chat.replay`.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from typing import Any

from llama_tui.chat.replay import TurnResult, replay_turns
from llama_tui.cli.console import EXIT_ERROR, EXIT_OK, EXIT_USAGE, describe_error, err
from llama_tui.config.settings import LoadedSettings
from llama_tui.core.backend import Backend
from llama_tui.session.transcript import Conversation
from llama_tui.text import clean

log = logging.getLogger(__name__)


def run_replay(loaded: LoadedSettings, args: dict[str, Any]) -> int:
    """The exit code of replaying `args["replay"]` (optionally only `args["turn"]`)."""
    from llama_tui.session.store import SessionLoadError, load_conversation

    try:
        conv = load_conversation(args["replay"])
    except SessionLoadError as e:
        err(f"llama-tui: error: {e.cause}\n{e.fix}")
        return EXIT_ERROR
    replies = [m for m in conv.messages if m.role == "assistant"]
    turn = args.get("turn")
    if turn is not None and not 1 <= turn <= len(replies):
        err(f"llama-tui: error: --turn {turn}: {conv.id} has {len(replies)} replies on its "
            "active branch; pick a turn from 1 to that number.")
        return EXIT_USAGE
    settings = _settings_for(conv, loaded, turn)
    if settings is None:
        err("llama-tui: error: no reply in this conversation recorded how it was made "
            "(an older llama-tui wrote it, or a server did); nothing can be replayed.\n"
            "Replies made by this version record it: chat again and replay that session.")
        return EXIT_ERROR
    from llama_tui.engine.factory import make_backend

    backend: Backend | None = None
    results: list[TurnResult] = []
    try:
        backend = make_backend(settings)
        info = backend.load()
        err(f"llama-tui: replaying with {clean(info.name)} on {clean(info.device)} "
            f"({clean(info.dtype)})")
        results = replay_turns(conv, backend, turn=turn, on_result=_print)
    except Exception as e:
        log.exception("replay failed")
        err(f"llama-tui: error: {describe_error(e)}")
        return EXIT_ERROR
    finally:
        if backend is not None:
            backend.close()
    return EXIT_OK if results and all(r.verdict == "identical" for r in results) \
        else EXIT_ERROR


def _print(result: TurnResult) -> None:
    sys.stdout.write(clean(result.line()) + "\n")
    sys.stdout.flush()


def _settings_for(conv: Conversation, loaded: LoadedSettings, turn: int | None) -> Any:
    """The settings to load the recorded model with (flags win), or None when no reply
    recorded one."""
    replies = [m for m in conv.messages if m.role == "assistant"]
    chosen = [replies[turn - 1]] if turn is not None else replies
    record = next((m.replay for m in chosen if m.replay and m.replay.get("decode_path")
                   != "remote"), None)
    if record is None:
        return None
    model = record.get("model") if isinstance(record.get("model"), dict) else {}
    changes: dict[str, Any] = {}
    sources = loaded.sources
    spec = model.get("spec") if isinstance(model, dict) else None
    if isinstance(spec, str) and spec and not sources.get("model", "").startswith("flag"):
        changes["model"] = spec
    dtype = record.get("dtype")
    if isinstance(dtype, str) and dtype and not sources.get("dtype", "").startswith("flag"):
        changes["dtype"] = dtype
    return dataclasses.replace(loaded.settings, **changes)

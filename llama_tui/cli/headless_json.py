"""``llama-tui --prompt TEXT --json``: one JSON object on stdout instead of the plain reply.

For scripts and benchmarks. On success (exit 0)::

    {"reply": "...", "model": "...", "model_spec": "...", "device": "...", "dtype": "...",
     "stats": {"prompt_tokens": {"new": N, "cached": N}, "new_tokens": N, "ttft_s": S,
               "decode_tokens_per_s": R, "total_s": S, "stop_reason": "eos"},
     "session": {"id": "...", "journal": "PATH", "saved_to": "PATH"}}

A thinking model's reply adds ``"thinking"`` (its thought; ``reply`` is the answer alone) and
``"thinking_tokens"`` in ``stats``. An assisted reply (prompt lookup, a draft model) adds
``"assisted"`` and ``"assisted_steps"`` (the main model's decode steps) in ``stats``.

On failure (non-zero exit, the same codes as plain headless mode) the object has
``"error": {"kind", "cause", "fix"}``, plus whatever was known before it happened (a partial
``reply`` is kept). ``kind`` is the error's class (``ModelNotCachedError``,
``GenerationError``, ...), ``"usage"`` for a bad invocation, ``"interrupted"`` for Ctrl+C.

Headless mode runs as usual (`run_headless`, with a `JsonReport` that it tells what happened)
while its stdout goes to a buffer; what it would have printed (the sanitised reply) becomes
``reply``. stderr still carries the human messages. Values that came from outside (model
names, paths, messages) are sanitised and redacted like the rest of llama-tui's output.
"""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING, Any

from llama_tui.cli.console import EXIT_BROKEN_PIPE, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from llama_tui.cli.headless import run_headless
from llama_tui.cli.headless_tokens import tokens_json
from llama_tui.config.settings import LoadedSettings
from llama_tui.core.errors import LlamaTuiError, describe_error
from llama_tui.text import clean, redact

if TYPE_CHECKING:
    from llama_tui.session.recorder import SessionRecorder
    from llama_tui.session.transcript import Conversation

__all__ = ["JsonReport", "run_json"]

_ERROR_PREFIX = "llama-tui: error: "


def _safe(text: str) -> str:
    return redact(clean(text))


class JsonReport:
    """What one headless run did, as `run_headless` reports it (see its `report` argument)."""

    def __init__(self) -> None:
        self.exception: BaseException | None = None
        self.conversation: Conversation | None = None
        self.journal: str | None = None

    def failed(self, exc: BaseException) -> None:
        """The run raised `exc` (already shown on stderr)."""
        self.exception = exc

    def finished(self, conversation: Conversation, recorder: SessionRecorder) -> None:
        """The turn is over (whatever the outcome): the conversation and its journal."""
        self.conversation = conversation
        if recorder.error is None and recorder.path.exists():
            self.journal = str(recorder.path)


class _Tee(io.TextIOBase):
    """stderr as before, and a copy of what was written (for the error's cause and fix)."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self.text = io.StringIO()

    def write(self, s: str) -> int:
        self.text.write(s)
        return self._stream.write(s)

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return self._stream.isatty()


@contextmanager
def _captured() -> Iterator[tuple[io.StringIO, _Tee]]:
    out, tee = io.StringIO(), _Tee(sys.stderr)
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, tee  # type: ignore[assignment]
    try:
        yield out, tee
    finally:
        sys.stdout, sys.stderr = saved


def _stats(stats: dict[str, Any] | None) -> dict[str, Any] | None:
    if not isinstance(stats, dict):
        return None
    prompt = int(stats.get("prompt_tokens") or 0)
    cached = int(stats.get("reused_prompt_tokens") or 0)
    return {
        "prompt_tokens": {"new": max(prompt - cached, 0), "cached": cached},
        "new_tokens": stats.get("generated_tokens"),
        "ttft_s": stats.get("ttft_s"),
        "decode_tokens_per_s": stats.get("decode_tokens_per_s"),
        "total_s": stats.get("total_s"),
        "stop_reason": stats.get("stop_reason"),
        **({"thinking_tokens": stats["thinking_tokens"]} if stats.get("thinking_tokens") else {}),
        # Assisted decoding: "prompt lookup" / "draft model" and the main model's steps.
        **(
            {"assisted": stats["assisted"], "assisted_steps": stats.get("assisted_steps")}
            if stats.get("assisted")
            else {}
        ),
    }


def _error(code: int, report: JsonReport, stderr: str) -> dict[str, str]:
    exc = report.exception
    if code == EXIT_INTERRUPTED and exc is None:
        return {"kind": "interrupted", "cause": "interrupted (Ctrl+C)", "fix": ""}
    if isinstance(exc, LlamaTuiError):
        cause, fix, kind = describe_error(exc)
        return {"kind": kind, "cause": cause, "fix": fix}
    # An error headless mode found itself (bad prompt, no session, ...): its last stderr
    # message, first line the cause and the lines after it the fix, as our errors are written.
    lines = stderr.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith(_ERROR_PREFIX)]
    cause, fix = f"exit code {code}", ""
    if starts:
        i = starts[-1]
        cause = lines[i].removeprefix(_ERROR_PREFIX)
        more: list[str] = []
        for line in lines[i + 1 :]:
            if line.startswith("llama-tui: "):
                break
            more.append(line)
        fix = "\n".join(more).strip()
    kind = "usage" if code == EXIT_USAGE else type(exc).__name__ if exc else "error"
    return {"kind": kind, "cause": cause, "fix": fix}


def build_result(code: int, report: JsonReport, stdout: str, stderr: str,
                 save: str | None, *, logprobs: bool = False) -> dict[str, Any]:
    """The JSON object for a run that ended with `code` (see the module docstring)."""
    result: dict[str, Any] = {}
    conv = report.conversation
    if conv is not None and conv.messages and conv.messages[-1].role == "assistant":
        result["reply"] = stdout.removesuffix("\n")
        if conv.messages[-1].thinking:  # a thinking model's thought (stdout has the answer)
            result["thinking"] = _safe(conv.messages[-1].thinking)
        model = conv.model if isinstance(conv.model, dict) else {}
        for key, name in (("model", "name"), ("model_spec", "spec"), ("device", "device"),
                          ("dtype", "dtype")):
            if isinstance(model.get(name), str):
                result[key] = _safe(model[name])
        stats = _stats(conv.messages[-1].stats)
        if stats is not None:
            result["stats"] = stats
        if logprobs:  # --logprobs K: the reply's tokens (cli.headless_tokens)
            result.update(tokens_json(conv.messages[-1].tokens))
    if conv is not None:
        session: dict[str, str] = {"id": _safe(str(conv.id))}
        if report.journal:
            session["journal"] = _safe(report.journal)
        if save is not None and code == EXIT_OK:
            session["saved_to"] = _safe(save)
        if report.journal or "saved_to" in session:
            result["session"] = session
    if code != EXIT_OK:
        result["error"] = {k: _safe(v) for k, v in _error(code, report, stderr).items()}
    return result


def run_json(loaded: LoadedSettings, args: dict[str, Any]) -> int:
    """Headless mode with one JSON object on stdout; the exit code."""
    report = JsonReport()
    with _captured() as (out, tee):
        try:
            code = run_headless(loaded, args, report=report)
        except KeyboardInterrupt:
            code = EXIT_INTERRUPTED
    result = build_result(
        code, report, out.getvalue(), tee.text.getvalue(), args.get("save"),
        logprobs=bool(args.get("logprobs")),
    )
    try:
        sys.stdout.write(json.dumps(result, ensure_ascii=False) + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        return EXIT_BROKEN_PIPE
    return code

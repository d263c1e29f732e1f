"""One `describe_error`: the cause, fix and kind of any exception, as stderr and the UI show it."""

from __future__ import annotations

import pytest

from llama_tui.cli import console
from llama_tui.core.errors import ModelNotCachedError, OutOfMemoryError, describe_error

CASES: list[tuple[BaseException, tuple[str, str, str]]] = [
    (ModelNotCachedError("org/m is not cached.", "Go online once."),
     ("org/m is not cached.", "Go online once.", "ModelNotCachedError")),
    (OutOfMemoryError("Out of memory."), ("Out of memory.", "", "OutOfMemoryError")),
    (FileNotFoundError(2, "No such file or directory", "/x/y.md"),
     ("No such file or directory: /x/y.md", "see the log", "FileNotFoundError")),
    (RuntimeError("boom"), ("unexpected error: RuntimeError: boom", "see the log", "RuntimeError")),
    (KeyError(), ("unexpected error: KeyError", "see the log", "KeyError")),
]


@pytest.mark.parametrize(("exc", "expected"), CASES, ids=lambda c: type(c).__name__)
def test_describe_error_classifies_once(
    exc: BaseException, expected: tuple[str, str, str]
) -> None:
    assert describe_error(exc, "see the log") == expected


@pytest.mark.parametrize(("exc", "expected"), CASES, ids=lambda c: type(c).__name__)
def test_stderr_text_is_the_cause_then_the_fix(
    exc: BaseException, expected: tuple[str, str, str]
) -> None:
    cause, fix, _ = describe_error(exc)
    assert console.describe_error(exc) == (f"{cause}\n{fix}" if fix else cause)
    assert console.describe_error(exc).startswith(expected[0])


def test_ui_description_is_the_same_cause_sanitised() -> None:
    from llama_tui.ui.model_control import describe_error as for_screen

    exc = RuntimeError("bad \x1b[31mthing")
    cause, fix, kind = for_screen(exc)
    assert kind == "RuntimeError" and "\x1b" not in cause
    assert cause.startswith("unexpected error: RuntimeError: bad")
    assert fix.startswith("Details are in the log file ")
    ours = ModelNotCachedError("org/m is not cached.", "Go online once.")
    assert for_screen(ours) == describe_error(ours)

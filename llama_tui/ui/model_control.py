"""What the user is told when a model cannot be loaded (or a reply fails), and how to pick
another. Loading itself is `model_host.py`'s."""

from __future__ import annotations

PICK_HINT = "Press F4 to pick another model, or type /model SPEC (a repo id, folder, .gguf, demo)."


def describe_error(exc: BaseException) -> tuple[str, str, str]:
    """(cause, fix, kind) of a failed load, as a failed reply shows it (`describe_failure`)."""
    # Imported here: the reply module's imports are not needed before the first paint.
    from llama_tui.chat.reply import describe_failure

    failure = describe_failure(exc)
    return failure.cause, failure.fix, failure.kind

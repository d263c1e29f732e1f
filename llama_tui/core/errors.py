"""Errors that carry a user-facing cause and fix, and `describe_error` for any exception."""

from __future__ import annotations


class LlamaTuiError(Exception):
    """Base for errors that carry a user-facing cause and fix.

    `str(err)` is the whole message. Messages must never contain a token: build them from
    the spec the user typed (token-shaped specs are refused before anything else happens).
    """

    def __init__(self, cause: str, fix: str = "") -> None:
        self.cause = cause
        self.fix = fix
        super().__init__(f"{cause}\n{fix}" if fix else cause)


class ModelError(LlamaTuiError):
    """A model could not be resolved or loaded. Subclasses name the case."""


class ModelNotCachedError(ModelError):
    """Offline (or unreachable hub) and the model is not in the local cache."""


class InvalidModelSpecError(ModelError):
    """Not a valid repo id, path or GGUF file name; also token-shaped specs."""


class LocalPathMissingError(ModelError):
    """A path-shaped spec that does not exist."""


class GatedRepoError(ModelError):
    """A gated repo: 401 (not logged in) or 403 (no access granted)."""


class RepoNotFoundError(ModelError):
    """The hub says the repo does not exist (or is private and we are not logged in)."""


class RemoteCodeRequiredError(ModelError):
    """The model needs custom code and the user did not opt in."""


class UnsafeWeightsError(ModelError):
    """Only pickle (.bin / .pt) weights; we load safetensors unless the user opts in."""


class DemoModelMissingError(ModelError):
    """The bundled demo model package is not installed."""


class DependencyMissingError(ModelError):
    """An optional dependency (bitsandbytes, accelerate) is missing or unsupported here."""


class GenerationError(LlamaTuiError):
    """A generation failed. The partial text produced so far stays with the caller."""


class OutOfMemoryError(GenerationError):
    """The device ran out of memory; memory has been freed, the model stays usable."""


class NonFiniteError(GenerationError):
    """NaN / inf probabilities (usually fp16 overflow)."""


class DeviceFatalError(GenerationError):
    """A device-side assert or similar: the process must restart (save first)."""


class ContextOverflowError(GenerationError):
    """The last prompt alone does not fit the model's context."""


class RemoteError(GenerationError):
    """A remote server refused, failed, timed out or cut the stream."""


def describe_error(exc: BaseException, details: str = "") -> tuple[str, str, str]:
    """(cause, fix, kind) of any exception, for the user; `kind` is its class name.

    Ours carry their cause and fix; a file error names the file; anything else is unexpected:
    its type and message, with `details` (where to read more, such as the log file) as the
    fix. The text is raw: each caller cleans and redacts it for where it shows it.
    """
    kind = type(exc).__name__
    if isinstance(exc, LlamaTuiError):
        return exc.cause, exc.fix, kind
    if isinstance(exc, OSError) and exc.strerror and exc.filename:
        return f"{exc.strerror}: {exc.filename}", details, kind
    message = str(exc)
    return f"unexpected error: {kind}" + (f": {message}" if message else ""), details, kind

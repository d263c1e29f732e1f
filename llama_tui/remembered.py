"""Remembered panel settings: ``remembered.json`` next to config.toml, read and written.

The settings panel's generation settings and system prompt are remembered for the next start
(`remember_generation`, `forget_remembered`); `remembered_layer` reads them back as one
settings layer, between config.toml and ``.env``. Only generation settings and the system
prompt are remembered; config.toml is never written by llama-tui. The file is written
atomically with mode 0600; a file that is not valid JSON is kept aside, never overwritten.

This module imports no torch, transformers or textual.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from llama_tui import locations
from llama_tui.config_values import PARAM_KINDS, Layer, items_from_mapping, read_text
from llama_tui.engine.base import GenerationParams
from llama_tui.session.atomic import atomic_write
from llama_tui.text import clean, redact

__all__ = [
    "forget_remembered",
    "remember_generation",
    "remembered_layer",
    "remembered_settings_file",
]


def remembered_settings_file() -> Path:
    """Where the settings panel's choices are remembered (JSON, mode 0600)."""
    return locations.config_dir() / "remembered.json"


def remembered_layer(path: Path, warnings: list[str]) -> Layer | None:
    """The remembered settings at `path` as a layer; None when there are none to read."""
    text = read_text(path, "remembered settings", warnings)
    if text is None:
        return None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as e:  # RecursionError: absurdly deep nesting
        warnings.append(redact(clean(f"{path}: not valid JSON ({type(e).__name__}: {e}); "
                                     "ignored")))
        return None
    if not isinstance(data, dict):
        warnings.append(redact(clean(f"{path}: not a JSON object; ignored")))
        return None
    data = {k: v for k, v in data.items() if k != "version"}
    items = items_from_mapping(data, str(path), None, warnings)
    # Only generation settings and the system prompt are remembered.
    allowed = set(PARAM_KINDS) | {"system_prompt"}
    for item in items:
        if item.key not in allowed:
            warnings.append(redact(clean(f"{path}: {item.key} is not remembered; ignored")))
    return Layer(f"remembered:{path}", [i for i in items if i.key in allowed])


def remember_generation(
    params: GenerationParams, system_prompt: str, path: Path | None = None
) -> Path:
    """Remember the panel's generation settings and system prompt for the next start.

    Raises ValueError when `params` is invalid (nothing is written) and OSError when the
    file cannot be written (the previous file is kept as it was). A previous file that is
    not valid JSON is kept aside as ``remembered.json.bad`` rather than overwritten.
    """
    problems = params.problems()
    if problems:
        raise ValueError("; ".join(f"{k} {v}" for k, v in problems.items()))
    if not isinstance(system_prompt, str):
        raise ValueError("system_prompt must be a string")
    target = remembered_settings_file() if path is None else path
    if target.exists():
        try:
            old = json.loads(target.read_text(encoding="utf-8"))
            ok = isinstance(old, dict)
        except (OSError, ValueError, RecursionError):
            ok = False
        if not ok:
            os.replace(target, target.with_name(target.name + ".bad"))
    payload = {"version": 1, "generation": params.to_dict(), "system_prompt": system_prompt}
    locations.private_dir(target.parent)
    data = (json.dumps(payload, indent=2, ensure_ascii=False) + "\n").encode()
    atomic_write(target, data, overwrite=True)
    return target


def forget_remembered(path: Path | None = None) -> None:
    """Delete the remembered settings (back to config.toml and defaults)."""
    target = remembered_settings_file() if path is None else path
    with contextlib.suppress(FileNotFoundError):
        target.unlink()

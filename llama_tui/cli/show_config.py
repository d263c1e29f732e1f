"""``llama-tui --show-config``: every effective setting, with where its value came from.

For debugging the precedence (defaults < config.toml < remembered < .env < LLAMA_TUI_* <
flags). Each setting is one line: key, value, source. A source is ``default``,
``PATH:LINE`` for config.toml and .env files, ``remembered``, the environment variable's
name, or ``flag --NAME``. Then the files that were consulted and the Hugging Face variables.

Secrets are never printed: token-shaped strings are redacted wherever they appear, a server
URL loses its user:password and query, and the API key and HF token are reported only as set
or unset. Everything is sanitised (no control characters reach the terminal). Imports no
torch, transformers or textual.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from llama_tui import locations
from llama_tui.config.remembered import remembered_settings_file
from llama_tui.config.settings import LoadedSettings
from llama_tui.config.values import ALL_KINDS, HF_DOTENV_KEYS, PARAM_KINDS, SETTING_KINDS
from llama_tui.engine.remote.wire import display_url
from llama_tui.text import clean, redact

__all__ = ["config_lines", "source_label"]

_WHERE_LINE = re.compile(r"^(?P<path>.*) line (?P<line>\d+)(?: \((?P<var>[A-Z0-9_]+)\))?$")
_MAX_VALUE_CHARS = 60
_HF_SECRETS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")


def _home(path: str) -> str:
    """`path` with the home directory shown as ~ (shorter lines, same meaning)."""
    home = str(Path.home())
    return "~" + path[len(home) :] if home != "/" and path.startswith(home + os.sep) else path


def source_label(source: str, where: str | None) -> str:
    """The shown source of one value, from `LoadedSettings.sources` and `.where`."""
    if source == "default":
        return "default"
    if source.startswith("remembered:"):
        return "remembered"
    if source == "flag":
        return f"flag {where}" if where else "flag"
    if source == "env":
        return where or "environment"
    kind, _, path = source.partition(":")  # "config:PATH" or ".env:PATH"
    m = _WHERE_LINE.match(where or "")
    if m is None:
        return _home(path) if path else kind
    return f"{_home(m.group('path'))}:{m.group('line')}"


def _value(key: str, value: Any) -> str:
    if key == "server" and isinstance(value, str):
        value = display_url(value)
    text = json.dumps(value, ensure_ascii=False) if isinstance(value, (str, list)) else None
    if value is None:
        text = "none"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, tuple):
        text = json.dumps(list(value), ensure_ascii=False)
    elif text is None:
        text = str(value)
    if len(text) > _MAX_VALUE_CHARS:
        text = text[: _MAX_VALUE_CHARS - 3] + "..."
    return text


def _settings_values(loaded: LoadedSettings) -> dict[str, Any]:
    s = loaded.settings
    values: dict[str, Any] = {k: getattr(s, k) for k in SETTING_KINDS}
    params = s.params.to_dict()
    values.update({k: params[k] for k in PARAM_KINDS})
    return values


def _hf_lines(loaded: LoadedSettings, environ: Mapping[str, str]) -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, str]] = []
    for key in HF_DOTENV_KEYS:
        # env_exports first: they are in the environment too once applied (at startup).
        if key in loaded.env_exports:
            rows.append((key, loaded.env_exports[key], ".env"))
        elif key in environ:
            rows.append((key, environ[key], "environment"))
        else:
            rows.append((key, "unset", "default"))
    shown = [
        (k, display_url(v) if k == "HF_ENDPOINT" and src != "default" else v, src)
        for k, v, src in rows
    ]
    token = next((k for k in _HF_SECRETS if environ.get(k)), None)
    shown.append(
        ("HF token", f"set in {token} (not shown)" if token else "from `hf auth login`, if any", "")
    )
    return shown


def config_lines(loaded: LoadedSettings, environ: Mapping[str, str] | None = None) -> list[str]:
    """The --show-config report, one line per item, safe to print."""
    env = os.environ if environ is None else environ
    values = _settings_values(loaded)
    rows = [
        (key, _value(key, values[key]), source_label(loaded.sources.get(key, "default"),
                                                     loaded.where.get(key)))
        for key in ALL_KINDS
    ]
    key_var = loaded.settings.api_key_env
    rows.append(
        (
            "api key",
            f"set in {key_var} (not shown)" if env.get(key_var) else f"unset ({key_var})",
            "environment",
        )
    )
    width = max(len(k) for k, _, _ in rows) + 2
    vwidth = min(max(len(v) for _, v, _ in rows), _MAX_VALUE_CHARS) + 2
    out = ["Settings (lowest first: default < config.toml < remembered < .env < LLAMA_TUI_* "
           "< flags):"]
    out += [f"  {k:<{width}}{v:<{vwidth}}{src}".rstrip() for k, v, src in rows]
    out.append("Files:")
    config = loaded.config_path
    if config is not None:
        state = "" if config.is_file() else " (not found)"
        out.append(f"  config       {_home(str(config))}{state}")
    for label, path in (
        ("remembered", remembered_settings_file()),
        ("config .env", locations.config_dir() / ".env"),
        ("cwd .env", Path.cwd() / ".env"),
    ):
        state = "" if path.is_file() else " (not found)"
        out.append(f"  {label:<13}{_home(str(path))}{state}")
    out.append("Hugging Face:")
    out += [f"  {k:<16}{v:<40}{src}".rstrip() for k, v, src in _hf_lines(loaded, env)]
    return [redact(clean(line)) for line in out]

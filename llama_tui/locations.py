"""Every path llama-tui reads or writes, from platformdirs (XDG on Linux).

Functions rather than module constants so that tests (and users) can redirect everything
with XDG_* / LLAMA_TUI_HOME environment variables set after import.
"""

from __future__ import annotations

import os
from pathlib import Path

from platformdirs import PlatformDirs

APP_NAME = "llama_tui"


def _dirs() -> PlatformDirs:
    return PlatformDirs(APP_NAME, appauthor=False)


def _home_override(sub: str) -> Path | None:
    # LLAMA_TUI_HOME puts everything under one folder (handy for tests and portable setups).
    home = os.environ.get("LLAMA_TUI_HOME")
    return Path(home) / sub if home else None


def config_dir() -> Path:
    return _home_override("config") or Path(_dirs().user_config_dir)


def config_file() -> Path:
    return config_dir() / "config.toml"


def data_dir() -> Path:
    return _home_override("data") or Path(_dirs().user_data_dir)


def sessions_dir() -> Path:
    return data_dir() / "sessions"


def cache_dir() -> Path:
    return _home_override("cache") or Path(_dirs().user_cache_dir)


def converted_models_dir() -> Path:
    """GGUF files converted once to safetensors live here (see engine/loading/models.py)."""
    return cache_dir() / "converted"


def log_dir() -> Path:
    return _home_override("log") or Path(_dirs().user_log_dir)


def log_file() -> Path:
    return log_dir() / "llama_tui.log"


def save_dir() -> Path:
    """Where Ctrl+S, `/save NAME` and `/copy file` write: the user's documents folder's
    `llama-tui` (e.g. ~/Documents/llama-tui), or `$LLAMA_TUI_HOME/saved`. Never the working
    directory, which is often a git checkout."""
    return _home_override("saved") or Path(_dirs().user_documents_dir) / "llama-tui"

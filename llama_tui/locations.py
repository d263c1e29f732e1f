"""Every path llama-tui reads or writes, from platformdirs (XDG on Linux).

Functions rather than module constants so that tests (and users) can redirect everything
with XDG_* / LLAMA_TUI_HOME environment variables set after import.
"""

from __future__ import annotations

import os
from pathlib import Path

from platformdirs import PlatformDirs

APP_NAME = "llama_tui"


def _folder(sub: str, platform_folder: str) -> Path:
    """`$LLAMA_TUI_HOME/<sub>` when LLAMA_TUI_HOME is set (everything under one folder: tests,
    portable setups), else `platform_folder` (platformdirs' answer, read now)."""
    home = os.environ.get("LLAMA_TUI_HOME")
    return Path(home) / sub if home else Path(platform_folder)


def _dirs() -> PlatformDirs:
    return PlatformDirs(APP_NAME, appauthor=False)


def config_dir() -> Path:
    """config.toml, the trusted .env and remembered.json (e.g. ~/.config/llama_tui)."""
    return _folder("config", _dirs().user_config_dir)


def config_file() -> Path:
    return config_dir() / "config.toml"


def data_dir() -> Path:
    """The conversations (e.g. ~/.local/share/llama_tui)."""
    return _folder("data", _dirs().user_data_dir)


def sessions_dir() -> Path:
    """One journal per conversation, `<id>.jsonl`."""
    return data_dir() / "sessions"


def search_index_file() -> Path:
    """The session search index (`session/search_index.py`): a cache of the journals' words,
    built again from them whenever it is missing or damaged."""
    return data_dir() / "search-index.sqlite3"


def cache_dir() -> Path:
    """What can be made again: converted models, compiled kernels (e.g. ~/.cache/llama_tui)."""
    return _folder("cache", _dirs().user_cache_dir)


def converted_models_dir() -> Path:
    """GGUF files converted once to safetensors (engine/loading/conversion.py)."""
    return cache_dir() / "converted"


def log_dir() -> Path:
    """The log file's folder (e.g. ~/.local/state/llama_tui/log)."""
    return _folder("log", _dirs().user_log_dir)


def log_file() -> Path:
    return log_dir() / "llama_tui.log"


def save_dir() -> Path:
    """Where Ctrl+S, `/save NAME` and `/copy file` write: the user's documents folder's
    `llama-tui` (e.g. ~/Documents/llama-tui), or `$LLAMA_TUI_HOME/saved`. Never the working
    directory, which is often a git checkout."""
    return _folder("saved", os.path.join(_dirs().user_documents_dir, "llama-tui"))

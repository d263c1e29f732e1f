"""Settings values: the keys and their kinds, coercion, validation, and raw items from files.

`llama_tui.config.settings` resolves the layers; this module knows what one raw value may be. A raw
value arrives as an `Item` (key, value, where it came from) inside a `Layer`; `coerce`
(typed values: TOML, JSON, flags) or `parse_str` (strings: environment, .env) turns it into
the setting's kind, and `check_setting` validates and normalises it. A value that cannot be
used raises `InvalidValue` with the reason, for a message that names the key and its source.
The generation settings' keys and kinds come from `llama_tui.core.params.PARAM_FIELDS`.

This module imports no torch, transformers or textual.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llama_tui.core.backend import DEVICE_MAPS, DTYPE_ALIASES
from llama_tui.core.params import ENV_PREFIX, PARAM_FIELDS, InvalidValue, parse_text
from llama_tui.core.thinking import THINKING_VIEWS
from llama_tui.text import clean, redact

# --- keys and kinds ------------------------------------------------------------------------

# kind: how a raw value is coerced. "str", "optstr" (empty -> None), "bool", "int", "optint",
# "float", "strlist".
SETTING_KINDS: dict[str, str] = {
    "model": "str",
    "server": "optstr",
    "server_model": "optstr",
    "api_key_env": "str",
    "verify_tls": "bool",
    "device": "str",
    "dtype": "str",
    "threads": "optint",
    "trust_remote_code": "bool",
    "allow_pickle": "bool",
    "compile": "bool",
    "kv_reuse": "bool",
    "device_map": "optstr",
    "draft_model": "optstr",
    "prompt_lookup": "str",
    "load_in_4bit": "bool",
    "load_in_8bit": "bool",
    "system_prompt": "str",
    "raw": "bool",
    "thinking": "str",
    "attach_max_kb": "int",
}
PARAM_KINDS: dict[str, str] = {f.name: f.kind for f in PARAM_FIELDS}
ALL_KINDS: dict[str, str] = {**SETTING_KINDS, **PARAM_KINDS}

# Keys a .env in the working directory may not set (it may come with a cloned repository).
SENSITIVE_KEYS = frozenset(
    {"trust_remote_code", "allow_pickle", "server", "api_key_env", "verify_tls"}
)
# HF_* variables we honour from .env files (exported to os.environ when not already set).
HF_DOTENV_KEYS = ("HF_HOME", "HF_HUB_OFFLINE", "HF_ENDPOINT")
SENSITIVE_HF_KEYS = frozenset({"HF_ENDPOINT"})
# Secrets: never read from .env (see `llama_tui.config.settings`).
SECRET_DOTENV_KEYS = frozenset({"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "LLAMA_TUI_API_KEY"})
# Read by llama-tui from the real environment only (they decide where .env files are).
ENV_ONLY_KEYS = frozenset({"LLAMA_TUI_CONFIG", "LLAMA_TUI_HOME"})

# The largest attach_max_kb: 64 MiB of text is far past any model's context already.
MAX_ATTACH_KB = 65536

_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def env_var(key: str) -> str:
    """The environment variable for a settings key: ``temperature`` -> ``LLAMA_TUI_TEMPERATURE``."""
    return ENV_PREFIX + key.upper()


ENV_KEYS: dict[str, str] = {
    **{env_var(k): k for k in SETTING_KINDS},
    **{f.env_var: f.name for f in PARAM_FIELDS},
}


# --- coercion and validation -----------------------------------------------------------------


def coerce(kind: str, value: Any) -> Any:
    """Typed values (TOML, JSON, flags): check the type, normalise, never guess."""
    if kind == "str":
        if not isinstance(value, str):
            raise InvalidValue("must be a string")
        return value
    if kind == "optstr":
        if value is None:
            return None
        if not isinstance(value, str):
            raise InvalidValue("must be a string")
        return value.strip() or None
    if kind == "bool":
        if not isinstance(value, bool):
            raise InvalidValue("must be true or false")
        return value
    if kind in ("int", "optint"):
        if value is None and kind == "optint":
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidValue("must be a whole number")
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidValue("must be a number")
        return float(value)
    if kind == "strlist":
        if isinstance(value, str):
            return (value,) if value else ()
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise InvalidValue("must be a list of strings")
    raise AssertionError(kind)  # pragma: no cover


def parse_str(kind: str, raw: str) -> Any:
    """Strings from the environment or a .env file."""
    s = raw.strip()
    if kind == "str":
        return raw
    if kind == "optstr":
        return s or None
    if kind in ("bool", "int", "optint", "float"):
        return parse_text(kind, s)
    if kind == "strlist":
        if s.startswith("["):
            import json  # here, not at the top: not needed before the TUI's first paint

            try:
                parsed = json.loads(s)
            except (ValueError, RecursionError):
                raise InvalidValue("must be a JSON list of strings or one string") from None
            return coerce("strlist", parsed)
        return (raw,) if raw else ()
    raise AssertionError(kind)  # pragma: no cover


def check_setting(key: str, value: Any) -> Any:
    """Validate and normalise one non-generation setting; raise `InvalidValue` with the reason."""
    if key == "model":
        if not value.strip():
            raise InvalidValue("must not be empty (use 'demo' for the bundled model)")
        return value.strip()
    if key == "server" and value is not None:
        if not re.match(r"^https?://[^\s/]+", value) or any(c.isspace() for c in value):
            raise InvalidValue("must be an http:// or https:// URL")
        return value.rstrip("/")
    if key == "api_key_env" and not _ENV_NAME.match(value):
        raise InvalidValue("must be an environment variable name, like LLAMA_TUI_API_KEY")
    if key == "device":
        v = value.strip().lower()
        if not _DEVICE.match(v):
            raise InvalidValue("must be auto, cpu, mps, cuda or cuda:N")
        return v
    if key == "dtype":
        v = DTYPE_ALIASES.get(value.strip().lower())
        if v is None:
            raise InvalidValue("must be auto, float32, bfloat16, float16 or int4 (CPU)")
        return v
    if key == "threads" and value is not None and value < 1:
        raise InvalidValue("must be >= 1")
    if key == "attach_max_kb" and not 1 <= value <= MAX_ATTACH_KB:
        raise InvalidValue(f"must be between 1 and {MAX_ATTACH_KB} (KiB)")
    if key == "thinking":
        v = value.strip().lower()
        if v not in THINKING_VIEWS:
            raise InvalidValue("must be " + ", ".join(THINKING_VIEWS[:-1]) + " or "
                               + THINKING_VIEWS[-1])
        return v
    if key == "device_map" and value is not None and value not in DEVICE_MAPS:
        raise InvalidValue("must be one of " + ", ".join(DEVICE_MAPS))
    if key == "prompt_lookup":
        v = value.strip().lower()
        if v not in ("auto", "on", "off"):
            raise InvalidValue("must be auto, on or off")
        return v
    return value


def show(value: Any) -> str:
    """A short, safe rendering of a rejected value for a message."""
    r = repr(value)
    if len(r) > 60:
        r = r[:57] + "..."
    return redact(clean(r))


# --- raw items, and the files they come from -------------------------------------------------


@dataclass
class Item:
    """One raw value for one key, before validation."""

    key: str
    value: Any  # raw: typed (toml/json/flags) or str (env)
    where: str  # for messages: "config.toml line 3", "LLAMA_TUI_TOP_K", "--top-k"
    typed: bool  # True: `coerce`; False: `parse_str`


@dataclass
class Layer:
    """The items one source sets, applied together."""

    name: str  # for `sources`
    items: list[Item]
    strict: bool = False  # flags: problems are errors, not warnings


def _line_of(text: str, table: str | None, key: str) -> int | None:
    """Best-effort line number of `key` in `table` (None: top level) of a TOML text."""
    current: str | None = None
    pattern = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*=")
    for n, line in enumerate(text.splitlines(), 1):
        header = re.match(r"^\s*\[\s*([^\]]+?)\s*\]", line)
        if header:
            current = header.group(1).strip("\"' ")
            continue
        if current == table and pattern.match(line):
            return n
    return None


def items_from_mapping(
    data: Mapping[str, Any],
    label: str,
    text: str | None,
    warnings: list[str],
) -> list[Item]:
    """Top-level settings plus a [generation] table (TOML and the remembered JSON)."""
    items: list[Item] = []

    def where(table: str | None, key: str) -> str:
        line = _line_of(text, table, key) if text is not None else None
        return f"{label} line {line}" if line else label

    for key, value in data.items():
        if key == "generation":
            if not isinstance(value, Mapping):
                warnings.append(redact(clean(f"{where(None, key)}: [generation] must be a table")))
                continue
            for gkey, gvalue in value.items():
                if gkey in PARAM_KINDS:
                    items.append(Item(gkey, gvalue, where("generation", gkey), typed=True))
                else:
                    warnings.append(
                        redact(clean(f"{where('generation', gkey)}: unknown key {gkey!r}; ignored"))
                    )
        elif key in SETTING_KINDS:
            items.append(Item(key, value, where(None, key), typed=True))
        elif key in PARAM_KINDS:
            # Accepted at top level too, for convenience.
            items.append(Item(key, value, where(None, key), typed=True))
        else:
            warnings.append(redact(clean(f"{where(None, key)}: unknown key {key!r}; ignored")))
    return items


_MAX_FILE_BYTES = 1_000_000


def read_text(path: Path, what: str, warnings: list[str]) -> str | None:
    """The file's text, or None (missing: silently; unreadable / binary: with a warning)."""
    try:
        if not path.exists():
            return None
        if not path.is_file():  # a FIFO or device would block or never end
            warnings.append(redact(clean(f"{path}: the {what} is not a regular file; skipped")))
            return None
        with path.open("rb") as f:
            data = f.read(_MAX_FILE_BYTES + 1)
    except OSError as e:
        warnings.append(
            redact(clean(f"{path}: cannot read the {what} ({e.strerror or e}); skipped"))
        )
        return None
    if len(data) > _MAX_FILE_BYTES:
        warnings.append(redact(clean(f"{path}: the {what} is larger than 1 MB; skipped")))
        return None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        warnings.append(
            redact(clean(f"{path}: the {what} is not UTF-8 text (byte {e.start}); skipped"))
        )
        return None

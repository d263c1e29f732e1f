"""Remembered settings: the fields the user changed in the panel or with `/set`, one by one.

``remembered.json`` (next to config.toml, mode 0600) holds only the fields the user changed,
each with the config.toml value it overrode when it was set (its "base")::

    {"version": 2, "fields": {"temperature": {"value": 0.3, "base": 0.7},
                              "system_prompt": {"value": "Be brief."}}}

No "base" means config.toml did not set the field then. When config.toml's value for a field
is no longer its base, the user edited config.toml since: the file wins for that field and the
remembered entry is stale (dropped on the next write). Values from flags, the environment,
``.env`` or a resumed session are never written here: the app writes only fields the user
changed (see `llama_tui.ui.settings_control`).

A version-1 file (an earlier llama-tui wrote every field, whatever its origin) is read as
legacy: only fields that differ from both the built-in defaults and config.toml's current
value are kept, with config.toml's current value as their base, and the next write converts
it. A file that is not valid JSON is kept aside as ``remembered.json.bad``, never overwritten.

Writes merge per field under an exclusive lock (``remembered.lock``): read the file, change
only the fields this instance changed, write atomically. Two instances changing different
fields both keep their change. Only generation settings, the system prompt and how thinking
is shown (`/think`) are remembered; config.toml is never written by llama-tui. This module
imports no torch, transformers or textual.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llama_tui import locations
from llama_tui.atomic import atomic_write, make_private_dirs
from llama_tui.config.values import PARAM_KINDS, Item, Layer, coerce, read_text, show
from llama_tui.core.params import GenerationParams, InvalidValue
from llama_tui.text import clean, redact

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory lock, writes still merge
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "REMEMBERED_KEYS",
    "VIEW_KEYS",
    "Entry",
    "Remembered",
    "forget_remembered",
    "read_remembered",
    "remembered_notes",
    "remembered_settings_file",
    "update_remembered",
]

VERSION = 2
REMEMBERED_KEYS: tuple[str, ...] = (*PARAM_KINDS, "system_prompt")
# Remembered as well, but not a generation setting (no panel field, no `/set forget`): how
# replies' thinking is shown, chosen with `/think` or its key (`ui.thinking_view`).
VIEW_KEYS: tuple[str, ...] = ("thinking",)
_KINDS = {**PARAM_KINDS, "system_prompt": "str", "thinking": "str"}


@dataclass(frozen=True)
class Entry:
    """One remembered field: the user's value and the config.toml value it overrode."""

    value: Any
    base: Any = None
    has_base: bool = False  # False: config.toml did not set the field when it was remembered

    def to_json(self) -> dict[str, Any]:
        out = {"value": _jsonable(self.value)}
        if self.has_base:
            out["base"] = _jsonable(self.base)
        return out

    def current(self, file_values: Mapping[str, Any], key: str) -> bool:
        """True when config.toml still has the value (or absence) this entry overrode."""
        if key not in file_values:
            return not self.has_base
        return self.has_base and _same(key, self.base, file_values[key])


@dataclass
class Remembered:
    """What `read_remembered` found: entries in force, stale ones, and whether it was legacy."""

    live: dict[str, Entry] = field(default_factory=dict)
    stale: dict[str, Entry] = field(default_factory=dict)
    legacy: bool = False
    path: str = ""

    def layer(self) -> Layer:
        """The live entries as a settings layer (between config.toml and ``.env``)."""
        return Layer(f"remembered:{self.path}",
                     [Item(k, e.value, self.path, typed=True) for k, e in self.live.items()])

    @property
    def needs_write(self) -> bool:
        """A stale entry to drop or a legacy file to convert."""
        return bool(self.stale) or self.legacy


def remembered_settings_file() -> Path:
    """Where the user's own setting changes are remembered (JSON, mode 0600)."""
    return locations.config_dir() / "remembered.json"


def base_entry(key: str, value: Any, file_values: Mapping[str, Any]) -> Entry:
    """An entry for `value`, overriding config.toml's current value for `key` (if any)."""
    if key in file_values:
        return Entry(value, file_values[key], True)
    return Entry(value)


def read_remembered(
    path: Path, file_values: Mapping[str, Any], warnings: list[str]
) -> Remembered:
    """The remembered entries at `path`, split against config.toml's current `file_values`."""
    out = Remembered(path=str(path))
    data = _read_json(path, warnings)
    if data is None:
        return out
    entries, out.legacy = _entries(data, file_values, str(path), warnings)
    for key, entry in entries.items():
        (out.live if entry.current(file_values, key) else out.stale)[key] = entry
    return out


def update_remembered(
    changes: Mapping[str, Entry | None],
    file_values: Mapping[str, Any],
    path: Path | None = None,
) -> Path:
    """Merge `changes` (None: forget the field) into the file, under the lock.

    Other fields are kept as they are in the file now (another instance may have written
    them), except stale ones (config.toml changed since), which are dropped; a legacy file is
    converted. Raises ValueError for a field that is not remembered or a value of the wrong
    type (nothing is written) and OSError when the file cannot be written (the previous file
    is kept). A previous file that is not valid JSON is kept aside as ``remembered.json.bad``.
    """
    for key, entry in changes.items():
        if key not in _KINDS:
            raise ValueError(f"{key} is not a remembered setting")
        if entry is not None:
            try:
                coerce(_KINDS[key], entry.value)
            except InvalidValue as e:
                raise ValueError(f"{key} {e}") from None
    target = remembered_settings_file() if path is None else path
    make_private_dirs(target.parent, chmod_existing=True)
    with _locked(target):
        entries: dict[str, Entry] = {}
        if target.exists():
            data = _read_json(target, [])
            if data is None:
                os.replace(target, target.with_name(target.name + ".bad"))
            else:
                found, _legacy = _entries(data, file_values, str(target), [])
                entries = {k: e for k, e in found.items() if e.current(file_values, k)}
        for key, entry in changes.items():
            if entry is None:
                entries.pop(key, None)
            else:
                entries[key] = entry
        payload = {"version": VERSION,
                   "fields": {k: entries[k].to_json() for k in (*REMEMBERED_KEYS, *VIEW_KEYS)
                              if k in entries}}
        import json  # here, not at the top: not needed before the TUI's first paint

        text = json.dumps(payload, indent=2, ensure_ascii=False) + "\n"
        atomic_write(target, text.encode(), overwrite=True)
    return target


def forget_remembered(path: Path | None = None) -> None:
    """Delete every remembered setting (back to config.toml and defaults)."""
    target = remembered_settings_file() if path is None else path
    with contextlib.suppress(FileNotFoundError):
        target.unlink()


def remembered_notes(
    found: Remembered, file_values: Mapping[str, Any], in_force: set[str]
) -> list[str]:
    """Lines for the user at startup: legacy conversion, stale entries, overrides of the file.

    `in_force`: the remembered fields whose value is in use (a flag or the environment may
    have overridden some).
    """
    notes: list[str] = []
    if found.legacy:
        kept = ", ".join(f"{k} {show(e.value)}" for k, e in found.live.items()) or "nothing"
        notes.append(f"Remembered settings from an earlier llama-tui stored every setting; kept "
                     f"only those unlike the defaults and config.toml: {kept}. "
                     "/set forget KEY drops one.")
    for key, entry in found.stale.items():
        now = show(file_values[key]) if key in file_values else "unset"
        was = show(entry.base) if entry.has_base else "unset"
        notes.append(f"config.toml's {key} is now {now} (it was {was} when you set "
                     f"{show(entry.value)} with {_set_with(key)}): using the file's; your "
                     f"{show(entry.value)} is forgotten.")
    over = {k: f"{k} {show(e.value)} (config.toml: {show(file_values[k])})"
            for k, e in found.live.items()
            if k in in_force and k in file_values and not _same(k, e.value, file_values[k])}
    if over and not found.legacy:
        notes.append(f"What you set with {_set_with(*over)} overrides config.toml: "
                     + ", ".join(over.values()) + ". /set forget KEY uses the file's value.")
    return [redact(clean(n)) for n in notes]


# --- helpers ---------------------------------------------------------------------------------


def _set_with(*keys: str) -> str:
    """How a remembered value was chosen: the system prompt with /system, the thinking view
    with /think, the rest /set."""
    if keys == ("thinking",):
        return "/think or F6"
    if "system_prompt" not in keys:
        return "/set or the panel"
    return "/system or the panel" if len(keys) == 1 else "/set, /system or the panel"


@contextlib.contextmanager
def _locked(target: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``remembered.lock`` beside `target` (blocking)."""
    fd = os.open(target.with_name("remembered.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _read_json(path: Path, warnings: list[str]) -> dict[str, Any] | None:
    """The file's JSON object; None (with a warning) when missing, unreadable or not one."""
    text = read_text(path, "remembered settings", warnings)
    if text is None:
        return None
    import json  # here, not at the top: not needed before the TUI's first paint

    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as e:  # RecursionError: absurdly deep nesting
        warnings.append(redact(clean(f"{path}: not valid JSON ({type(e).__name__}: {e}); "
                                     "ignored")))
        return None
    if not isinstance(data, dict):
        warnings.append(redact(clean(f"{path}: not a JSON object; ignored")))
        return None
    return data


def _entries(
    data: dict[str, Any], file_values: Mapping[str, Any], where: str, warnings: list[str]
) -> tuple[dict[str, Entry], bool]:
    """(entries, legacy) from a parsed file; values that cannot be used are reported."""
    if data.get("version") == VERSION:
        raw = data.get("fields")
        if not isinstance(raw, dict):
            warnings.append(redact(clean(f"{where}: 'fields' is not an object; ignored")))
            return {}, False
        out: dict[str, Entry] = {}
        for key, spec in raw.items():
            entry = _entry(key, spec, where, warnings)
            if entry is not None:
                out[key] = entry
        return out, False
    return _legacy_entries(data, file_values, where, warnings), True


def _entry(key: str, spec: Any, where: str, warnings: list[str]) -> Entry | None:
    if key not in _KINDS:
        warnings.append(redact(clean(f"{where}: {key} is not remembered; ignored")))
        return None
    if not isinstance(spec, dict) or "value" not in spec:
        warnings.append(redact(clean(f"{where}: {key} has no value; ignored")))
        return None
    try:
        value = coerce(_KINDS[key], spec["value"])
    except InvalidValue as e:
        warnings.append(redact(clean(f"{where}: {key} = {show(spec['value'])}: {e}; ignored")))
        return None
    if "base" not in spec:
        return Entry(value)
    try:
        return Entry(value, coerce(_KINDS[key], spec["base"]), True)
    except InvalidValue:
        return Entry(value, spec["base"], True)  # never matches config.toml: stale


def _legacy_entries(
    data: dict[str, Any], file_values: Mapping[str, Any], where: str, warnings: list[str]
) -> dict[str, Entry]:
    """Version 1 stored every field: keep those unlike both the defaults and config.toml."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if key == "generation" and isinstance(value, dict):
            flat.update(value)
        elif key not in ("version", "generation"):
            flat[key] = value
    defaults: dict[str, Any] = {**GenerationParams().to_dict(), "system_prompt": "",
                                "thinking": "fold"}
    out: dict[str, Entry] = {}
    for key, value in flat.items():
        entry = _entry(key, {"value": value}, where, warnings)
        if entry is None or _same(key, entry.value, defaults[key]):
            continue
        if key in file_values and _same(key, entry.value, file_values[key]):
            continue
        out[key] = base_entry(key, entry.value, file_values)
    return out


def _same(key: str, a: Any, b: Any) -> bool:
    try:
        return bool(coerce(_KINDS[key], a) == coerce(_KINDS[key], b))
    except InvalidValue:
        return False


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value

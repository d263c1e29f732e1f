"""Settings: defaults < config.toml < remembered panel settings < .env < environment < flags.

`load_settings` builds one frozen `Settings` from six layers, lowest first:

1. the defaults below;
2. ``config.toml`` in the platformdirs config dir (or ``--config PATH`` / ``LLAMA_TUI_CONFIG``):
   top-level keys for the model and loading, a ``[generation]`` table for sampling;
3. the remembered panel settings (``remembered.json`` next to it, written only by
   `remember_generation`; config.toml is never written by llama-tui);
4. ``.env`` files, from the working directory and the config dir (the working directory's
   wins), never overriding the real environment;
5. ``LLAMA_TUI_*`` environment variables;
6. the command-line flags the user actually typed.

No layer can stop the app from starting: a malformed file is reported (path and line) and
skipped, never rewritten; a value of the wrong type or out of range is reported (key and
where it came from) and ignored, so the layer below shows through.

Secrets are never read here. ``.env`` files may not carry ``HF_TOKEN`` or the API key: those
come from the real environment or huggingface_hub's token file, and huggingface_hub / the
remote backend read them themselves. A ``.env`` in the working directory (think: a cloned
repository) cannot turn on remote code, pickle loading, a server, the API-key variable, TLS
settings or ``HF_ENDPOINT``; those need the config dir's ``.env``, the environment, the
config file or a flag.

This module imports no torch, transformers or textual.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from llama_tui import locations
from llama_tui.engine.base import GenerationParams, LoadOptions
from llama_tui.text import clean, redact

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

__all__ = [
    "DEFAULT_HF_ENDPOINT",
    "ENV_PREFIX",
    "LoadedSettings",
    "Settings",
    "endpoint_warning",
    "env_var",
    "forget_remembered",
    "load_settings",
    "remember_generation",
    "remembered_settings_file",
]

ENV_PREFIX = "LLAMA_TUI_"
DEFAULT_HF_ENDPOINT = "https://huggingface.co"


@dataclass(frozen=True)
class Settings:
    """Everything the app needs to start, frozen; swapped whole, never mutated."""

    model: str = "demo"  # hub id[@revision], local folder, .gguf file, or "demo"
    server: str | None = None  # OpenAI-compatible base URL; when set, no local model loads
    server_model: str | None = None  # model name to ask the server for
    api_key_env: str = "LLAMA_TUI_API_KEY"  # the NAME of the variable holding the API key
    verify_tls: bool = True
    device: str = "auto"
    dtype: str = "auto"
    threads: int | None = None
    trust_remote_code: bool = False
    allow_pickle: bool = False
    compile: bool = True
    kv_reuse: bool = True
    device_map: str | None = None
    load_in_4bit: bool = False
    load_in_8bit: bool = False
    system_prompt: str = ""
    params: GenerationParams = field(default_factory=GenerationParams)
    raw: bool = False  # no chat template: plain completion

    def load_options(self) -> LoadOptions:
        """The local-model loading options these settings describe."""
        return LoadOptions(
            device=self.device,
            dtype=self.dtype,
            threads=self.threads,
            trust_remote_code=self.trust_remote_code,
            allow_pickle=self.allow_pickle,
            device_map=self.device_map,
            load_in_4bit=self.load_in_4bit,
            load_in_8bit=self.load_in_8bit,
            compile=self.compile,
            kv_reuse=self.kv_reuse,
        )


@dataclass
class LoadedSettings:
    """The result of `load_settings`.

    `warnings`: one line per problem found (already sanitised and redacted), for stderr or
    the UI. `sources`: where each key's value came from ("default", "config:PATH",
    "remembered:PATH", ".env:PATH", "env:NAME", "flag"). `errors`: problems with flags the
    user typed (the CLI refuses to start on those: exit 2). `env_exports`: HF_* variables
    from a .env file that are not set in the environment; `apply_env_exports` puts them in
    ``os.environ`` (before huggingface_hub is imported, which reads them at import time).
    """

    settings: Settings
    warnings: list[str] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    env_exports: dict[str, str] = field(default_factory=dict)
    config_path: Path | None = None
    # --resume from the command line: None = not asked, "" = the last session, else ID|PATH.
    resume: str | None = None

    def apply_env_exports(self, environ: Any = None) -> None:
        """Set the .env HF_* variables that the environment does not already define."""
        env = os.environ if environ is None else environ
        for key, value in self.env_exports.items():
            if key not in env:
                env[key] = value


# --- keys, kinds and validation ------------------------------------------------------------

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
    "load_in_4bit": "bool",
    "load_in_8bit": "bool",
    "system_prompt": "str",
    "raw": "bool",
}
PARAM_KINDS: dict[str, str] = {
    "temperature": "float",
    "top_p": "float",
    "top_k": "int",
    "min_p": "float",
    "repetition_penalty": "float",
    "max_new_tokens": "int",
    "do_sample": "bool",
    "seed": "optint",
    "stop": "strlist",
}
ALL_KINDS: dict[str, str] = {**SETTING_KINDS, **PARAM_KINDS}

# Keys a .env in the working directory may not set (it may come with a cloned repository).
SENSITIVE_KEYS = frozenset(
    {"trust_remote_code", "allow_pickle", "server", "api_key_env", "verify_tls"}
)
# HF_* variables we honour from .env files (exported to os.environ when not already set).
HF_DOTENV_KEYS = ("HF_HOME", "HF_HUB_OFFLINE", "HF_ENDPOINT")
SENSITIVE_HF_KEYS = frozenset({"HF_ENDPOINT"})
# Secrets: never read from .env (see module docstring).
SECRET_DOTENV_KEYS = frozenset({"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "LLAMA_TUI_API_KEY"})
# Read by llama-tui from the real environment only (they decide where .env files are).
ENV_ONLY_KEYS = frozenset({"LLAMA_TUI_CONFIG", "LLAMA_TUI_HOME"})

DTYPE_ALIASES = {
    "auto": "auto",
    "float32": "float32",
    "fp32": "float32",
    "float": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
}
DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def env_var(key: str) -> str:
    """The environment variable for a settings key: ``temperature`` -> ``LLAMA_TUI_TEMPERATURE``."""
    return ENV_PREFIX + key.upper()


ENV_KEYS: dict[str, str] = {env_var(k): k for k in ALL_KINDS}


class _Invalid(ValueError):
    """A raw value that cannot be used; the message is the reason."""


def _coerce(kind: str, value: Any) -> Any:
    """Typed values (TOML, JSON, flags): check the type, normalise, never guess."""
    if kind == "str":
        if not isinstance(value, str):
            raise _Invalid("must be a string")
        return value
    if kind == "optstr":
        if value is None:
            return None
        if not isinstance(value, str):
            raise _Invalid("must be a string")
        return value.strip() or None
    if kind == "bool":
        if not isinstance(value, bool):
            raise _Invalid("must be true or false")
        return value
    if kind in ("int", "optint"):
        if value is None and kind == "optint":
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Invalid("must be a whole number")
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Invalid("must be a number")
        return float(value)
    if kind == "strlist":
        if isinstance(value, str):
            return (value,) if value else ()
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise _Invalid("must be a list of strings")
    raise AssertionError(kind)  # pragma: no cover


def _parse_str(kind: str, raw: str) -> Any:
    """Strings from the environment or a .env file."""
    s = raw.strip()
    if kind == "str":
        return raw
    if kind == "optstr":
        return s or None
    if kind == "bool":
        if s.lower() in _TRUE:
            return True
        if s.lower() in _FALSE:
            return False
        raise _Invalid("must be one of 1/0, true/false, yes/no, on/off")
    if kind in ("int", "optint"):
        if kind == "optint" and s.lower() in ("", "none", "random"):
            return None
        try:
            return int(s)
        except ValueError:
            raise _Invalid("must be a whole number") from None
    if kind == "float":
        try:
            return float(s)
        except ValueError:
            raise _Invalid("must be a number") from None
    if kind == "strlist":
        if s.startswith("["):
            try:
                parsed = json.loads(s)
            except (ValueError, RecursionError):
                raise _Invalid("must be a JSON list of strings or one string") from None
            return _coerce("strlist", parsed)
        return (raw,) if raw else ()
    raise AssertionError(kind)  # pragma: no cover


def _check_setting(key: str, value: Any) -> Any:
    """Validate and normalise one non-generation setting; raise `_Invalid` with the reason."""
    if key == "model":
        if not value.strip():
            raise _Invalid("must not be empty (use 'demo' for the bundled model)")
        return value.strip()
    if key == "server" and value is not None:
        if not re.match(r"^https?://[^\s/]+", value) or any(c.isspace() for c in value):
            raise _Invalid("must be an http:// or https:// URL")
        return value.rstrip("/")
    if key == "api_key_env" and not _ENV_NAME.match(value):
        raise _Invalid("must be an environment variable name, like LLAMA_TUI_API_KEY")
    if key == "device":
        v = value.strip().lower()
        if not _DEVICE.match(v):
            raise _Invalid("must be auto, cpu, mps, cuda or cuda:N")
        return v
    if key == "dtype":
        v = DTYPE_ALIASES.get(value.strip().lower())
        if v is None:
            raise _Invalid("must be auto, float32, bfloat16 or float16")
        return v
    if key == "threads" and value is not None and value < 1:
        raise _Invalid("must be >= 1")
    if key == "device_map" and value is not None and value not in DEVICE_MAPS:
        raise _Invalid("must be one of " + ", ".join(DEVICE_MAPS))
    return value


def _show(value: Any) -> str:
    """A short, safe rendering of a rejected value for a message."""
    r = repr(value)
    if len(r) > 60:
        r = r[:57] + "..."
    return redact(clean(r))


# --- layers ---------------------------------------------------------------------------------


@dataclass
class _Item:
    key: str
    value: Any  # raw: typed (toml/json/flags) or str (env)
    where: str  # for messages: "config.toml line 3", "LLAMA_TUI_TOP_K", "--top-k"
    typed: bool  # True: `_coerce`; False: `_parse_str`


@dataclass
class _Layer:
    name: str  # for `sources`
    items: list[_Item]
    strict: bool = False  # flags: problems are errors, not warnings


class _Resolver:
    """Applies layers in order, keeping only values that pass validation."""

    def __init__(self) -> None:
        defaults = Settings()
        self.values: dict[str, Any] = {k: getattr(defaults, k) for k in SETTING_KINDS}
        self.values.update(defaults.params.to_dict())
        self.values["stop"] = tuple(self.values["stop"])
        self.sources: dict[str, str] = dict.fromkeys(ALL_KINDS, "default")
        self.where: dict[str, str] = {}
        self.warnings: list[str] = []
        self.errors: list[str] = []

    def _report(self, layer: _Layer, item: _Item, reason: str) -> None:
        if layer.strict:
            msg = f"{item.where} {_show(item.value)}: {item.key} {reason}"
        else:
            msg = f"{item.where}: {item.key} = {_show(item.value)}: {reason}; ignored"
        (self.errors if layer.strict else self.warnings).append(redact(clean(msg)))

    def apply(self, layer: _Layer) -> None:
        accepted: dict[str, tuple[Any, _Item]] = {}
        for item in layer.items:
            kind = ALL_KINDS[item.key]
            try:
                v = _coerce(kind, item.value) if item.typed else _parse_str(kind, item.value)
                if item.key in SETTING_KINDS:
                    v = _check_setting(item.key, v)
            except _Invalid as e:
                self._report(layer, item, str(e))
                continue
            accepted[item.key] = (v, item)
        # Generation settings are checked together (temperature depends on do_sample); a
        # value this layer set that makes them invalid is dropped, the layer below shows.
        for _ in range(len(PARAM_KINDS) + 1):
            trial = dict(self.values)
            trial.update({k: v for k, (v, _i) in accepted.items()})
            problems = _params_from(trial).problems()
            mine = [k for k in problems if k in accepted]
            if not mine:
                break
            for k in mine:
                self._report(layer, accepted.pop(k)[1], problems[k])
        for k, (v, item) in accepted.items():
            self.values[k] = v
            self.sources[k] = layer.name
            self.where[k] = item.where

    def finish(self) -> Settings:
        defaults = Settings()
        default_values = defaults.params.to_dict()
        # A later layer can make an earlier value invalid (do_sample=true over temperature=0):
        # the later one wins, the earlier one falls back to the default.
        for _ in range(len(PARAM_KINDS) + 1):
            problems = _params_from(self.values).problems()
            if not problems:
                break
            for k, reason in problems.items():
                where = self.where.get(k, "default")
                self.warnings.append(
                    redact(clean(f"{where}: {k} {reason}; using the default")),
                )
                self.values[k] = tuple(default_values[k]) if k == "stop" else default_values[k]
                self.sources[k] = "default"
        if self.values["load_in_4bit"] and self.values["load_in_8bit"]:
            self.warnings.append(
                f"{self.where.get('load_in_8bit', 'settings')}: load_in_4bit and load_in_8bit "
                "are exclusive; using 4-bit"
            )
            self.values["load_in_8bit"] = False
        return Settings(
            **{k: self.values[k] for k in SETTING_KINDS},
            params=_params_from(self.values),
        )


def _params_from(values: Mapping[str, Any]) -> GenerationParams:
    return GenerationParams(**{k: values[k] for k in PARAM_KINDS})


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


def _items_from_mapping(
    data: Mapping[str, Any],
    label: str,
    text: str | None,
    warnings: list[str],
) -> list[_Item]:
    """Top-level settings plus a [generation] table (TOML and the remembered JSON)."""
    items: list[_Item] = []

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
                    items.append(_Item(gkey, gvalue, where("generation", gkey), typed=True))
                else:
                    warnings.append(
                        redact(clean(f"{where('generation', gkey)}: unknown key {gkey!r}; ignored"))
                    )
        elif key in SETTING_KINDS:
            items.append(_Item(key, value, where(None, key), typed=True))
        elif key in PARAM_KINDS:
            # Accepted at top level too, for convenience.
            items.append(_Item(key, value, where(None, key), typed=True))
        else:
            warnings.append(redact(clean(f"{where(None, key)}: unknown key {key!r}; ignored")))
    return items


_MAX_FILE_BYTES = 1_000_000


def _read_text(path: Path, what: str, warnings: list[str]) -> str | None:
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


def _config_layer(path: Path, warnings: list[str]) -> _Layer | None:
    text = _read_text(path, "config file", warnings)
    if text is None:
        return None
    try:
        data = tomllib.loads(text)
    except RecursionError:
        warnings.append(
            redact(clean(f"{path}: nested too deeply to read; using the defaults (the file was "
                         "left unchanged)"))
        )
        return None
    except tomllib.TOMLDecodeError as e:
        # tomllib's message names the line and column: "Invalid value (at line 3, column 7)".
        warnings.append(
            redact(clean(f"{path}: {e}; using the defaults (the file was left unchanged)"))
        )
        return None
    items = _items_from_mapping(data, str(path), text, warnings)
    return _Layer(f"config:{path}", items)


def remembered_settings_file() -> Path:
    """Where the settings panel's choices are remembered (JSON, mode 0600)."""
    return locations.config_dir() / "remembered.json"


def _remembered_layer(path: Path, warnings: list[str]) -> _Layer | None:
    text = _read_text(path, "remembered settings", warnings)
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
    items = _items_from_mapping(data, str(path), None, warnings)
    # Only generation settings and the system prompt are remembered.
    allowed = set(PARAM_KINDS) | {"system_prompt"}
    for item in items:
        if item.key not in allowed:
            warnings.append(redact(clean(f"{path}: {item.key} is not remembered; ignored")))
    return _Layer(f"remembered:{path}", [i for i in items if i.key in allowed])


_DOTENV_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")


def _dotenv_value(raw: str) -> str:
    """Unquote a .env value: 'single' literal, "double" with \\n escapes, bare with # comments."""
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
        inner = raw[1:-1]
        if raw[0] == '"':
            inner = inner.replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")
        return inner
    m = re.match(r"^(.*?)\s+#.*$", raw)
    return m.group(1) if m else raw


def read_dotenv(
    path: Path, *, trusted: bool, warnings: list[str]
) -> tuple[list[_Item], dict[str, str]]:
    """Settings items and HF_* exports from one .env file.

    Only documented keys are kept; the values of other keys are never stored. `trusted` is
    False for the working directory's file: sensitive keys are refused there.
    """
    text = _read_text(path, ".env file", warnings)
    if text is None:
        return [], {}
    items: list[_Item] = []
    exports: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = _DOTENV_LINE.match(line)
        if m is None:
            warnings.append(f"{clean(str(path))} line {n}: not KEY=VALUE; skipped")
            continue
        key = m.group(1)
        where = f"{path} line {n}"
        if key in SECRET_DOTENV_KEYS:
            warnings.append(
                redact(
                    clean(
                        f"{where}: {key} is not read from .env files (llama-tui never reads "
                        "secrets); export it in your shell, or for Hugging Face use "
                        "`hf auth login`"
                    )
                )
            )
            continue
        if key in ENV_KEYS:
            setting = ENV_KEYS[key]
            if not trusted and setting in SENSITIVE_KEYS:
                warnings.append(redact(clean(_untrusted_msg(where, key))))
                continue
            items.append(_Item(setting, _dotenv_value(m.group(2)), f"{where} ({key})", False))
        elif key in HF_DOTENV_KEYS:
            if not trusted and key in SENSITIVE_HF_KEYS:
                warnings.append(redact(clean(_untrusted_msg(where, key))))
                continue
            exports[key] = _dotenv_value(m.group(2))
        elif key in ENV_ONLY_KEYS:
            warnings.append(f"{clean(where)}: {key} is only read from the environment; ignored")
        elif key.startswith(ENV_PREFIX):
            warnings.append(redact(clean(f"{where}: unknown variable {key}; ignored")))
        # Any other key belongs to some other tool: ignored, its value not kept.
    return items, exports


def _untrusted_msg(where: str, key: str) -> str:
    return (
        f"{where}: {key} is not accepted from a .env in the working directory (it could "
        "come with a downloaded project); set it in the environment, the config dir's .env, "
        "config.toml or with a flag"
    )


def _env_layer(environ: Mapping[str, str]) -> _Layer:
    items = [
        _Item(ENV_KEYS[k], v, k, typed=False) for k, v in sorted(environ.items()) if k in ENV_KEYS
    ]
    return _Layer("env", items)


def _flag_layer(cli: Mapping[str, Any]) -> _Layer:
    items: list[_Item] = []
    for key, value in cli.items():
        if key not in ALL_KINDS:
            continue
        if key == "stop" and isinstance(value, list):
            value = tuple(value)
        items.append(_Item(key, value, "--" + key.replace("_", "-"), typed=True))
    return _Layer("flag", items, strict=True)


def load_settings(
    cli: Mapping[str, Any] | None = None,
    config_path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> LoadedSettings:
    """Resolve settings from every layer. Never raises on bad input; see `LoadedSettings`.

    `cli` maps settings keys (Settings fields and GenerationParams fields, flat) to typed
    values for the flags the user typed only. `config_path` overrides the config file
    (--config); otherwise ``LLAMA_TUI_CONFIG`` or ``config.toml`` in the config dir.
    `environ` and `cwd` default to the process's.
    """
    env: Mapping[str, str] = os.environ if environ is None else environ
    here = Path.cwd() if cwd is None else cwd
    warnings: list[str] = []
    errors: list[str] = []
    resolver = _Resolver()

    explicit = config_path is not None or bool(env.get(ENV_PREFIX + "CONFIG"))
    path = (
        config_path
        if config_path is not None
        else Path(env[ENV_PREFIX + "CONFIG"]).expanduser()
        if env.get(ENV_PREFIX + "CONFIG")
        else locations.config_file()
    )
    if explicit and not path.is_file():
        msg = redact(clean(f"config file {path} does not exist or is not a file"))
        (errors if config_path is not None else warnings).append(msg)
    layer = _config_layer(path, warnings)
    if layer:
        resolver.apply(layer)

    layer = _remembered_layer(remembered_settings_file(), warnings)
    if layer:
        resolver.apply(layer)

    # .env: the config dir's first, then the working directory's, so the latter wins.
    exports: dict[str, str] = {}
    seen: set[Path] = set()
    for dotenv, trusted in ((locations.config_dir() / ".env", True), (here / ".env", False)):
        try:
            resolved = dotenv.resolve()
        except (OSError, RuntimeError):
            resolved = dotenv
        if resolved in seen:
            continue  # the working directory is the config dir
        seen.add(resolved)
        items, hf = read_dotenv(dotenv, trusted=trusted, warnings=warnings)
        # Never override the real environment.
        items = [i for i in items if env_var(i.key) not in env]
        if items:
            resolver.apply(_Layer(f".env:{dotenv}", items))
        exports.update(hf)
    exports = {k: v for k, v in exports.items() if k not in env}

    resolver.apply(_env_layer(env))
    if cli:
        resolver.apply(_flag_layer(cli))
    settings = resolver.finish()
    return LoadedSettings(
        settings=settings,
        warnings=warnings + resolver.warnings,
        sources=resolver.sources,
        errors=errors + resolver.errors,
        env_exports=exports,
        config_path=path,
    )


# --- remembering the panel's choices ---------------------------------------------------------


def _atomic_write(path: Path, data: bytes) -> None:
    """Temp file in the same dir (0600), fsync, replace, fsync the dir; no temp left on error."""
    locations.private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    try:
        dfd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


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
    _atomic_write(target, (json.dumps(payload, indent=2, ensure_ascii=False) + "\n").encode())
    return target


def forget_remembered(path: Path | None = None) -> None:
    """Delete the remembered settings (back to config.toml and defaults)."""
    target = remembered_settings_file() if path is None else path
    with contextlib.suppress(FileNotFoundError):
        target.unlink()


# --- HF endpoint ------------------------------------------------------------------------------


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


def describe_sources(loaded: LoadedSettings) -> list[str]:
    """Human-readable "key = value (source)" lines for non-default values (for --debug / UI)."""
    s = loaded.settings
    values: dict[str, Any] = {f.name: getattr(s, f.name) for f in fields(s) if f.name != "params"}
    values.update(s.params.to_dict())
    return [
        redact(clean(f"{k} = {_show(values[k])} ({src})"))
        for k, src in sorted(loaded.sources.items())
        if src != "default"
    ]

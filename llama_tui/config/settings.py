"""Settings: defaults < config.toml < remembered panel settings < .env < environment < flags.

`load_settings` builds one frozen `Settings` from six layers, lowest first:

1. the defaults below;
2. ``config.toml`` in the platformdirs config dir (or ``--config PATH`` / ``LLAMA_TUI_CONFIG``):
   top-level keys for the model and loading, a ``[generation]`` table for sampling;
3. the remembered settings (``remembered.json`` next to it): only the fields the user changed
   in the panel or with ``/set``, each kept only while config.toml still has the value it
   overrode (see `llama_tui.config.remembered`; config.toml is never written by llama-tui);
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

This module holds `Settings`, `LoadedSettings` and the resolution of the layers. The pieces
live beside it: `llama_tui.config.values` (keys, kinds, coercion, validation, reading a
settings file), `llama_tui.config.dotenv` (``.env`` files),
`llama_tui.config.remembered` (the remembered panel settings) and `llama_tui.startup` (the
``HF_ENDPOINT`` warning).

This module imports no torch, transformers or textual.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llama_tui import locations
from llama_tui.config.dotenv import read_dotenv
from llama_tui.config.remembered import (
    REMEMBERED_KEYS,
    VIEW_KEYS,
    Remembered,
    read_remembered,
    remembered_notes,
    remembered_settings_file,
)
from llama_tui.config.values import (
    ALL_KINDS,
    ENV_KEYS,
    PARAM_KINDS,
    SETTING_KINDS,
    Item,
    Layer,
    check_setting,
    coerce,
    env_var,
    items_from_mapping,
    parse_str,
    read_text,
    show,
)
from llama_tui.core.backend import LoadOptions
from llama_tui.core.params import ENV_PREFIX, PARAM_BY_NAME, GenerationParams, InvalidValue
from llama_tui.text import clean, redact


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
    draft_model: str | None = None  # assisted decoding: a small model, same tokenizer
    prompt_lookup: str = "auto"  # auto | on | off (engine/local/assisted.py)
    load_in_4bit: bool = False
    load_in_8bit: bool = False
    system_prompt: str = ""
    params: GenerationParams = field(default_factory=GenerationParams)
    raw: bool = False  # no chat template: plain completion
    thinking: str = "fold"  # how replies' thinking is shown: fold | show | hide (/think)
    attach_max_kb: int = 256  # the largest file /read and --file attach, in KiB

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
            draft_model=self.draft_model,
            prompt_lookup=self.prompt_lookup,
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
    `file_values`: config.toml's values for the remembered keys; `remembered`: the entries
    read; `notes`: lines for the user (remembered values over config.toml, stale ones).
    """

    settings: Settings
    warnings: list[str] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    env_exports: dict[str, str] = field(default_factory=dict)
    config_path: Path | None = None
    # Where each non-default value was read: "PATH line 3", "PATH line 2 (LLAMA_TUI_X)",
    # "LLAMA_TUI_X", "--top-k" (for --show-config).
    where: dict[str, str] = field(default_factory=dict)
    file_values: dict[str, Any] = field(default_factory=dict)
    remembered: Remembered = field(default_factory=Remembered)
    notes: list[str] = field(default_factory=list)
    # --resume from the command line: None = not asked, "" = the last session, else ID|PATH.
    resume: str | None = None

    def apply_env_exports(self, environ: Any = None) -> None:
        """Set the .env HF_* variables that the environment does not already define."""
        env = os.environ if environ is None else environ
        for key, value in self.env_exports.items():
            if key not in env:
                env[key] = value

# --- layers ---------------------------------------------------------------------------------


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

    def _report(self, layer: Layer, item: Item, reason: str) -> None:
        if layer.strict:
            msg = f"{item.where} {show(item.value)}: {item.key} {reason}"
        else:
            msg = f"{item.where}: {item.key} = {show(item.value)}: {reason}; ignored"
        (self.errors if layer.strict else self.warnings).append(redact(clean(msg)))

    def apply(self, layer: Layer) -> None:
        accepted: dict[str, tuple[Any, Item]] = {}
        for item in layer.items:
            kind = ALL_KINDS[item.key]
            try:
                v = coerce(kind, item.value) if item.typed else parse_str(kind, item.value)
                if item.key in SETTING_KINDS:
                    v = check_setting(item.key, v)
            except InvalidValue as e:
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


def _config_layer(path: Path, warnings: list[str]) -> Layer | None:
    text = read_text(path, "config file", warnings)
    if text is None:
        return None
    import tomllib  # here, not at the top: most launches have no config.toml (first paint)

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
    items = items_from_mapping(data, str(path), text, warnings)
    return Layer(f"config:{path}", items)


def _env_layer(environ: Mapping[str, str]) -> Layer:
    items = [
        Item(ENV_KEYS[k], v, k, typed=False) for k, v in sorted(environ.items()) if k in ENV_KEYS
    ]
    return Layer("env", items)


def _flag_layer(cli: Mapping[str, Any]) -> Layer:
    items: list[Item] = []
    for key, value in cli.items():
        if key not in ALL_KINDS:
            continue
        if key == "stop" and isinstance(value, list):
            value = tuple(value)
        field = PARAM_BY_NAME.get(key)
        flag = field.flag if field else "--" + key.replace("_", "-")
        items.append(Item(key, value, flag, typed=True))
    return Layer("flag", items, strict=True)


def _config_path(
    config_path: Path | None, env: Mapping[str, str], errors: list[str], warnings: list[str]
) -> Path:
    """--config, else LLAMA_TUI_CONFIG, else the config dir's config.toml.

    A file the user named that is missing is an error for the flag, a warning for the
    variable.
    """
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
    return path


def _apply_dotenv(
    resolver: _Resolver, env: Mapping[str, str], here: Path, warnings: list[str]
) -> dict[str, str]:
    """Apply the .env layers, the config dir's first, then the working directory's (which
    wins); return the HF_* exports the environment does not set."""
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
            resolver.apply(Layer(f".env:{dotenv}", items))
        exports.update(hf)
    exports = {k: v for k, v in exports.items() if k not in env}
    return exports


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

    path = _config_path(config_path, env, errors, warnings)
    layer = _config_layer(path, warnings)
    if layer:
        resolver.apply(layer)
    file_values = config_file_values(path)
    remembered = read_remembered(remembered_settings_file(), file_values, warnings)
    resolver.apply(remembered.layer())

    exports = _apply_dotenv(resolver, env, here, warnings)
    resolver.apply(_env_layer(env))
    if cli:
        resolver.apply(_flag_layer(cli))
    settings = resolver.finish()
    in_force = {k for k in REMEMBERED_KEYS if resolver.sources[k].startswith("remembered:")}
    return LoadedSettings(
        settings=settings,
        warnings=warnings + resolver.warnings,
        sources=resolver.sources,
        errors=errors + resolver.errors,
        env_exports=exports,
        config_path=path,
        where=resolver.where,
        file_values=file_values,
        remembered=remembered,
        notes=remembered_notes(remembered, file_values, in_force),
    )


def config_file_values(path: Path | None) -> dict[str, Any]:
    """config.toml's current values for the remembered keys, read afresh (no warnings)."""
    resolver = _Resolver()
    layer = _config_layer(locations.config_file() if path is None else path, [])
    if layer:
        resolver.apply(layer)
    return {k: resolver.values[k] for k in (*REMEMBERED_KEYS, *VIEW_KEYS)
            if resolver.sources[k].startswith("config:")}


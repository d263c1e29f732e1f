"""Generation parameters: one field table, the frozen settings of one reply, their validation.

`PARAM_FIELDS` declares each generation setting once: its name, kind, default, bounds, label,
help, the `/set` aliases and its command-line flag. Everything else is derived from it: the
dataclass defaults, `GenerationParams.problems`, the config and environment keys
(``LLAMA_TUI_TOP_K``), the command-line flags (``--top-k``), the settings panel's rows,
`/set` and its aliases, and the fields presets reset. `parse_bool` and `parse_text` are the
one way text (``/set``, the panel, environment variables, ``.env``) becomes a value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any, Literal

ENV_PREFIX = "LLAMA_TUI_"
# Bounds used by validation; the settings panel and the config loader share them.
MAX_NEW_TOKENS_CAP = 1_000_000

Kind = Literal["float", "int", "optint", "bool", "strlist"]

TRUE_WORDS = ("true", "yes", "on", "1", "y")
FALSE_WORDS = ("false", "no", "off", "0", "n")
BOOL_REASON = "must be true or false (or yes/no, on/off, 1/0, y/n)"
_NONE_WORDS = ("", "none", "random")  # an empty optional whole number


class InvalidValue(ValueError):
    """A value that cannot be used; the message is the reason ("must be a number")."""


@dataclass(frozen=True)
class Bounds:
    """A numeric range; `note` follows the reason ("(0 means off)")."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low itself is excluded
    high_open: bool = False
    note: str = ""

    def contains(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def reason(self) -> str:
        """``must be in (0, 1]``, ``must be >= 1``, ``must be > 0 (1.0 means off)``."""
        if self.low is not None and self.high is not None:
            text = (
                f"must be in {'(' if self.low_open else '['}{self.low:g}, "
                f"{self.high:g}{')' if self.high_open else ']'}"
            )
        elif self.low is not None:
            text = f"must be {'>' if self.low_open else '>='} {self.low:g}"
        else:
            text = f"must be {'<' if self.high_open else '<='} {self.high:g}"
        return f"{text} {self.note}" if self.note else text


@dataclass(frozen=True)
class ParamField:
    """One generation setting, declared once."""

    name: str  # the GenerationParams field, config key and `/set` key
    kind: Kind
    default: Any
    label: str  # the settings panel's row (for a bool with an `inverse`: its checkbox)
    help: str  # the panel's tooltip
    bounds: Bounds | None = None
    sampling_bounds: Bounds | None = None  # tighter bounds while sampling (do_sample)
    aliases: tuple[str, ...] = ()  # other `/set` spellings
    inverse: str = ""  # a bool's opposite, as a `/set` key, flag and panel checkbox
    metavar: str = ""
    flag_help: str = ""  # --help's text ("" when the flag's name says it all)
    sampling: bool = False  # how tokens are picked: presets reset these
    from_model: bool = False  # a model's generation_config.json may set it

    @property
    def env_var(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def flag(self) -> str:
        return "--" + (self.inverse or self.name).replace("_", "-")

    def problem(self, value: Any, sampling: bool) -> str | None:
        """Why `value` is not valid for this field (None when it is)."""
        if self.kind == "optint" and value is None:
            return None
        if self.kind == "bool":
            return None if isinstance(value, bool) else "must be true or false"
        if self.kind == "strlist":
            ok = isinstance(value, tuple) and all(isinstance(s, str) and s for s in value)
            return None if ok else "must be a list of non-empty strings"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return "must be a number" if self.kind == "float" else "must be a whole number"
        if self.kind != "float" and not isinstance(value, int):
            return "must be a whole number"
        if not math.isfinite(value):
            return "must be a finite number"
        bounds = self.sampling_bounds if sampling and self.sampling_bounds else self.bounds
        if bounds is not None and not bounds.contains(value):
            return bounds.reason()
        return None


PARAM_FIELDS: tuple[ParamField, ...] = (
    ParamField(
        "temperature", "float", 0.7, "Temperature", "randomness; > 0 when sampling",
        bounds=Bounds(low=0),
        sampling_bounds=Bounds(low=0, low_open=True,
                               note="when sampling (use greedy for deterministic output)"),
        aliases=("temp", "t"), metavar="T", sampling=True, from_model=True,
    ),
    ParamField(
        "top_p", "float", 1.0, "Top-p", "nucleus sampling, (0, 1]; 1 = off",
        bounds=Bounds(low=0, high=1, low_open=True),
        aliases=("top-p", "topp"), metavar="P", sampling=True, from_model=True,
    ),
    ParamField(
        "top_k", "int", 50, "Top-k", "sample from the k most likely; 0 = off",
        bounds=Bounds(low=0, note="(0 means off)"),
        aliases=("top-k", "topk"), metavar="K", flag_help="0 means off", sampling=True,
        from_model=True,
    ),
    ParamField(
        "min_p", "float", 0.0, "Min-p", "drop tokens below min_p x best; 0 = off",
        bounds=Bounds(low=0, high=1, high_open=True),
        aliases=("min-p", "minp"), metavar="P", flag_help="0 means off", sampling=True,
        from_model=True,
    ),
    ParamField(
        "repetition_penalty", "float", 1.0, "Repetition penalty", "> 0; 1 = off",
        bounds=Bounds(low=0, low_open=True, note="(1.0 means off)"),
        aliases=("rep", "repetition-penalty", "repeat_penalty"), metavar="R",
        flag_help="1.0 means off", sampling=True, from_model=True,
    ),
    ParamField(
        "max_new_tokens", "int", 512, "Max new tokens", "reply length limit",
        bounds=Bounds(low=1),
        aliases=("max", "max_tokens", "max-tokens", "max-new-tokens"), metavar="N",
        from_model=True,
    ),
    ParamField(
        "do_sample", "bool", True, "Greedy", "the most likely token every time (no sampling)",
        aliases=("sample", "sampling"), inverse="greedy",
        flag_help="greedy decoding (no sampling)", sampling=True, from_model=True,
    ),
    ParamField(
        "seed", "optint", None, "Seed", "empty = random",
        bounds=Bounds(low=0, note="(empty for random)"), metavar="N",
    ),
    ParamField(
        "stop", "strlist", (), "Stop strings", "comma-separated; \\n, \\, escapes",
        aliases=("stops",), metavar="TEXT", flag_help="stop string (repeatable)",
    ),
    ParamField(
        "logprobs", "int", 5, "Token alternatives",
        "record each token's probability and the k most likely alternatives (/inspect); 0 = off",
        bounds=Bounds(low=0, high=20, note="(0 turns it off)"),
        aliases=("top_logprobs", "top-logprobs", "alternatives"), metavar="K",
        flag_help="record each token's probability and K alternatives (default 5; 0: off); "
        "with --json adds a tokens array",
    ),
)
PARAM_BY_NAME: dict[str, ParamField] = {f.name: f for f in PARAM_FIELDS}
# How tokens are picked: presets reset these; the model's generation_config provides them.
SAMPLING_FIELDS: tuple[str, ...] = tuple(f.name for f in PARAM_FIELDS if f.sampling)
# The generation_config.json fields a model's own defaults are read from.
MODEL_DEFAULT_FIELDS: tuple[str, ...] = tuple(f.name for f in PARAM_FIELDS if f.from_model)


def lookup(key: str) -> tuple[ParamField, bool] | None:
    """The field a `/set` key names, and whether it names the opposite (``greedy``)."""
    k = key.strip().lower()
    for f in PARAM_FIELDS:
        if k == f.name or k in f.aliases:
            return f, False
        if f.inverse and k == f.inverse:
            return f, True
    return None


def _default(name: str) -> Any:
    return PARAM_BY_NAME[name].default


# --- text -> values --------------------------------------------------------------------------


def parse_bool(text: str) -> bool:
    """The one boolean parser: `/set`, environment variables and ``.env`` accept these words."""
    t = text.strip().lower()
    if t in TRUE_WORDS:
        return True
    if t in FALSE_WORDS:
        return False
    raise InvalidValue(BOOL_REASON)


def parse_text(kind: str, text: str) -> Any:
    """Typed text for a "bool", "int", "optint" or "float" value; `InvalidValue` with the reason.

    An empty "optint" (or "none", "random") is None; other empty text is refused.
    """
    t = text.strip()
    if kind == "bool":
        return parse_bool(t)
    if kind == "optint" and t.lower() in _NONE_WORDS:
        return None
    if not t:
        raise InvalidValue("must not be empty")
    if kind in ("int", "optint"):
        try:
            return int(t)
        except ValueError:
            raise InvalidValue("must be a whole number") from None
    if kind == "float":
        try:
            value = float(t)
        except ValueError:
            raise InvalidValue("must be a number") from None
        if not math.isfinite(value):
            raise InvalidValue("must be a finite number")
        return value
    raise AssertionError(kind)  # pragma: no cover


# --- the runtime value -----------------------------------------------------------------------


@dataclass(frozen=True)
class GenerationParams:
    """Frozen sampling settings for one reply. Swapped whole, never mutated.

    The fields, their defaults and bounds are `PARAM_FIELDS`'. `top_k == 0` and
    `min_p == 0.0` mean "off"; `do_sample=False` is greedy decoding, in which case the
    sampling fields are ignored (and not validated as strictly).
    """

    temperature: float = _default("temperature")
    top_p: float = _default("top_p")
    top_k: int = _default("top_k")
    min_p: float = _default("min_p")
    repetition_penalty: float = _default("repetition_penalty")
    max_new_tokens: int = _default("max_new_tokens")
    do_sample: bool = _default("do_sample")
    seed: int | None = _default("seed")
    stop: tuple[str, ...] = _default("stop")
    logprobs: int = _default("logprobs")

    def problems(self, context_length: int | None = None) -> dict[str, str]:
        """Return {field: reason} for every invalid field; empty when valid.

        transformers validates unevenly at generate time (inf accepted, top_p=1.5 silently
        ignored), so we validate everything ourselves before a value is applied or saved.
        """
        sampling = bool(self.do_sample)
        out: dict[str, str] = {}
        for f in PARAM_FIELDS:
            reason = f.problem(getattr(self, f.name), sampling)
            if reason is not None:
                out[f.name] = reason
        m = self.max_new_tokens
        if "max_new_tokens" not in out and (
            m > MAX_NEW_TOKENS_CAP or (context_length is not None and m >= context_length)
        ):
            limit = MAX_NEW_TOKENS_CAP if context_length is None else context_length
            out["max_new_tokens"] = f"must be below the model's context ({limit} tokens)"
        return out

    def with_changes(self, **changes: Any) -> GenerationParams:
        """A copy with some fields replaced (not validated: call `problems()`)."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["stop"] = list(self.stop)
        return d

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

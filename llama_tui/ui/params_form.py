"""Text <-> `GenerationParams` for the settings panel and `/set KEY VALUE`.

Both take what the user typed as text, parse it field by field, and validate the result with
`GenerationParams.problems` (the engine's own rules). A value is applied only when the whole
set is valid, so an invalid value is never used for a reply nor remembered.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from llama_tui.core.params import GenerationParams

Kind = Literal["float", "int", "optional_int", "stops", "bool"]


@dataclass(frozen=True)
class FieldSpec:
    name: str  # GenerationParams field
    label: str
    kind: Kind
    help: str


FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("temperature", "Temperature", "float", "randomness; > 0 when sampling"),
    FieldSpec("top_p", "Top-p", "float", "nucleus sampling, (0, 1]; 1 = off"),
    FieldSpec("top_k", "Top-k", "int", "sample from the k most likely; 0 = off"),
    FieldSpec("min_p", "Min-p", "float", "drop tokens below min_p x best; 0 = off"),
    FieldSpec("repetition_penalty", "Repetition penalty", "float", "> 0; 1 = off"),
    FieldSpec("max_new_tokens", "Max new tokens", "int", "reply length limit"),
    FieldSpec("seed", "Seed", "optional_int", "empty = random"),
    FieldSpec("stop", "Stop strings", "stops", "comma-separated; \\n, \\, escapes"),
)
FIELD_BY_NAME = {f.name: f for f in FIELDS}

# `/set` accepts these spellings too.
ALIASES = {
    "temp": "temperature",
    "t": "temperature",
    "top-p": "top_p",
    "topp": "top_p",
    "top-k": "top_k",
    "topk": "top_k",
    "min-p": "min_p",
    "minp": "min_p",
    "rep": "repetition_penalty",
    "repetition-penalty": "repetition_penalty",
    "repeat_penalty": "repetition_penalty",
    "max": "max_new_tokens",
    "max_tokens": "max_new_tokens",
    "max-tokens": "max_new_tokens",
    "max-new-tokens": "max_new_tokens",
    "stops": "stop",
    "greedy": "greedy",
    "sample": "do_sample",
    "do_sample": "do_sample",
    "sampling": "do_sample",
}
SET_KEYS = (*(f.name for f in FIELDS), "greedy", "do_sample")


# Presets change only how tokens are picked; length, seed and stop strings stay as they are.
# "balanced" is the model's own generation_config; the others are the usual recipes.
PRESETS: dict[str, str] = {
    "precise": "greedy: the most likely token every time (code, facts, reproducible)",
    "balanced": "the model's own defaults",
    "creative": "sampling at temperature 1.0, top-p 0.95, min-p 0.05 (stories, ideas)",
}
_SAMPLING_FIELDS = ("do_sample", "temperature", "top_p", "top_k", "min_p", "repetition_penalty")


def preset_params(
    name: str, current: GenerationParams, defaults: GenerationParams
) -> GenerationParams:
    """`current` with the sampling fields of preset `name`; ParseError for an unknown one."""
    key = name.strip().lower()
    if key not in PRESETS:
        raise ParseError(f"unknown preset {name!r}; one of: {', '.join(PRESETS)}")
    base = current.with_changes(**{f: getattr(defaults, f) for f in _SAMPLING_FIELDS})
    if key == "precise":
        return base.with_changes(do_sample=False)
    if key == "creative":
        return base.with_changes(do_sample=True, temperature=1.0, top_p=0.95, top_k=0,
                                 min_p=0.05)
    return base


class ParseError(ValueError):
    """The text is not a value of the field's type; the message is the reason."""


def parse_bool(text: str) -> bool:
    t = text.strip().lower()
    if t in ("1", "true", "yes", "on", "y"):
        return True
    if t in ("0", "false", "no", "off", "n"):
        return False
    raise ParseError("must be true or false")


def parse_stops(text: str) -> tuple[str, ...]:
    """`a, b\\nc` -> ("a", "b\\nc"). Backslash escapes: \\n \\t \\, \\\\ ; blanks dropped."""
    out: list[str] = []
    cur: list[str] = []
    it = iter(text)
    for ch in it:
        if ch == "\\":
            nxt = next(it, "")
            cur.append({"n": "\n", "t": "\t", ",": ",", "\\": "\\"}.get(nxt, "\\" + nxt))
        elif ch == ",":
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return tuple(s.strip(" ") for s in out if s.strip(" "))


def format_stops(stops: tuple[str, ...]) -> str:
    def esc(s: str) -> str:
        return s.replace("\\", "\\\\").replace(",", "\\,").replace("\n", "\\n").replace("\t", "\\t")

    return ", ".join(esc(s) for s in stops)


def parse_value(name: str, text: str) -> Any:
    """Parse `text` for field `name`; raises `ParseError` with a reason."""
    kind = FIELD_BY_NAME[name].kind
    t = text.strip()
    if kind == "stops":
        return parse_stops(text)
    if kind == "optional_int" and not t:
        return None
    if not t:
        raise ParseError("required")
    if kind in ("int", "optional_int"):
        try:
            return int(t)
        except ValueError:
            raise ParseError("must be a whole number") from None
    try:
        value = float(t)
    except ValueError:
        raise ParseError("must be a number") from None
    if not math.isfinite(value):
        raise ParseError("must be a finite number")
    return value


def format_value(name: str, value: Any) -> str:
    kind = FIELD_BY_NAME[name].kind
    if kind == "stops":
        return format_stops(tuple(value))
    if value is None:
        return ""
    if kind == "float":
        return f"{float(value):g}"
    return str(value)


def build_params(
    base: GenerationParams,
    texts: dict[str, str],
    do_sample: bool,
    context_length: int | None,
) -> tuple[GenerationParams | None, dict[str, str]]:
    """Parse every field; return (params, {}) when valid, else (None, {field: reason})."""
    problems: dict[str, str] = {}
    changes: dict[str, Any] = {"do_sample": do_sample}
    for name, text in texts.items():
        if text == format_value(name, getattr(base, name)):
            continue  # unchanged: keep the exact value (the text may be rounded)
        try:
            changes[name] = parse_value(name, text)
        except ParseError as e:
            problems[name] = str(e)
    candidate = base.with_changes(**changes)
    for name, reason in candidate.problems(context_length).items():
        problems.setdefault(name, reason)
    if problems:
        return None, problems
    return candidate, {}


def apply_setting(
    params: GenerationParams, key: str, value_text: str, context_length: int | None
) -> GenerationParams:
    """`/set KEY VALUE`: a new validated params, or `ParseError` with the reason."""
    name = ALIASES.get(key.lower(), key.lower())
    if name == "greedy":
        new = params.with_changes(do_sample=not parse_bool(value_text))
    elif name == "do_sample":
        new = params.with_changes(do_sample=parse_bool(value_text))
    elif name in FIELD_BY_NAME:
        new = params.with_changes(**{name: parse_value(name, value_text)})
    else:
        raise ParseError(f"unknown setting {key!r}; one of: {', '.join(SET_KEYS)}")
    problems = new.problems(context_length)
    if problems:
        field, reason = next(iter(problems.items()))
        raise ParseError(f"{field} {reason}")
    return new


def overrides(params: GenerationParams, defaults: GenerationParams) -> set[str]:
    """Names of fields whose value differs from the model's defaults."""
    a, b = params.to_dict(), defaults.to_dict()
    return {k for k in a if a[k] != b[k]}

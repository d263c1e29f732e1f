"""Text <-> `GenerationParams` for the settings panel and `/set KEY VALUE`, and the presets.

Both take what the user typed as text, parse it field by field, and validate the result with
`GenerationParams.problems` (the engine's own rules). A value is applied only when the whole
set is valid, so an invalid value is never used for a reply nor remembered. The fields, their
kinds, labels, help and `/set` aliases are `llama_tui.core.params.PARAM_FIELDS`'.
"""

from __future__ import annotations

from typing import Any

from llama_tui.core.params import (
    PARAM_BY_NAME,
    PARAM_FIELDS,
    SAMPLING_FIELDS,
    GenerationParams,
    InvalidValue,
    ParamField,
    lookup,
    parse_bool,
    parse_text,
)

# The panel's text rows: every field but the booleans, which are checkboxes (do_sample's is
# its inverse, "Greedy").
FIELDS: tuple[ParamField, ...] = tuple(f for f in PARAM_FIELDS if f.kind != "bool")
FIELD_BY_NAME = {f.name: f for f in FIELDS}
CHECKBOXES: tuple[ParamField, ...] = tuple(f for f in PARAM_FIELDS if f.kind == "bool")
# The `/set` keys the "unknown setting" message lists.
SET_KEYS = (*FIELD_BY_NAME, *(k for f in CHECKBOXES for k in (f.inverse, f.name) if k))


# Presets change only how tokens are picked; length, seed and stop strings stay as they are.
# "balanced" is the model's own generation_config; the others are the usual recipes.
PRESETS: dict[str, str] = {
    "precise": "greedy: the most likely token every time (code, facts, reproducible)",
    "balanced": "the model's own defaults",
    "creative": "sampling at temperature 1.0, top-p 0.95, min-p 0.05, top-k off (stories, ideas)",
}


def preset_params(
    name: str, current: GenerationParams, defaults: GenerationParams
) -> GenerationParams:
    """`current` with the sampling fields of preset `name`; InvalidValue for an unknown one."""
    key = name.strip().lower()
    if key not in PRESETS:
        raise InvalidValue(f"unknown preset {name!r}; one of: {', '.join(PRESETS)}")
    base = current.with_changes(**{f: getattr(defaults, f) for f in SAMPLING_FIELDS})
    if key == "precise":
        return base.with_changes(do_sample=False)
    if key == "creative":
        return base.with_changes(do_sample=True, temperature=1.0, top_p=0.95, top_k=0,
                                 min_p=0.05)
    return base


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
    """Parse `text` for field `name`; raises `InvalidValue` with a reason."""
    kind = PARAM_BY_NAME[name].kind
    if kind == "strlist":
        return parse_stops(text)
    return parse_text(kind, text)


def format_value(name: str, value: Any) -> str:
    """The text `parse_value` reads back as `value`."""
    kind = PARAM_BY_NAME[name].kind
    if kind == "strlist":
        return format_stops(tuple(value))
    if value is None:
        return ""
    if kind == "float":
        return f"{float(value):g}"
    return str(value).lower() if kind == "bool" else str(value)


def build_params(
    base: GenerationParams,
    texts: dict[str, str],
    flags: dict[str, bool],
    context_length: int | None,
) -> tuple[GenerationParams | None, dict[str, str]]:
    """Parse every text field and take the boolean `flags` (field: value) as they are.

    Return (params, {}) when the whole set is valid, else (None, {field: reason}).
    """
    problems: dict[str, str] = {}
    changes: dict[str, Any] = dict(flags)
    for name, text in texts.items():
        if text == format_value(name, getattr(base, name)):
            continue  # unchanged: keep the exact value (the text may be rounded)
        try:
            changes[name] = parse_value(name, text)
        except InvalidValue as e:
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
    """`/set KEY VALUE`: a new validated params, or `InvalidValue` with the reason."""
    found = lookup(key)
    if found is None:
        raise InvalidValue(f"unknown setting {key!r}; one of: {', '.join(SET_KEYS)}")
    field, inverse = found
    if field.kind == "bool":
        value: Any = parse_bool(value_text) != inverse
    else:
        value = parse_value(field.name, value_text)
    new = params.with_changes(**{field.name: value})
    problems = new.problems(context_length)
    if problems:
        name, reason = next(iter(problems.items()))
        raise InvalidValue(f"{name} {reason}")
    return new


def overrides(params: GenerationParams, defaults: GenerationParams) -> set[str]:
    """Names of fields whose value differs from the model's defaults."""
    a, b = params.to_dict(), defaults.to_dict()
    return {k for k in a if a[k] != b[k]}

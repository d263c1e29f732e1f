"""The generation field table: every surface derives from it, with the same bounds and words."""

from __future__ import annotations

import ast
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from llama_tui.cli.main import build_parser
from llama_tui.config.dotenv import read_dotenv
from llama_tui.config.settings import load_settings
from llama_tui.config.values import ENV_KEYS, PARAM_KINDS
from llama_tui.core import params as core_params
from llama_tui.core.params import (
    FALSE_WORDS,
    MODEL_DEFAULT_FIELDS,
    PARAM_FIELDS,
    SAMPLING_FIELDS,
    TRUE_WORDS,
    GenerationParams,
    InvalidValue,
    ParamField,
    lookup,
    parse_bool,
)
from llama_tui.ui.params_form import (
    CHECKBOXES,
    FIELDS,
    PRESETS,
    apply_setting,
    build_params,
    format_value,
    preset_params,
)

NUMERIC = [f for f in PARAM_FIELDS if f.bounds is not None]


def _load_env(tmp_path: Path, environ: dict[str, str]) -> Any:
    return load_settings(environ=environ, cwd=tmp_path)


def test_the_dataclass_is_the_table() -> None:
    assert tuple(f.name for f in fields(GenerationParams)) == tuple(f.name for f in PARAM_FIELDS)
    defaults = GenerationParams()
    for f in PARAM_FIELDS:
        assert getattr(defaults, f.name) == f.default, f.name
    assert defaults.problems() == {}


def test_every_field_has_a_flag_an_env_var_a_config_key_a_set_key_and_a_panel_control() -> None:
    actions = {opt: a for a in build_parser()._actions for opt in a.option_strings}
    panel = {f.name for f in FIELDS} | {f.name for f in CHECKBOXES}
    for f in PARAM_FIELDS:
        assert actions[f.flag].dest == f.name, f.flag
        assert ENV_KEYS[f.env_var] == f.name
        assert PARAM_KINDS[f.name] == f.kind
        assert f.name in panel
        assert lookup(f.name) == (f, False)
        for alias in f.aliases:
            assert lookup(alias.upper()) == (f, False), alias
    assert len(panel) == len(PARAM_FIELDS)


def test_flags_keep_their_names_and_help() -> None:
    actions = {a.dest: a for a in build_parser()._actions}
    assert actions["do_sample"].option_strings == ["--greedy"]
    assert actions["do_sample"].help == "greedy decoding (no sampling)"
    assert actions["repetition_penalty"].option_strings == ["--repetition-penalty"]
    assert actions["repetition_penalty"].help == "1.0 means off"
    assert actions["stop"].help == "stop string (repeatable)"
    args = vars(build_parser().parse_args(["--top-k", "3", "--stop", "a", "--stop", "b"]))
    assert args == {"top_k": 3, "stop": ["a", "b"]}


def test_aliases_are_unique() -> None:
    keys = [k for f in PARAM_FIELDS for k in (f.name, *f.aliases, f.inverse) if k]
    assert len(keys) == len(set(keys))


def _outside(f: ParamField, sampling: bool) -> tuple[float, str]:
    """A value just outside `f`'s bounds, and the reason the table gives for it."""
    b = f.sampling_bounds if sampling and f.sampling_bounds else f.bounds
    assert b is not None
    if b.low is not None:
        value = b.low if b.low_open else b.low - 1
    else:
        assert b.high is not None
        value = b.high if b.high_open else b.high + 1
    return (int(value) if f.kind != "float" else value), b.reason()


@pytest.mark.parametrize("f", NUMERIC, ids=lambda f: f.name)
def test_bounds_are_the_same_for_set_panel_env_dotenv_and_flags(
    f: ParamField, tmp_path: Path
) -> None:
    value, reason = _outside(f, sampling=True)
    text = str(value)
    base = GenerationParams()
    with pytest.raises(InvalidValue, match=f"^{f.name} ") as set_error:
        apply_setting(base, f.name, text, None)
    assert str(set_error.value) == f"{f.name} {reason}"

    texts = {g.name: format_value(g.name, getattr(base, g.name)) for g in FIELDS}
    _params, panel_problems = build_params(base, {**texts, f.name: text}, {}, None)
    assert panel_problems == {f.name: reason}

    env = _load_env(tmp_path, {f.env_var: text})
    assert getattr(env.settings.params, f.name) == f.default
    assert env.warnings == [f"{f.env_var}: {f.name} = {text!r}: {reason}; ignored"]

    (tmp_path / ".env").write_text(f"{f.env_var}={text}\n", encoding="utf-8")
    dotenv = _load_env(tmp_path, {})
    assert len(dotenv.warnings) == 1 and dotenv.warnings[0].endswith(f": {reason}; ignored")

    flags = load_settings(cli={f.name: value}, environ={}, cwd=tmp_path / "elsewhere")
    assert flags.errors == [f"{f.flag} {value!r}: {f.name} {reason}"]


@pytest.mark.parametrize("word", [*TRUE_WORDS, *FALSE_WORDS, "YES", " Off ", "Y"])
def test_set_and_the_environment_accept_the_same_boolean_words(word: str, tmp_path: Path) -> None:
    expected = word.strip().lower() in TRUE_WORDS
    by_set = apply_setting(GenerationParams(), "do_sample", word, None)
    assert by_set.do_sample is expected
    assert apply_setting(GenerationParams(), "greedy", word, None).do_sample is not expected
    # temperature stays valid either way, so the only difference is the word itself.
    by_env = _load_env(tmp_path, {"LLAMA_TUI_DO_SAMPLE": word})
    assert by_env.warnings == [] and by_env.settings.params.do_sample is expected
    assert _load_env(tmp_path, {"LLAMA_TUI_COMPILE": word}).settings.compile is expected
    (tmp_path / ".env").write_text(f"LLAMA_TUI_DO_SAMPLE={word.strip()}\n", encoding="utf-8")
    items, _ = read_dotenv(tmp_path / ".env", trusted=False, warnings=[])
    by_dotenv = _load_env(tmp_path, {})
    assert [i.key for i in items] == ["do_sample"]
    assert by_dotenv.settings.params.do_sample is expected


def test_a_word_that_is_not_boolean_is_refused_alike(tmp_path: Path) -> None:
    with pytest.raises(InvalidValue) as from_set:
        apply_setting(GenerationParams(), "greedy", "maybe", None)
    env = _load_env(tmp_path, {"LLAMA_TUI_DO_SAMPLE": "maybe"})
    assert env.warnings == [f"LLAMA_TUI_DO_SAMPLE: do_sample = 'maybe': {from_set.value}; ignored"]
    with pytest.raises(InvalidValue):
        parse_bool("")


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_are_valid_and_change_only_the_sampling_fields(name: str) -> None:
    current = GenerationParams(max_new_tokens=77, seed=3, stop=("###",), temperature=0.3)
    new = preset_params(name, current, GenerationParams())
    assert new.problems() == {}
    changed = {k for k, v in new.to_dict().items() if v != current.to_dict()[k]}
    assert changed <= set(SAMPLING_FIELDS)


def test_model_defaults_are_the_sampling_fields_and_the_length() -> None:
    assert set(MODEL_DEFAULT_FIELDS) == {*SAMPLING_FIELDS, "max_new_tokens"}


def test_core_imports_nothing_of_ours_nor_heavy_libraries() -> None:
    core = Path(core_params.__file__).parent
    for path in core.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [a.name for a in node.names] if isinstance(node, ast.Import)
                else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level
                else []
            )
            for name in names:
                top = name.split(".")[0]
                assert top not in ("torch", "transformers", "textual", "httpx", "httpx2"), path
                assert top != "llama_tui" or name.startswith("llama_tui.core"), (path, name)


def test_env_example_documents_every_field_with_its_flag() -> None:
    example = Path(__file__).parents[2] / ".env.example"
    lines = example.read_text(encoding="utf-8").splitlines()
    for f in PARAM_FIELDS:
        at = next(i for i, line in enumerate(lines) if line.startswith(f"# {f.env_var}="))
        assert f.flag in " ".join(lines[at - 1 : at + 1]), f.name

"""The assisted-decoding settings: `draft_model` and `prompt_lookup` through every layer.

Both are load options (they change the speed, never the text): a flag, an environment
variable, a config key, and `Settings.load_options()` carries them to the engine.
"""

from __future__ import annotations

from pathlib import Path

from llama_tui.cli.main import build_parser
from llama_tui.config.settings import load_settings


def test_defaults_and_load_options(tmp_path: Path) -> None:
    loaded = load_settings(environ={}, cwd=tmp_path)
    options = loaded.settings.load_options()
    assert options.draft_model is None and options.prompt_lookup == "auto"


def test_flags_reach_the_load_options(tmp_path: Path) -> None:
    args = vars(build_parser().parse_args(["--draft-model", "org/small", "--prompt-lookup", "ON"]))
    loaded = load_settings(cli=args, environ={}, cwd=tmp_path)
    assert not loaded.errors
    options = loaded.settings.load_options()
    assert options.draft_model == "org/small" and options.prompt_lookup == "on"
    assert loaded.where["draft_model"] == "--draft-model"


def test_environment_and_bad_values(tmp_path: Path) -> None:
    env = {"LLAMA_TUI_PROMPT_LOOKUP": "off", "LLAMA_TUI_DRAFT_MODEL": "  "}
    loaded = load_settings(environ=env, cwd=tmp_path)
    assert loaded.settings.prompt_lookup == "off" and loaded.settings.draft_model is None

    bad = load_settings(environ={"LLAMA_TUI_PROMPT_LOOKUP": "sometimes"}, cwd=tmp_path)
    assert bad.settings.prompt_lookup == "auto"
    assert any(
        "LLAMA_TUI_PROMPT_LOOKUP" in w and "must be auto, on or off" in w for w in bad.warnings
    )

    flag = load_settings(cli={"prompt_lookup": "maybe"}, environ={}, cwd=tmp_path)
    assert any("must be auto, on or off" in e for e in flag.errors)

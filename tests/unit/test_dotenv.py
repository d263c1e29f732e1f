""".env syntax (python-dotenv's parser) under our policy: keys we read, line numbers, trust."""

from __future__ import annotations

from pathlib import Path

import pytest

from llama_tui.config.dotenv import read_dotenv
from llama_tui.config.values import ALL_KINDS, parse_str

TOKEN = "hf_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6"


def _read(tmp_path: Path, text: str, trusted: bool = True) -> tuple[dict[str, str], list[str]]:
    path = tmp_path / ".env"
    path.write_text(text, encoding="utf-8")
    warnings: list[str] = []
    items, exports = read_dotenv(path, trusted=trusted, warnings=warnings)
    values = {i.key: i.value for i in items} | exports
    return values, warnings


@pytest.mark.parametrize(
    ("line", "key", "value"),
    [
        # .env.example's own line, uncommented: the comment is not the value.
        ('LLAMA_TUI_SEED=                    # empty or "random" = random', "seed", ""),
        ('LLAMA_TUI_SYSTEM_PROMPT="value" # note', "system_prompt", "value"),
        ("LLAMA_TUI_SYSTEM_PROMPT='single' # note", "system_prompt", "single"),
        ('LLAMA_TUI_SYSTEM_PROMPT="a\\tb\\nc"', "system_prompt", "a\tb\nc"),
        ("LLAMA_TUI_SYSTEM_PROMPT='a\\tb'", "system_prompt", "a\\tb"),  # literal in '...'
        ('LLAMA_TUI_SYSTEM_PROMPT="say \\"hi\\""', "system_prompt", 'say "hi"'),
        ("export LLAMA_TUI_TOP_K=7   # inline comment", "top_k", "7"),
        ("LLAMA_TUI_STOP=a#b", "stop", "a#b"),  # no space before '#': part of the value
        ("HF_HOME = /x/hf", "HF_HOME", "/x/hf"),
    ],
)
def test_values(tmp_path: Path, line: str, key: str, value: str) -> None:
    values, warnings = _read(tmp_path, line + "\n")
    assert values == {key: value}
    assert warnings == []


def test_multi_line_quoted_value_keeps_line_numbers(tmp_path: Path) -> None:
    text = (
        'LLAMA_TUI_SYSTEM_PROMPT="You are terse.\n'
        "Answer in English.\"\n"
        "LLAMA_TUI_TOP_K=3\n"
        "not an assignment\n"
    )
    path = tmp_path / ".env"
    path.write_text(text, encoding="utf-8")
    warnings: list[str] = []
    items, _ = read_dotenv(path, trusted=True, warnings=warnings)
    assert [(i.key, i.value) for i in items] == [
        ("system_prompt", "You are terse.\nAnswer in English."),
        ("top_k", "3"),
    ]
    assert items[0].where == f"{path} line 1 (LLAMA_TUI_SYSTEM_PROMPT)"
    assert items[1].where == f"{path} line 3 (LLAMA_TUI_TOP_K)"
    assert warnings == [f"{path} line 4: not KEY=VALUE; skipped"]


def test_env_example_uncommented_reads_cleanly(tmp_path: Path) -> None:
    example = Path(__file__).parents[2] / ".env.example"
    lines = [
        line[2:] if line.startswith(("# LLAMA_TUI_", "# HF_")) else line
        for line in example.read_text(encoding="utf-8").splitlines()
    ]
    values, warnings = _read(tmp_path, "\n".join(lines) + "\n")
    assert warnings == [
        w for w in warnings if "only read from the environment" in w or "not read from" in w
    ]
    for key, value in values.items():
        if key in ALL_KINDS:
            parse_str(ALL_KINDS[key], value)  # raises on a value that is not usable
    assert values["seed"] == "" and values["device"] == "auto"


def test_policy_on_top_of_the_parser(tmp_path: Path) -> None:
    text = (
        f'HF_TOKEN="{TOKEN}"\n'
        "LLAMA_TUI_TRUST_REMOTE_CODE=1\n"
        "OTHER_TOOL_SECRET='kept nowhere'\n"
        "LLAMA_TUI_TYPO=1\n"
    )
    values, warnings = _read(tmp_path, text, trusted=False)
    assert values == {}
    joined = "\n".join(warnings)
    assert TOKEN not in joined and "kept nowhere" not in joined
    assert "line 1: HF_TOKEN is not read" in joined
    assert "line 2: LLAMA_TUI_TRUST_REMOTE_CODE is not accepted" in joined
    assert "line 4: unknown variable LLAMA_TUI_TYPO" in joined


def test_no_variable_expansion(tmp_path: Path) -> None:
    # python-dotenv's loader expands ${VAR}; its parser, which is all we use, does not.
    values, _ = _read(tmp_path, 'LLAMA_TUI_SYSTEM_PROMPT="${HOME} and $USER"\n')
    assert values == {"system_prompt": "${HOME} and $USER"}

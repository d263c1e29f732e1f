"""``llama-tui --show-config``: each effective value with its source; secrets never shown."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from llama_tui import locations
from llama_tui.cli import main as cli
from llama_tui.cli.show_config import source_label
from llama_tui.config.remembered import base_entry, update_remembered
from llama_tui.config.settings import config_file_values

TOKEN = "hf_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6"
API_KEY = "sk-" + "Zy9Xw8Vu7Ts6Rq5Po4Nm3Lk2"


def _rows(out: str) -> dict[str, tuple[str, str]]:
    """key -> (value, source) from the settings table."""
    rows: dict[str, tuple[str, str]] = {}
    for line in out.splitlines():
        m = re.match(r"^  (\w+(?: key)?)\s{2,}(\S(?:.*?\S)?)\s{2,}(\S.*)$", line)
        if m:
            rows[m.group(1)] = (m.group(2), m.group(3))
    return rows


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "work"
    d.mkdir()
    monkeypatch.chdir(d)
    for name in ("LLAMA_TUI_API_KEY", "HF_TOKEN", "HF_ENDPOINT", "HF_HOME", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    return d


def test_every_source_is_named_with_its_line(
    work: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = work / "my.toml"
    config.write_text(
        '# comment\nmodel = "org/model"\n\n[generation]\ntemperature = 0.4\ntop_p = 0.8\n',
        encoding="utf-8",
    )
    (work / ".env").write_text(
        "# notes\nLLAMA_TUI_TOP_K=9\nLLAMA_TUI_SEED=   # empty or \"random\"\n"
        "LLAMA_TUI_DTYPE=float32\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("LLAMA_TUI_MIN_P", "0.05")
    monkeypatch.setenv("LLAMA_TUI_DTYPE", "bfloat16")  # the environment beats .env
    assert cli.main(["--show-config", "--config", str(config), "--max-new-tokens", "64"]) == 0
    captured = capsys.readouterr()
    rows = _rows(captured.out)
    assert rows["model"] == ('"org/model"', f"{config}:2")
    assert rows["temperature"] == ("0.4", f"{config}:5")
    assert rows["top_p"] == ("0.8", f"{config}:6")
    assert rows["top_k"] == ("9", f"{work / '.env'}:2")
    assert rows["seed"] == ("none", f"{work / '.env'}:3")  # empty (random), comment not read
    assert rows["dtype"] == ('"bfloat16"', "LLAMA_TUI_DTYPE")
    assert rows["min_p"] == ("0.05", "LLAMA_TUI_MIN_P")
    assert rows["max_new_tokens"] == ("64", "flag --max-new-tokens")
    assert rows["device"] == ('"auto"', "default")
    assert captured.err == ""


def test_remembered_values_are_labelled(
    work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = config_file_values(None)
    update_remembered({"temperature": base_entry("temperature", 0.2, files)}, files)
    assert cli.main(["--show-config"]) == 0
    assert _rows(capsys.readouterr().out)["temperature"] == ("0.2", "remembered")


def test_secrets_are_never_printed(
    work: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LLAMA_TUI_API_KEY", API_KEY)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("LLAMA_TUI_SYSTEM_PROMPT", f"my token is {TOKEN}")
    argv = ["--show-config", "--server", f"http://user:{API_KEY}@host:8000/v1?key={API_KEY}"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert TOKEN not in out and API_KEY not in out
    rows = _rows(out)
    assert rows["server"] == ('"http://host:8000/v1"', "flag --server")
    assert rows["api key"][0] == "set in LLAMA_TUI_API_KEY (not shown)"
    assert "HF token        set in HF_TOKEN (not shown)" in out
    assert "hf_***" in rows["system_prompt"][0]


def test_files_and_hf_variables_are_listed(
    work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (locations.config_dir() / ".env").parent.mkdir(parents=True, exist_ok=True)
    (locations.config_dir() / ".env").write_text("HF_HUB_OFFLINE=1\n", encoding="utf-8")
    assert cli.main(["--show-config"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"HF_HUB_OFFLINE\s+1\s+\.env", out)
    assert re.search(r"HF_ENDPOINT\s+unset\s+default", out)
    assert re.search(r"cwd \.env\s+.*\(not found\)", out)


def test_bad_flag_is_still_a_usage_error(work: Path) -> None:
    assert cli.main(["--show-config", "--top-p", "7"]) == 2


@pytest.mark.parametrize(
    ("source", "where", "label"),
    [
        ("default", None, "default"),
        ("config:/c/config.toml", "/c/config.toml line 3", "/c/config.toml:3"),
        ("config:/c/config.toml", "/c/config.toml", "/c/config.toml"),
        (".env:/w/.env", "/w/.env line 4 (LLAMA_TUI_TOP_K)", "/w/.env:4"),
        ("remembered:/c/remembered.json", "remembered", "remembered"),
        ("env", "LLAMA_TUI_TOP_K", "LLAMA_TUI_TOP_K"),
        ("flag", "--top-k", "flag --top-k"),
    ],
)
def test_source_labels(source: str, where: str | None, label: str) -> None:
    assert source_label(source, where) == label

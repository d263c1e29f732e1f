"""Startup checks (CVE floors, HF_ENDPOINT, .env rules) and static checks (the import
contracts in pyproject.toml, mypy strict and ruff on llama_tui)."""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import llama_tui
from llama_tui.cli import main as cli
from llama_tui.config.settings import load_settings

ROOT = Path(llama_tui.__file__).parent
REPO = ROOT.parent

# -- startup checks -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dist", "version", "cve"),
    [
        ("transformers", "5.2.9", "CVE-2026-4372"),
        ("transformers", "4.57.1", "CVE-2026-4372"),
        ("transformers", "5.3.0rc1", "CVE-2026-4372"),  # a pre-release comes before the fix
        ("torch", "2.5.1+cu121", "CVE-2025-32434"),
        ("torch", "2.6.0", None),
        ("transformers", "5.24.0", None),
    ],
)
def test_old_versions_warn_naming_the_cve(
    dist: str, version: str, cve: str | None, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    real = importlib.metadata.version

    def fake(name: str) -> str:
        return version if name == dist else real(name)

    monkeypatch.setattr(importlib.metadata, "version", fake)
    warnings = cli.startup_warnings()
    hits = [w for w in warnings if dist in w]
    if cve is None:
        assert not hits, warnings
        return
    assert len(hits) == 1 and cve in hits[0] and version in hits[0]
    # Headless: printed on stderr before anything runs (the TUI: the next test).
    code = cli.main(["--prompt", "hi", "--model", "./does-not-exist"])
    err = capsys.readouterr().err
    assert code == 1 and cve in err


@pytest.mark.asyncio
async def test_old_versions_warn_in_the_tui(monkeypatch: pytest.MonkeyPatch) -> None:
    """The TUI reads package metadata in a worker after its first paint (it costs ~15 ms)
    and shows the warning as a toast."""
    from tests.ui.fakes import FakeBackend
    from tests.ui.helpers import make_app, notes, ready, until

    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version",
                        lambda name: "2.5.1" if name == "torch" else real(name))
    app = make_app(FakeBackend())
    async with app.run_test(size=(120, 30), notifications=True) as pilot:
        await ready(pilot)
        await until(pilot, lambda: any("CVE-2025-32434" in n for n in notes(app)))


def test_non_default_hf_endpoint_is_shown_before_any_request(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from llama_tui.engine.loading import hub

    monkeypatch.setenv("HF_ENDPOINT", "https://mirror.evil.example")
    order: list[str] = []
    real_err = cli._err

    def err(msg: str) -> None:
        order.append("stderr:" + msg)
        real_err(msg)

    def resolve(*a: object, **k: object) -> object:
        order.append("request")
        raise OSError("offline")

    monkeypatch.setattr(cli, "_err", err)
    monkeypatch.setattr(hub, "resolve_hub", resolve)
    cli.main(["--prompt", "hi", "--model", "org/some-model"])
    shown = [i for i, o in enumerate(order) if "mirror.evil.example" in o]
    assert shown, order
    requests = [i for i, o in enumerate(order) if o == "request"]
    assert not requests or shown[0] < requests[0]


@pytest.mark.asyncio
async def test_hf_endpoint_warning_is_in_the_tui(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.ui.fakes import FakeBackend, FakeFactory
    from tests.ui.helpers import notes, ready

    monkeypatch.setenv("HF_ENDPOINT", "https://mirror.evil.example/")
    captured: dict[str, object] = {}
    import llama_tui.ui.app as app_module

    def run_app(loaded: object, **k: object) -> int:
        captured["loaded"] = loaded
        return 0

    monkeypatch.setattr(app_module, "run_app", run_app)
    assert cli.main(["--model", "fake"]) == 0
    loaded = captured["loaded"]
    app = app_module.create_app(loaded, backend_factory=FakeFactory(fake=FakeBackend()))  # type: ignore[arg-type]
    async with app.run_test(size=(120, 30), notifications=True) as pilot:
        await ready(pilot)
        assert any("mirror.evil.example" in n for n in notes(app)), notes(app)


@pytest.mark.parametrize(
    ("line", "trusted_only"),
    [
        ("LLAMA_TUI_TRUST_REMOTE_CODE=1", True),
        ("LLAMA_TUI_ALLOW_PICKLE=true", True),
        ("LLAMA_TUI_SERVER=http://evil.example", True),
        ("HF_ENDPOINT=https://evil.example", True),
        ("LLAMA_TUI_TEMPERATURE=0.3", False),
    ],
)
def test_dotenv_rules(line: str, trusted_only: bool, tmp_path: Path) -> None:
    """Only the working dir's and the config dir's .env; a cloned repo's .env cannot turn on
    dangerous settings; never overrides the environment; secrets never read."""
    from llama_tui import locations

    work = tmp_path / "clone"
    work.mkdir()
    (work / ".env").write_text(line + "\nHF_TOKEN=hf_" + "Z" * 34 + "\n")
    key = line.split("=")[0]
    loaded = load_settings(cwd=work, environ={})
    applied = key in loaded.env_exports or any(
        src.startswith(".env") for src in loaded.sources.values()
    )
    assert applied is (not trusted_only), (loaded.sources, loaded.warnings)
    assert any("HF_TOKEN" in w for w in loaded.warnings)
    assert all("Z" * 20 not in w for w in loaded.warnings)
    assert "HF_TOKEN" not in loaded.env_exports
    # The config dir's .env may set it; the real environment still wins.
    cfg = locations.config_dir()
    cfg.mkdir(parents=True, exist_ok=True)
    (cfg / ".env").write_text(line + "\n")
    (work / ".env").unlink()
    loaded = load_settings(cwd=work, environ={})
    assert key in loaded.env_exports or any(s.startswith(".env") for s in loaded.sources.values())
    loaded = load_settings(cwd=work, environ={key: "0" if "=1" in line or "true" in line
                                              else line.split("=", 1)[1]})
    assert not any(s.startswith(".env") for s in loaded.sources.values())
    assert key not in loaded.env_exports
    # A .env in a parent directory is never read.
    (cfg / ".env").unlink()
    (tmp_path / ".env").write_text(line + "\n")
    loaded = load_settings(cwd=work, environ={})
    assert not any(s.startswith(".env") for s in loaded.sources.values())
    assert not loaded.env_exports


# -- static checks ---------------------------------------------------------------------------

def _tool(name: str) -> str:
    exe = Path(sys.executable).parent / name
    found = str(exe) if exe.exists() else shutil.which(name)
    if not found:
        pytest.skip(f"{name} is not installed")
    return found


def test_import_contracts_hold() -> None:
    """The layers and who may import textual, torch, transformers, httpx2 (pyproject.toml's
    [tool.importlinter]); lazy imports inside functions count too."""
    r = subprocess.run([_tool("lint-imports"), "--no-cache"], capture_output=True, text=True,
                       timeout=300, cwd=REPO)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


def test_ruff_is_clean() -> None:
    r = subprocess.run([_tool("ruff"), "check", "llama_tui", "tests/reliability"],
                       capture_output=True, text=True, timeout=300, cwd=REPO)
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy_strict_is_clean() -> None:
    # pyproject.toml: strict = true over llama_tui (warn_unused_ignores off: the ignores
    # cover torch / transformers versions with and without type information).
    r = subprocess.run([_tool("mypy")], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert "strict = true" in (REPO / "pyproject.toml").read_text()
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]

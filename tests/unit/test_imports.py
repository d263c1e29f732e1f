"""Import direction at run time, proven in fresh interpreters.

`lint-imports` (contracts in pyproject.toml) checks the import statements; these tests check
what importing actually pulls in, which also covers imports done lazily inside functions:

- nothing below the UI (chat core, engine, session, config, cli, helpers) imports textual;
- nothing outside llama_tui.engine imports torch or transformers, and importing a module of
  the engine package does not either: they are imported when a function needs them.

Each check walks the package with pkgutil in a subprocess and imports the modules one by one.
A module that cannot be imported fails the test with its error: a broken module must not pass
as "nothing forbidden was imported".
"""

from __future__ import annotations

import json
import subprocess
import sys

_SCRIPT = r"""
import importlib, json, pkgutil, sys, traceback
import llama_tui

prefixes = tuple(json.loads(sys.argv[1]))
excluded = tuple(json.loads(sys.argv[2]))
forbidden = json.loads(sys.argv[3])
names = sorted(
    m.name for m in pkgutil.walk_packages(llama_tui.__path__, "llama_tui.")
    if m.name != "llama_tui.__main__"
)
names = [n for n in ["llama_tui", *names]
         if (not prefixes or n.startswith(prefixes)) and not n.startswith(excluded)]
result = {"checked": [], "failed": {}, "offender": None}
for name in names:
    try:
        importlib.import_module(name)
    except Exception:
        result["failed"][name] = traceback.format_exc(limit=-3)
        continue
    result["checked"].append(name)
    bad = [m for m in forbidden if m in sys.modules]
    if bad:
        result["offender"] = [name, bad]
        break
print(json.dumps(result))
"""


def _run(prefixes: list[str], excluded: list[str], forbidden: list[str]) -> list[str]:
    """Import the matching modules in a fresh interpreter; return the names checked.

    Fails the calling test when a module cannot be imported or pulls in a forbidden module.
    """
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            _SCRIPT,
            json.dumps(prefixes),
            json.dumps(excluded),
            json.dumps(forbidden),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout.strip().splitlines()[-1])
    failed: dict[str, str] = result["failed"]
    assert not failed, "modules that cannot be imported:\n" + "\n".join(
        f"{name}:\n{error}" for name, error in failed.items()
    )
    assert result["offender"] is None, (
        f"importing {result['offender'][0]} imported {result['offender'][1]}"
    )
    checked: list[str] = result["checked"]
    assert checked, f"no module matched {prefixes}"
    return checked


# Everything except the Textual UI (cli.main starts the UI by importing it inside a function).
BELOW_UI = [
    "llama_tui.core",
    "llama_tui.chat",
    "llama_tui.engine",
    "llama_tui.session",
    "llama_tui.config",
    "llama_tui.cli",
    "llama_tui.text",
    "llama_tui.logs",
    "llama_tui.locations",
    "llama_tui.atomic",
    "llama_tui.startup",
]


def test_nothing_below_the_ui_imports_textual() -> None:
    checked = _run(BELOW_UI, [], ["textual"])
    for must in ("llama_tui.config.settings", "llama_tui.text", "llama_tui.cli.main",
                 "llama_tui.core.backend", "llama_tui.cli.headless"):
        assert must in checked


def test_nothing_outside_engine_imports_torch_or_transformers() -> None:
    checked = _run([], ["llama_tui.engine."], ["torch", "transformers"])
    assert "llama_tui.cli.main" in checked and "llama_tui.ui.app" in checked


def test_engine_modules_import_torch_lazily() -> None:
    checked = _run(["llama_tui.engine"], [], ["torch", "transformers"])
    assert "llama_tui.engine.local.backend" in checked


def test_package_import_is_light() -> None:
    code = (
        "import sys, llama_tui, llama_tui.cli.main, llama_tui.config.settings\n"
        "import llama_tui.engine.factory\n"
        "print([m for m in ('torch','transformers','textual','huggingface_hub') "
        "if m in sys.modules])"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"

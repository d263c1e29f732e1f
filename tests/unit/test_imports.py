"""Import direction, proven in fresh interpreters.

- engine / session / config / text / cli / logs / locations never import textual;
- nothing outside llama_tui.engine imports torch or transformers (importing a module of
  the engine package may not do it either until a function needs them: they are lazy).

Each check walks the package with pkgutil in a subprocess, imports modules one by one and
names the first module that pulled in a forbidden one. Modules that do not import yet
(written concurrently by others) are skipped and listed.
"""

from __future__ import annotations

import json
import subprocess
import sys

_SCRIPT = r"""
import importlib, json, pkgutil, sys
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
result = {"checked": [], "skipped": {}, "offender": None}
for name in names:
    try:
        importlib.import_module(name)
    except Exception as e:  # not written yet, or broken: someone else's test says so
        result["skipped"][name] = f"{type(e).__name__}: {e}"
        continue
    result["checked"].append(name)
    bad = [m for m in forbidden if m in sys.modules]
    if bad:
        result["offender"] = [name, bad]
        break
print(json.dumps(result))
"""


def _run(prefixes: list[str], excluded: list[str], forbidden: list[str]) -> dict[str, object]:
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
    result: dict[str, object] = json.loads(r.stdout.strip().splitlines()[-1])
    return result


CORE = [
    "llama_tui.core",
    "llama_tui.engine",
    "llama_tui.session",
    "llama_tui.config.settings",
    "llama_tui.text",
    "llama_tui.cli.main",
    "llama_tui.logs",
    "llama_tui.locations",
]


def test_core_never_imports_textual() -> None:
    result = _run(CORE, [], ["textual"])
    assert result["offender"] is None, result["offender"]
    checked = result["checked"]
    assert isinstance(checked, list)
    for must in ("llama_tui.config.settings", "llama_tui.text", "llama_tui.cli.main",
                 "llama_tui.core.backend"):
        assert must in checked, result["skipped"]


def test_nothing_outside_engine_imports_torch_or_transformers() -> None:
    result = _run([], ["llama_tui.engine."], ["torch", "transformers"])
    assert result["offender"] is None, result["offender"]
    checked = result["checked"]
    assert isinstance(checked, list) and "llama_tui.cli.main" in checked


def test_engine_modules_import_torch_lazily() -> None:
    result = _run(["llama_tui.engine"], [], ["torch", "transformers"])
    assert result["offender"] is None, result["offender"]


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

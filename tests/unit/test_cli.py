"""Command line: parsing, usage errors, startup checks, headless streaming with a fake backend."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import types
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from llama_tui import logs
from llama_tui.cli import main as cli
from llama_tui.core.backend import ChatMessage, Generation, GenerationStats, ModelInfo, StopReason
from llama_tui.core.errors import OutOfMemoryError
from llama_tui.core.params import GenerationParams

TOKEN = "hf_" + "Zq9" * 12


@pytest.fixture(autouse=True)
def _no_log_handlers() -> Iterator[None]:
    yield
    logs.teardown_logging()


def test_only_typed_flags_are_present() -> None:
    p = cli.build_parser()
    assert vars(p.parse_args([])) == {}
    ns = vars(
        p.parse_args(
            [
                "-m",
                "org/x",
                "--greedy",
                "--stop",
                "a",
                "--stop",
                "b",
                "--no-compile",
                "--top-k",
                "3",
                "--system",
                "S",
                "--resume",
                "--prompt",
                "-",
            ]
        )
    )
    assert ns == {
        "model": "org/x",
        "do_sample": False,
        "stop": ["a", "b"],
        "compile": False,
        "top_k": 3,
        "system_prompt": "S",
        "resume": "",
        "prompt": "-",
    }
    assert vars(p.parse_args(["--resume", "abc"]))["resume"] == "abc"
    settings_part = cli._settings_cli(ns)
    assert "prompt" not in settings_part and "resume" not in settings_part


def test_every_settings_flag_maps_to_a_setting() -> None:
    from llama_tui.config.values import ALL_KINDS

    p = cli.build_parser()
    dests = {a.dest for a in p._actions} - {"help", "version"}
    assert dests - set(cli._RUN_KEYS) <= set(ALL_KINDS)


def test_version_and_help_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--version"]) == 0
    assert "llama-tui" in capsys.readouterr().out
    assert cli.main(["--help"]) == 0
    assert "--prompt" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        ["--temperature", "nan", "--prompt", "x"],
        ["--top-k", "x"],
        ["--bogus"],
        ["--top-p", "2", "--prompt", "x"],
        ["--save", "out.md"],
        ["--device", "gpu"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == 2
    assert capsys.readouterr().out == ""


def test_missing_config_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["--config", str(tmp_path / "none.toml"), "--prompt", "hi"]) == 2
    assert "none.toml" in capsys.readouterr().err


def test_startup_warnings_name_the_cves() -> None:
    assert cli.startup_warnings({"transformers": "5.24.0", "torch": "2.13.0+cpu"}) == []
    w = cli.startup_warnings({"transformers": "5.2.9", "torch": "2.5.1+cu121"})
    assert len(w) == 2
    assert "CVE-2026-4372" in w[0] and "transformers" in w[0]
    assert "CVE-2025-32434" in w[1] and "torch" in w[1]
    assert cli.startup_warnings({"transformers": "5.3.0", "torch": "2.6.0+cu124"}) == []
    assert cli.startup_warnings() == []  # the installed versions are above the floors


@pytest.mark.parametrize(
    ("dist", "version"),
    [
        # Pre-releases and dev builds of the floor come before the release with the fix.
        ("transformers", "5.3.0rc1"),
        ("transformers", "5.3.0.dev0"),
        ("torch", "2.6.0.dev20241112+cpu"),
        ("torch", "2.6.0a0"),
        ("torch", "not-a-version"),  # unknown: warned about, not assumed fixed
    ],
)
def test_pre_releases_of_the_floor_are_below_it(dist: str, version: str) -> None:
    ok = {"transformers": "5.24.0", "torch": "2.13.0"}
    (w,) = cli.startup_warnings({**ok, dist: version})
    assert w.startswith(f"{dist} {version} is older than")


def test_versions_above_the_floor_pass() -> None:
    assert cli.startup_warnings({"transformers": "5.3.1rc1", "torch": "2.6.1.dev0"}) == []
    assert cli.startup_warnings({"transformers": "5.10.0", "torch": "2.10.0"}) == []


def test_help_and_version_import_nothing_heavy() -> None:
    code = (
        "import sys\n"
        "from llama_tui.cli.main import main\n"
        "for argv in (['--help'], ['--version']):\n"
        "    assert main(argv) == 0\n"
        "heavy = [m for m in ('torch', 'transformers', 'textual', 'huggingface_hub', 'rich')"
        " if m in sys.modules]\n"
        "print('HEAVY=' + ','.join(heavy))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "HEAVY="
    # And through the real entry point, with -X importtime.
    for flag in ("--help", "--version"):
        r = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "llama_tui", flag],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0
        imported = {line.split("|")[-1].strip() for line in r.stderr.splitlines() if "|" in line}
        assert not {"torch", "transformers", "textual"} & imported, flag


def test_list_models_with_empty_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    assert cli.main(["--list-models"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("demo\t")


def test_list_models_reads_the_cache_the_environment_names_now(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """huggingface_hub reads HF_HOME once, at import; --list-models looks where it says now."""
    import huggingface_hub  # noqa: F401  (imported first, as in a longer-running process)

    snapshot = tmp_path / "hf" / "hub" / "models--org--tiny" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("a" * 40)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    assert cli.main(["--list-models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("demo\t") and lines[1].startswith("org/tiny\t"), lines


# --- headless with a fake backend ---------------------------------------------------------


class FakeBackend:
    """Streams fixed chunks; can fail or be interrupted after some of them."""

    def __init__(
        self, chunks: Sequence[str], fail_after: int | None = None, exc: BaseException | None = None
    ) -> None:
        self.chunks = list(chunks)
        self.fail_after = fail_after
        self.exc = exc
        self.info: ModelInfo | None = None
        self.seen: list[tuple[tuple[ChatMessage, ...], GenerationParams]] = []
        self.cancel: threading.Event | None = None
        self.closed = False

    def load(self, progress: Any = None) -> ModelInfo:
        self.info = ModelInfo(name="fake", spec="fake", source="here")
        return self.info

    def stream(
        self, history: Sequence[ChatMessage], params: GenerationParams, cancel: threading.Event
    ) -> Generation:
        self.seen.append((tuple(history), params))
        self.cancel = cancel

        def run() -> Iterator[str]:
            for i, c in enumerate(self.chunks):
                if self.fail_after is not None and i == self.fail_after:
                    assert self.exc is not None
                    raise self.exc
                yield c
            gen.stats = GenerationStats(
                generated_tokens=len(self.chunks), stop_reason=StopReason.EOS
            )

        gen = Generation(run())
        return gen

    def default_params(self) -> GenerationParams:
        return GenerationParams()

    def close(self) -> None:
        self.closed = True


class Factory:
    """Stands in for `engine.factory.make_backend`: returns the backend a test installed."""

    def __init__(self) -> None:
        self.backend: FakeBackend | None = None

    def __call__(self, settings: Any) -> FakeBackend:
        assert self.backend is not None
        return self.backend


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Factory:
    from llama_tui.engine import factory

    f = Factory()
    monkeypatch.setattr(factory, "make_backend", f)
    return f


def _use(fake: Factory, backend: FakeBackend) -> FakeBackend:
    fake.backend = backend
    return backend


def test_headless_streams_sanitised_reply(
    fake: Factory, capsys: pytest.CaptureFixture[str]
) -> None:
    b = _use(fake, FakeBackend(["Par", "is\x1b]52;c;UFdO", "RUQ=\x07 is\x1b[", "31m nice", "\r!"]))
    code = cli.main(
        ["--prompt", "Capital?", "--greedy", "--max-new-tokens", "7", "--system", "Be brief."]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out == "Paris is nice!\n"
    history, params = b.seen[0]
    assert history == (ChatMessage("system", "Be brief."), ChatMessage("user", "Capital?"))
    assert params.do_sample is False and params.max_new_tokens == 7
    assert b.closed


@pytest.mark.parametrize(
    ("piped", "sent"),
    [
        # `echo "..." |` adds a newline the user did not type; the model answered differently
        # with it ("L'Étoile" instead of "Paris"). Trailing newlines go, as with $(...).
        ("from stdin\n", "from stdin"),
        ("two\nlines\r\n\n", "two\nlines"),
        ("  indented, trailing spaces kept  \n", "  indented, trailing spaces kept  "),
    ],
)
def test_headless_prompt_from_stdin(
    piped: str,
    sent: str,
    fake: Factory,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    b = _use(fake, FakeBackend(["ok"]))
    monkeypatch.setattr(sys, "stdin", types.SimpleNamespace(read=lambda: piped))
    assert cli.main(["--prompt", "-"]) == 0
    assert b.seen[0][0][-1] == ChatMessage("user", sent)
    assert capsys.readouterr().out == "ok\n"


def test_headless_empty_prompt(fake: Factory, capsys: pytest.CaptureFixture[str]) -> None:
    _use(fake, FakeBackend(["x"]))
    assert cli.main(["--prompt", "  "]) == 2


def test_headless_error_keeps_partial_and_redacts(
    fake: Factory, capsys: pytest.CaptureFixture[str]
) -> None:
    exc = OutOfMemoryError(f"Out of memory (token {TOKEN})", "Use --max-new-tokens 64.")
    _use(fake, FakeBackend(["partial ", "reply", "never"], fail_after=2, exc=exc))
    code = cli.main(["--prompt", "hi"])
    out, err = capsys.readouterr()
    assert code == 1
    assert out == "partial reply\n"
    assert "Out of memory" in err and "--max-new-tokens 64" in err
    assert TOKEN not in err and "hf_***" in err


def test_headless_ctrl_c_exits_130_keeping_output(
    fake: Factory, capsys: pytest.CaptureFixture[str]
) -> None:
    b = _use(fake, FakeBackend(["kept ", "text", "lost"], fail_after=2, exc=KeyboardInterrupt()))
    code = cli.main(["--prompt", "hi"])
    out, err = capsys.readouterr()
    assert code == 130
    assert "interrupted" in err
    assert out == "kept text\n"
    assert b.cancel is not None and b.cancel.is_set()


def test_headless_load_error_is_classified(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from llama_tui.core.errors import LocalPathMissingError
    from llama_tui.engine import factory

    class Failing(FakeBackend):
        def load(self, progress: Any = None) -> ModelInfo:
            raise LocalPathMissingError("No model at ./nowhere.", "Check the path.")

    monkeypatch.setattr(factory, "make_backend", lambda s: Failing([]))
    assert cli.main(["--prompt", "hi", "-m", "./nowhere"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert "No model at ./nowhere." in err and "Check the path." in err


def test_headless_token_shaped_model_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--prompt", "hi", "--model", TOKEN]) == 1
    out, err = capsys.readouterr()
    assert out == "" and TOKEN not in err and "token" in err


def test_headless_shows_endpoint_and_warnings(
    fake: Factory, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _use(fake, FakeBackend(["ok"]))
    monkeypatch.setenv("HF_ENDPOINT", "http://mirror.local")
    monkeypatch.setenv("LLAMA_TUI_TOP_K", "many")
    assert cli.main(["--prompt", "hi"]) == 0
    out, err = capsys.readouterr()
    assert out == "ok\n"
    assert "http://mirror.local" in err and "LLAMA_TUI_TOP_K" in err


class FakeStore(types.ModuleType):
    def __init__(self, tmp: Path) -> None:
        super().__init__("llama_tui.session.store")
        self.saved: list[tuple[Any, Path, bool]] = []
        self.tmp = tmp

    def save_conversation(self, conv: Any, path: Path, overwrite: bool = False) -> Path:
        if path.exists() and not overwrite:
            raise FileExistsError(str(path))
        path.write_text(
            json.dumps(
                {
                    "messages": [m.to_dict() for m in conv.messages],
                    "system_prompt": conv.system_prompt,
                }
            )
        )
        self.saved.append((conv, path, overwrite))
        return path

    def load_conversation(self, id_or_path: str) -> Any:
        from llama_tui.session.transcript import Conversation, Message

        data = json.loads(Path(id_or_path).read_text())
        conv = Conversation(system_prompt=data["system_prompt"])
        conv.messages = [Message.from_dict(m) for m in data["messages"]]
        return conv

    def latest_session_id(self) -> str | None:
        return None


def test_headless_save_and_resume(
    fake: Factory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import llama_tui.session as session_pkg

    store = FakeStore(tmp_path)
    monkeypatch.setitem(sys.modules, "llama_tui.session.store", store)
    monkeypatch.setattr(session_pkg, "store", store, raising=False)
    _use(fake, FakeBackend(["first answer"]))
    out_path = tmp_path / "chat.json"
    assert cli.main(["--prompt", "one", "--save", str(out_path), "--system", "S"]) == 0
    conv = store.saved[-1][0]
    assert [(m.role, m.content) for m in conv.messages] == [
        ("user", "one"),
        ("assistant", "first answer"),
    ]
    # Saving over an existing file is refused ...
    assert cli.main(["--prompt", "two", "--save", str(out_path)]) == 1
    assert "exists" in capsys.readouterr().err
    # ... except when continuing that very file.
    b = _use(fake, FakeBackend(["second answer"]))
    assert cli.main(["--prompt", "two", "--resume", str(out_path), "--save", str(out_path)]) == 0
    history = b.seen[0][0]
    assert [m.content for m in history] == ["S", "one", "first answer", "two"]
    assert store.saved[-1][2] is True
    # No session to resume.
    assert cli.main(["--prompt", "x", "--resume"]) == 1
    assert "no saved session" in capsys.readouterr().err


def test_tui_mode_calls_run_app(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []

    def run_app(loaded: Any, *, resume: str | None = None) -> int:
        calls.append((loaded, resume))
        return 3

    mod = types.ModuleType("llama_tui.ui.app")
    mod.run_app = run_app  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "llama_tui.ui.app", mod)
    import llama_tui.ui as ui_pkg

    monkeypatch.setattr(ui_pkg, "app", mod, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://mirror.local")
    assert cli.main(["-m", "org/x", "--resume", "abc"]) == 3
    loaded, resume = calls[0]
    assert loaded.settings.model == "org/x" and resume == "abc" and loaded.resume == "abc"
    # Startup notes go to the UI (stderr would vanish behind the full-screen app).
    assert any("http://mirror.local" in w for w in loaded.warnings)


# --- logging -------------------------------------------------------------------------------


def test_setup_logging_private_file_and_redaction(tmp_path: Path) -> None:
    import logging
    import stat

    from llama_tui import locations

    path = logs.setup_logging()
    assert path == locations.log_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    logging.getLogger("llama_tui.test").warning("token %s \x1b]52;c;x\x07end", TOKEN)
    try:
        raise ValueError(f"bad {TOKEN}")
    except ValueError:
        logging.getLogger("llama_tui.test").exception("failed")
    for h in logging.getLogger().handlers:
        h.flush()
    text = path.read_text()
    assert "hf_***" in text and "end" in text and "failed" in text and "ValueError" in text
    assert TOKEN not in text and "\x1b" not in text


def test_library_logging_never_reaches_the_terminal(tmp_path: Path) -> None:
    code = (
        "import logging, warnings\n"
        "from llama_tui import logs\n"
        "path = logs.setup_logging()\n"
        "import transformers\n"
        "from transformers.utils import logging as tl\n"
        f"tl.get_logger('transformers.x').warning('TLOG {TOKEN}')\n"
        "import huggingface_hub.utils.logging as hl\n"
        "hl.get_logger('huggingface_hub.y').warning('HLOG')\n"
        "warnings.warn('WWARN')\n"
        "logging.getLogger('z').error('ZLOG')\n"
        "for h in logging.getLogger().handlers: h.flush()\n"
        "print(path)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    text = Path(r.stdout.strip()).read_text()
    for marker in ("TLOG hf_***", "HLOG", "WWARN", "ZLOG"):
        assert marker in text, text
    assert TOKEN not in text


def test_transformers_is_quieted_through_its_public_api(tmp_path: Path) -> None:
    # transformers imported before setup_logging, its stderr handler not created yet: the
    # public disable_default_handler() creates and detaches it, so a later warning cannot
    # add it to the terminal.
    code = (
        "import logging, sys\n"
        "from llama_tui import logs\n"
        "import transformers.utils.logging as tl\n"
        "path = logs.setup_logging()\n"
        "tl.get_logger('transformers.x').warning('TLOG')\n"
        "root = logging.getLogger('transformers')\n"
        "assert root.propagate and not root.handlers, root.handlers\n"
        "assert not tl.is_progress_bar_enabled()\n"
        "for h in logging.getLogger().handlers: h.flush()\n"
        "print(path)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    assert "TLOG" in Path(r.stdout.strip()).read_text()
    # ...and only public names of transformers' logging module are used for it.
    import inspect

    from llama_tui import logs

    assert "_configure_library_root_logger" not in inspect.getsource(logs)

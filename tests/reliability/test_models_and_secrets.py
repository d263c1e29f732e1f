"""docs/reliability.md rows 5-6: bad model specs and secrets.

Row 5 runs the real app on the tiny Llama (the real factory, models.load_model, no network)
and tries each bad spec with `/model`: one actionable message each, the loaded model stays
and still answers. Row 6 puts a token in HF_TOKEN and in HF_HOME's token file and proves it
reaches neither the terminal (recorded bytes), nor toasts, the log file, the config or data
directories, nor exports; and that Textual's crash screen cannot print it.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from llama_tui import locations
from llama_tui.config.settings import LoadedSettings, Settings
from llama_tui.core.errors import GenerationError, ModelError
from llama_tui.core.params import GenerationParams
from llama_tui.ui.app import create_app
from llama_tui.ui.widgets.prompt_input import PromptInput
from tests.reliability.terminal import record_terminal, screen_of
from tests.ui.fakes import FakeBackend, FakeFactory
from tests.ui.helpers import make_app, notes, ready, real_app, reply_done, send, until

pytestmark = pytest.mark.asyncio

GREEDY = GenerationParams(do_sample=False, max_new_tokens=6, temperature=0.0)
TOKEN_ENV = "hf_" + "EnvToken" * 4 + "x7Q"
TOKEN_FILE = "hf_" + "FileTok" * 5 + "z9"
TOKEN_SPEC = "hf_" + "SpecTok" * 5 + "k2"


def _folder_like(tiny: Path, dest: Path) -> Path:
    shutil.copytree(tiny, dest)
    return dest


def _pickle_only(tiny: Path, tmp: Path) -> str:
    d = _folder_like(tiny, tmp / "pickle-only")
    for f in d.glob("*.safetensors"):
        f.unlink()
    (d / "pytorch_model.bin").write_bytes(b"not really a pickle")
    return str(d)


def _custom_code(tiny: Path, tmp: Path) -> str:
    d = _folder_like(tiny, tmp / "custom-code")
    cfg = json.loads((d / "config.json").read_text())
    cfg.update(model_type="evil_llama", auto_map={"AutoModelForCausalLM": "modeling.Evil"})
    (d / "config.json").write_text(json.dumps(cfg))
    return str(d)


def _gated(status: int) -> Any:
    def setup(tiny: Path, tmp: Path, mp: pytest.MonkeyPatch) -> str:
        from huggingface_hub.errors import GatedRepoError as HfGated

        from llama_tui.engine.loading import hub
        from tests.engine.test_models import as_transformers_would, hub_http_error

        def raise_gated(*a: Any, **k: Any) -> Any:
            raise as_transformers_would(hub_http_error(HfGated, status, "org/gated"))

        mp.setattr(hub, "resolve_hub", raise_gated)
        return "org/gated"

    return setup


# spec (or a setup returning it), substrings the cause + fix must hold (lower case)
BAD_SPECS: list[tuple[str, Any, tuple[str, ...]]] = [
    ("invalid-id", "not a valid id!!", ("not a valid", "org/name")),
    ("missing-path", "./no/such/model", ("no such file or folder",)),
    ("token-shaped", TOKEN_SPEC, ("access token", "not shown")),
    ("token-in-org", f"org/{TOKEN_SPEC}@main", ("access token",)),
    ("offline-empty-cache", "someorg/not-cached-model", ("not in the local cache",
                                                         "hf_hub_offline")),
    ("gated-401", _gated(401), ("not logged in", "hf auth login")),
    ("gated-403", _gated(403), ("request access", "https://huggingface.co/org/gated")),
    ("custom-code", lambda t, p, m: _custom_code(t, p), ("custom python code",
                                                        "--trust-remote-code")),
    ("pickle-only", lambda t, p, m: _pickle_only(t, p), ("pickle", "--allow-pickle")),
]


def _cases() -> list[Any]:
    out = []
    for i, s, e in BAD_SPECS:
        if isinstance(s, type(pytest.param(0))):
            out.append(pytest.param(s.values[0], e, marks=s.marks, id=i))
        else:
            out.append(pytest.param(s, e, id=i))
    return out


@pytest.mark.parametrize(("spec", "expect"), _cases())
async def test_bad_model_spec_one_message_current_model_stays(
    spec: Any, expect: tuple[str, ...], tiny_model_dir: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from llama_tui.engine.loading import hub

    app = real_app(tiny_model_dir, GREEDY)
    out = record_terminal(app)
    async with app.run_test(headless=False, size=(100, 30), notifications=True) as pilot:
        await ready(pilot)
        assert app.state == "ready", app.model.load_error
        before = app.model.info
        if callable(spec):
            spec = spec(tiny_model_dir, tmp_path, monkeypatch)
        elif "Tok" in spec:
            # Refused before any request: resolving on the Hub must not even start.
            def no_request(*a: Any, **k: Any) -> Any:
                raise AssertionError("a token-shaped spec reached the Hub resolver")

            monkeypatch.setattr(hub, "resolve_hub", no_request)
        # Submitted directly: what the user types is drawn in their own input pane, which
        # is not an echo; the app must not show the id back anywhere after that.
        app.chat.prompt.post_message(PromptInput.Submitted(app.chat.prompt, f"/model {spec}"))
        await pilot.pause()
        await until(pilot, lambda: app.model.load_error is not None, timeout=30)
        cause, fix = app.model.load_error or ("", "")
        text = f"{cause}\n{fix}".lower()
        for want in expect:
            assert want in text, text
        assert app.model.info is before and app.model.backend is not None  # still loaded
        await send(pilot, "still there?")
        await reply_done(pilot)
        assert app.chat_state.conversation.messages[-1].status == "complete"
        if "Tok" in spec:
            await pilot.pause(0.1)
            shown = "".join(out) + "\n".join(notes(app)) + "".join(screen_of(out, 100, 30).flat)
            assert "SpecTok" not in shown, "a token-shaped model id was echoed on screen"


async def test_token_shaped_id_at_startup_is_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The model from the config / command line is token-shaped: refused, never shown."""
    from llama_tui.engine.loading import hub

    def no_request(*a: Any, **k: Any) -> Any:
        raise AssertionError("a token-shaped spec reached the Hub resolver")

    monkeypatch.setattr(hub, "resolve_hub", no_request)
    settings = Settings(model=TOKEN_SPEC, compile=False, device="cpu")
    app = create_app(LoadedSettings(settings=settings, sources={"model": "flag"}))
    out = record_terminal(app)
    async with app.run_test(headless=False, size=(100, 30), notifications=True) as pilot:
        await until(pilot, lambda: app.model.load_error is not None, timeout=30)
        await pilot.pause(0.2)
        assert "access token" in app.model.load_error[0]  # type: ignore[index]
        shown = "".join(out) + "\n".join(notes(app))
    assert "SpecTok" not in shown


# -- row 6: secrets ---------------------------------------------------------------------


@pytest.fixture
def tokens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A token in HF_TOKEN and another in HF_HOME's token file; the log file set up."""
    from llama_tui import logs

    hf_home = tmp_path / "hf"
    hf_home.mkdir()
    (hf_home / "token").write_text(TOKEN_FILE)
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("HF_TOKEN", TOKEN_ENV)
    log = logs.setup_logging()
    yield log  # type: ignore[misc]
    logs.teardown_logging()


def _no_token_in_files(*roots: Path) -> None:
    for root in roots:
        for p in root.rglob("*"):
            if p.is_file() and p.name != "token":
                data = p.read_bytes()
                for tok in (TOKEN_ENV, TOKEN_FILE):
                    assert tok.encode() not in data, f"token found in {p}"
                    assert tok[3:15].encode() not in data, f"token fragment found in {p}"


async def test_token_never_on_screen_logs_files_or_toasts(
    tokens: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    ok = FakeBackend(
        replies=[["fine"], ["partial "]],
    )
    # Errors that quote a token (an Authorization header echoed by a server or a library).
    bad = FakeBackend(load_error=OSError(f"401 Unauthorized: Authorization: Bearer {TOKEN_ENV} "
                                         f"token={TOKEN_FILE}"))
    factory = FakeFactory(fake=ok, other=bad)
    app = make_app(factory=factory)
    out = record_terminal(app)
    async with app.run_test(headless=False, size=(120, 40), notifications=True) as pilot:
        await ready(pilot)
        await send(pilot, "hello")
        await reply_done(pilot)
        await send(pilot, "/model other")
        await until(pilot, lambda: app.model.load_error is not None)
        ok.stream_error = GenerationError(f"server said: invalid token {TOKEN_ENV}",
                                          f"check {TOKEN_FILE}")
        await send(pilot, "again")
        await reply_done(pilot)
        # An error toast about a path that holds a token. Submitted without typing it: what
        # the user types is on screen by definition; this test is about what the app shows.
        prompt = app.chat.prompt
        bad_path = f"{tmp_path}/no-dir-{TOKEN_FILE}/\0x.md"
        prompt.post_message(PromptInput.Submitted(prompt, f"/save {bad_path}"))
        await pilot.pause()
        await send(pilot, "/set temperature 0.5")  # remembered settings are written
        await send(pilot, f"/save {tmp_path}/export.md")
        await send(pilot, f"/save {tmp_path}/export.json")
        await until(pilot, lambda: (tmp_path / "export.json").exists())
        await pilot.pause(0.1)
        shown = "".join(out) + "\n".join(notes(app))
    for tok in (TOKEN_ENV, TOKEN_FILE):
        assert tok not in shown and tok[3:15] not in shown
    _no_token_in_files(tmp_path / "llama_tui_home", tmp_path / "export.md",
                       tmp_path / "export.json", tokens)
    assert tokens.read_text().strip(), "nothing was logged: the test proves nothing"


async def test_our_code_never_reads_the_token() -> None:
    """huggingface_hub finds the token itself; no module of ours asks for it."""
    import llama_tui

    root = Path(llama_tui.__file__).parent
    forbidden = ("get_token(", "HfFolder", 'environ["HF_TOKEN"]', "environ['HF_TOKEN']",
                 'getenv("HF_TOKEN")', 'get("HF_TOKEN")', "stored_tokens", "/token\"")
    for path in root.rglob("*.py"):
        src = path.read_text(encoding="utf-8")
        for f in forbidden:
            assert f not in src, f"{path.relative_to(root)} reads the token ({f})"


async def test_crash_in_a_handler_does_not_print_the_token(tokens: Path) -> None:
    """Textual's default crash screen is a Rich traceback with show_locals=True."""
    app = make_app(FakeBackend())

    def handler_that_crashes() -> None:
        token = os.environ["HF_TOKEN"]  # what a careless handler (or a library) holds
        headers = {"authorization": f"Bearer {token}"}
        raise RuntimeError(f"request failed ({len(headers)} headers)")

    # Textual prints the crash renderables on its error console (stderr), at exit or when
    # the test harness shuts the app down; whatever is left is printed here the same way.
    buf = io.StringIO()
    app.error_console = Console(file=buf, width=200, color_system=None)
    with pytest.raises(RuntimeError):
        async with app.run_test(size=(100, 30)) as pilot:
            await ready(pilot)
            app.call_later(handler_that_crashes)
            await pilot.pause(0.2)
    for renderable in app._exit_renderables:
        app.error_console.print(renderable)
    printed = buf.getvalue()
    assert "request failed" in printed, printed[:500]
    assert TOKEN_ENV not in printed and TOKEN_ENV[3:15] not in printed, (
        "the crash screen printed the token from a local variable"
    )


async def test_locations_are_private(tokens: Path) -> None:
    """The log file and data dirs are 0600 / 0700 (the log may hold paths and prompts)."""
    app = make_app(FakeBackend())
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await send(pilot, "hello")
        await reply_done(pilot)
    assert tokens.stat().st_mode & 0o077 == 0
    assert locations.data_dir().stat().st_mode & 0o077 == 0
    for p in locations.data_dir().rglob("*"):
        assert p.stat().st_mode & 0o077 == 0, p


async def test_model_error_text_is_redacted_by_describe_error() -> None:
    from llama_tui.ui.model_control import describe_error

    for exc in (OSError(f"Bearer {TOKEN_ENV}"), ModelError(f"x {TOKEN_ENV}", f"y {TOKEN_FILE}"),
                RuntimeError(f"{TOKEN_FILE}\x1b]52;c;QQ==\x07")):
        cause, fix, _ = describe_error(exc)
        assert "Tok" not in cause + fix and "\x1b" not in cause + fix

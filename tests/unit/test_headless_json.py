"""``--json``: one JSON object on stdout for a headless run, errors included (fake backend)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from llama_tui.cli import main as cli
from llama_tui.core.backend import ChatMessage, Generation, GenerationStats, StopReason
from llama_tui.core.errors import ModelNotCachedError, OutOfMemoryError
from llama_tui.core.params import GenerationParams
from tests.unit.test_cli import TOKEN, Factory, FakeBackend, _use, fake

__all__ = ["fake"]


class StatsBackend(FakeBackend):
    """Reports full stats, as the local backend does after a reused-prefix turn."""

    def stream(
        self, history: Sequence[ChatMessage], params: GenerationParams, cancel: threading.Event
    ) -> Generation:
        def run() -> Iterator[str]:
            yield from self.chunks
            gen.stats = GenerationStats(
                prompt_tokens=40,
                reused_prompt_tokens=32,
                generated_tokens=3,
                ttft_s=0.05,
                decode_tokens_per_s=25.0,
                total_s=0.2,
                stop_reason=StopReason.LENGTH,
            )

        gen = Generation(run())
        return gen


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any], str]:
    code = cli.main(argv)
    out, err = capsys.readouterr()
    assert out.count("\n") == 1 and out.endswith("\n"), out  # one JSON object, one line
    return code, json.loads(out), err


def test_reply_model_and_stats(fake: Factory, capsys: pytest.CaptureFixture[str]) -> None:
    _use(fake, StatsBackend(["Par", "is\x1b[31m", "."]))
    code, obj, _ = _run(["--prompt", "Capital?", "--json", "--max-new-tokens", "3"], capsys)
    assert code == 0
    assert obj["reply"] == "Paris."  # sanitised like the plain output
    assert (obj["model"], obj["model_spec"], obj["device"], obj["dtype"]) == (
        "fake", "fake", "cpu", "float32"
    )
    assert obj["stats"] == {
        "prompt_tokens": {"new": 8, "cached": 32},
        "new_tokens": 3,
        "ttft_s": 0.05,
        "decode_tokens_per_s": 25.0,
        "total_s": 0.2,
        "stop_reason": "length",
    }
    assert "error" not in obj
    journal = Path(obj["session"]["journal"])
    assert journal.is_file() and obj["session"]["id"] in journal.name


def test_generation_error_keeps_partial_reply(
    fake: Factory, capsys: pytest.CaptureFixture[str]
) -> None:
    exc = OutOfMemoryError(f"Out of memory (token {TOKEN})", "Use --max-new-tokens 64.")
    _use(fake, FakeBackend(["partial ", "reply", "never"], fail_after=2, exc=exc))
    code, obj, err = _run(["--prompt", "hi", "--json"], capsys)
    assert code == 1
    assert obj["reply"] == "partial reply"
    assert obj["error"] == {
        "kind": "OutOfMemoryError",
        "cause": "Out of memory (token hf_***)",
        "fix": "Use --max-new-tokens 64.",
    }
    assert "Out of memory" in err  # stderr still tells a human


def test_load_error(fake: Factory, capsys: pytest.CaptureFixture[str]) -> None:
    class Failing(FakeBackend):
        def load(self, progress: Any = None) -> Any:
            raise ModelNotCachedError("org/m is not in the cache.", "Go online once.")

    _use(fake, Failing([]))
    code, obj, _ = _run(["--prompt", "hi", "--json"], capsys)
    assert code == 1
    assert obj == {
        "error": {
            "kind": "ModelNotCachedError",
            "cause": "org/m is not in the cache.",
            "fix": "Go online once.",
        }
    }


def test_errors_found_before_loading(
    fake: Factory, capsys: pytest.CaptureFixture[str]
) -> None:
    _use(fake, FakeBackend(["x"]))
    code, obj, _ = _run(["--prompt", "  ", "--json"], capsys)
    assert code == 2
    assert obj == {"error": {"kind": "usage", "cause": "the prompt is empty", "fix": ""}}
    code, obj, _ = _run(["--prompt", "hi", "--json", "--model", TOKEN], capsys)
    assert code == 1
    assert obj["error"]["kind"] == "error"
    assert obj["error"]["cause"].startswith("the model id looks like an access token")
    assert obj["error"]["fix"].startswith("Pass a model id")
    assert TOKEN not in json.dumps(obj)


def test_bad_flag_value_is_a_json_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, obj, _ = _run(["--prompt", "hi", "--json", "--top-p", "7"], capsys)
    assert code == 2
    assert obj["error"]["kind"] == "usage" and "top_p" in obj["error"]["cause"]


def test_json_needs_prompt(capsys: pytest.CaptureFixture[str]) -> None:
    code, obj, err = _run(["--json"], capsys)
    assert code == 2 and "--json needs --prompt" in err
    assert obj["error"]["kind"] == "usage" and "--json needs --prompt" in obj["error"]["cause"]


@pytest.mark.parametrize(
    ("args", "cause"),
    [
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--max-new-tokens", "abc"], "invalid int value: 'abc'"),
    ],
)
def test_argparse_errors_are_json_usage_errors(
    args: list[str], cause: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A script reading stdout gets the error object for argparse's own errors too."""
    code, obj, err = _run(["--prompt", "hi", "--json", *args], capsys)
    assert code == 2 and cause in err
    assert obj["error"]["kind"] == "usage" and cause in obj["error"]["cause"]


def test_saved_session_is_named(
    fake: Factory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _use(fake, FakeBackend(["ok"]))
    path = tmp_path / "chat.json"
    code, obj, _ = _run(["--prompt", "hi", "--json", "--save", str(path)], capsys)
    assert code == 0 and path.is_file()
    assert obj["session"]["saved_to"] == str(path)
    # Saving over it is refused before the model answers: an error, no reply, no session.
    code, obj, _ = _run(["--prompt", "hi", "--json", "--save", str(path)], capsys)
    assert code == 1 and "reply" not in obj and "session" not in obj
    assert "exists" in obj["error"]["cause"]


def test_remote_server_without_server_model(capsys: pytest.CaptureFixture[str]) -> None:
    # Headless with only --server: the server's (only) model answers, streamed as SSE.
    from http.server import BaseHTTPRequestHandler

    from tests.engine.remote_server import Received, ScriptedServer, sse_chunk, start_sse
    from tests.engine.test_remote import _chat

    def script(srv: ScriptedServer, h: BaseHTTPRequestHandler, req: Received) -> None:
        start_sse(h)
        h.wfile.write(sse_chunk("Par") + b"event: ping\n\n" + sse_chunk("is", finish="stop"))
        h.wfile.write(b"data: [DONE]\n\n")

    with ScriptedServer(_chat(script)) as srv:
        code, obj, err = _run(["--prompt", "Capital?", "--server", srv.url, "--json"], capsys)
    assert code == 0, err
    assert obj["reply"] == "Paris" and obj["device"].startswith("remote ")
    assert obj["model"] == "m" and obj["model_spec"] == srv.url  # the server's only model
    assert obj["stats"]["stop_reason"] == "eos"


def test_unset_settings_follow_the_model_as_in_the_tui(
    fake: Factory, capsys: pytest.CaptureFixture[str]
) -> None:
    """Headless used GenerationParams' own defaults (top_k 50), not the model's: a strict
    server (transformers serve) then refused the request. Flags still win."""

    class ModelDefaults(FakeBackend):
        def default_params(self) -> GenerationParams:
            return GenerationParams(temperature=0.2, top_k=0, max_new_tokens=99)

    backend = _use(fake, ModelDefaults(["ok"]))
    code, obj, err = _run(["--prompt", "hi", "--json", "--max-new-tokens", "3"], capsys)
    assert code == 0, err
    [(_history, params)] = backend.seen
    assert (params.temperature, params.top_k, params.max_new_tokens) == (0.2, 0, 3)
    journal = Path(obj["session"]["journal"])
    from llama_tui.session.journal import load_journal

    assert load_journal(journal).messages[-1].settings == params.to_dict()

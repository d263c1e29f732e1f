"""``--logprobs K --json`` on the real tiny model: the JSON object's `tokens` array, and the
same numbers stored with the reply in its journal."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from llama_tui.cli import main as cli
from llama_tui.session.journal import load_journal


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    code = cli.main(argv)
    out, _ = capsys.readouterr()
    return code, json.loads(out)


BASE = [
    "--prompt",
    "Tell me about dogs",
    "--json",
    "--greedy",
    "--max-new-tokens",
    "12",
    "--dtype",
    "float32",
    "--device",
    "cpu",
]


def test_json_tokens_array(tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, obj = _run(["--model", str(tiny_model_dir), *BASE, "--logprobs", "3"], capsys)
    assert code == 0, obj
    tokens = obj["tokens"]
    assert len(tokens) == obj["stats"]["new_tokens"]
    assert "".join(t["text"] for t in tokens).startswith(obj["reply"])
    for t in tokens:
        assert isinstance(t["id"], int) and t["logprob"] <= 0
        assert len(t["top"]) == 3
        assert t["top"][0]["id"] == t["id"]  # greedy: the pick is the most likely
        assert t["top"][0]["logprob"] >= t["top"][1]["logprob"] >= t["top"][2]["logprob"]
        assert "sampled_logprob" not in t
    # the journal keeps the same numbers with the reply
    conv = load_journal(obj["session"]["journal"])
    stored = conv.messages[-1].tokens
    assert stored is not None and stored["tok"] and stored["k"] == 3
    assert len(stored["tok"]) == len(tokens)
    assert math.isclose(stored["lp"][0] / stored["scale"], tokens[0]["logprob"], abs_tol=1e-9)


def test_no_tokens_key_without_the_flag(
    tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, obj = _run(["--model", str(tiny_model_dir), *BASE], capsys)
    assert code == 0 and "tokens" not in obj


def test_logprobs_zero_turns_capture_off(
    tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, obj = _run(["--model", str(tiny_model_dir), *BASE, "--logprobs", "0"], capsys)
    assert code == 0 and "tokens" not in obj
    conv = load_journal(obj["session"]["journal"])
    assert conv.messages[-1].tokens is None


def test_bad_value_is_a_usage_error(
    tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, obj = _run(["--model", str(tiny_model_dir), *BASE, "--logprobs", "99"], capsys)
    assert code != 0
    assert "logprobs" in obj["error"]["cause"]

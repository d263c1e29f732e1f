"""Shared fixtures: isolated user directories and the tiny random Llama."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.engine.remote_server import TransformersServer, serving_missing
from tests.tiny_model import build_tiny_llama


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test gets its own config / data / cache / log dirs and no stray LLAMA_TUI_* vars."""
    for key in list(os.environ):
        if key.startswith("LLAMA_TUI_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("LLAMA_TUI_HOME", str(tmp_path / "llama_tui_home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    yield


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama with a chat template, saved like a Hub download."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_base_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same tiny Llama without a chat template (a base model: plain completion)."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama-base"), chat_template=False)


@pytest.fixture(scope="session")
def tserve(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TransformersServer]:
    """`transformers serve` on the tiny Llama, on 127.0.0.1:<free port>, for the session."""
    reason = serving_missing()
    if reason:
        pytest.skip(reason)
    server = TransformersServer(tiny_model_dir, tmp_path_factory.mktemp("tserve") / "log.txt")
    try:
        server.start()
        print(f"\ntransformers serve ready in {server.startup_s:.1f} s on {server.url}")
        yield server
    finally:
        server.stop()

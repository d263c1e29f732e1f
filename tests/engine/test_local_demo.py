"""LocalBackend on the bundled demo model (SmolLM2-135M-Instruct), loaded the way users load it.

Marked `demo`: the first load converts the GGUF (~15-30 s on 2 cores), once per module, in
an isolated LLAMA_TUI_HOME.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from llama_tui.core.backend import ChatMessage, LoadOptions, StopReason
from llama_tui.core.params import GenerationParams
from llama_tui.engine.local.backend import LocalBackend

pytestmark = pytest.mark.demo


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBackend]:
    home = tmp_path_factory.mktemp("local-demo-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLAMA_TUI_HOME", str(home))
        mp.setenv("HF_HUB_OFFLINE", "1")
        backend = LocalBackend("demo", LoadOptions(device="cpu", threads=2))
        backend.load()
    yield backend
    backend.close()


def test_greedy_answer_names_paris(demo: LocalBackend) -> None:
    history = [ChatMessage("user", "What is the capital of France?")]
    params = GenerationParams(do_sample=False, max_new_tokens=20)
    gen = demo.stream(history, params, threading.Event())
    chunks = list(gen)
    text = "".join(chunks)
    assert "Paris" in text, text
    assert len(chunks) > 1  # streamed
    stats = gen.stats
    assert stats is not None
    assert stats.stop_reason in (StopReason.EOS, StopReason.LENGTH)
    assert stats.prompt_tokens == demo.count_tokens(history)
    assert stats.decode_tokens_per_s is not None and stats.decode_tokens_per_s > 0

    # Second turn: the first turn's KV cache is reused.
    history += [ChatMessage("assistant", text), ChatMessage("user", "And of Italy?")]
    gen = demo.stream(history, params, threading.Event())
    assert gen.text()
    assert gen.stats is not None and gen.stats.reused_prompt_tokens > 0


def test_defaults_come_from_the_model(demo: LocalBackend) -> None:
    params = demo.default_params()
    assert params.problems(demo.info.context_length if demo.info else None) == {}

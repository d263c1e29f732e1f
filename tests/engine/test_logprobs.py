"""Per-token logprobs on the local paths, checked against transformers on the tiny fp32 Llama:
the generate path and the fast decoder record, for every generated token, the log-softmax of
the model's raw logits (a forward pass over the whole finished sequence gives the same numbers
to 1e-4), greedy picks are always the top-1 alternative, texts concatenate to the reply, and
capture changes no token."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llama_tui.core.backend import ChatMessage, LoadOptions
from llama_tui.core.params import GenerationParams
from llama_tui.core.tokens import TokenLog
from llama_tui.engine.local.backend import LocalBackend

HISTORY = [ChatMessage("user", "Tell me a story about a dog")]
GREEDY = GenerationParams(do_sample=False, max_new_tokens=20, logprobs=5)


@pytest.fixture(scope="module", autouse=True)
def _few_threads() -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def backend(path: Path, fast: bool) -> LocalBackend:
    options = LoadOptions(device="cpu", dtype="float32", compile=True)
    b = LocalBackend(str(path), options, fast_path="eager" if fast else "off")
    b.load()
    assert b.fast_path_active is fast
    return b


@pytest.fixture(scope="module", params=["generate", "fast"])
def local(request: pytest.FixtureRequest, tiny_model_dir: Path) -> Iterator[LocalBackend]:
    b = backend(tiny_model_dir, request.param == "fast")
    yield b
    b.close()


def run(b: LocalBackend, params: GenerationParams) -> tuple[str, TokenLog | None, Any]:
    import threading

    gen = b.stream(HISTORY, params, threading.Event())
    text = gen.text()
    return text, gen.token_log, gen.stats


def reference_logprobs(b: LocalBackend, ids: list[int]) -> Any:
    """log-softmax of the model's logits over the whole prompt + reply, in one forward pass."""
    import torch

    prompt = b._formatter.encode(HISTORY)  # type: ignore[union-attr]
    full = torch.tensor([prompt + ids])
    with torch.no_grad():
        logits = b._model(input_ids=full).logits[0].float()
    return torch.log_softmax(logits, dim=-1)[len(prompt) - 1 : len(prompt) - 1 + len(ids)]


def test_greedy_logprobs_match_a_forward_pass(local: LocalBackend) -> None:
    text, log, stats = run(local, GREEDY)
    assert log is not None and log.tokens
    assert log.source == ("fast" if local.fast_path_active else "generate")
    ids = [t.id for t in log.tokens]
    assert len(ids) == stats.generated_tokens
    ref = reference_logprobs(local, ids)  # type: ignore[arg-type]
    for j, tok in enumerate(log.tokens):
        assert tok.logprob == pytest.approx(float(ref[j, tok.id]), abs=1e-4)
        # greedy: the chosen token is the top-1 alternative
        assert tok.top[0].id == tok.id
        assert tok.top[0].logprob == pytest.approx(tok.logprob, abs=1e-6)
        assert len(tok.top) == 5
        top_ref = ref[j].topk(5)
        assert [c.id for c in tok.top] == top_ref.indices.tolist()
        for c, v in zip(tok.top, top_ref.values.tolist(), strict=True):
            assert c.logprob == pytest.approx(v, abs=1e-4)
        assert tok.sampled_logprob is None  # greedy: no second distribution
    assert log.text() == text or log.text().startswith(text)


def test_capture_changes_no_token(local: LocalBackend) -> None:
    on_text, _, _ = run(local, GREEDY)
    off_text, off_log, _ = run(local, GREEDY.with_changes(logprobs=0))
    assert off_log is None
    assert on_text == off_text


def test_sampled_tokens_carry_both_numbers(local: LocalBackend) -> None:
    params = GenerationParams(
        do_sample=True,
        temperature=0.7,
        top_k=20,
        top_p=0.9,
        seed=7,
        max_new_tokens=12,
        logprobs=3,
    )
    text, log, _ = run(local, params)
    assert log is not None and log.tokens
    ids = [t.id for t in log.tokens]
    ref = reference_logprobs(local, ids)  # type: ignore[arg-type]
    for j, tok in enumerate(log.tokens):
        assert tok.logprob == pytest.approx(float(ref[j, tok.id]), abs=1e-4)
        assert len(tok.top) == 3
        assert tok.sampled_logprob is not None
        # temperature < 1 and the filters concentrate the mass: the drawn token's sampling
        # probability is at least its model probability when it was the model's top choice
        if tok.id == tok.top[0].id:
            assert tok.sampled_logprob >= tok.logprob - 1e-5
    # seeded: capture on and off give the same reply
    off_text, _, _ = run(local, params.with_changes(logprobs=0))
    assert off_text == text


def test_repetition_penalty_keeps_model_numbers(local: LocalBackend) -> None:
    params = GREEDY.with_changes(repetition_penalty=1.3)
    text, log, _ = run(local, params)
    off_text, _, _ = run(local, params.with_changes(logprobs=0))
    assert text == off_text
    assert log is not None
    ids = [t.id for t in log.tokens]
    ref = reference_logprobs(local, ids)  # type: ignore[arg-type]
    for j, tok in enumerate(log.tokens):
        assert tok.logprob == pytest.approx(float(ref[j, tok.id]), abs=1e-4)


@pytest.mark.parametrize("mode", ["on", "off"])
def test_assisted_decoding_records_every_accepted_token(tiny_model_dir: Path, mode: str) -> None:
    """Prompt lookup hands the streamer several ids per step and scores rejected guesses too:
    each recorded token still gets the numbers of its own position."""
    options = LoadOptions(device="cpu", dtype="float32", compile=False, prompt_lookup=mode)
    b = LocalBackend(str(tiny_model_dir), options, fast_path="off")
    b.load()
    try:
        text, log, stats = run(b, GREEDY.with_changes(max_new_tokens=24))
        assert log is not None and len(log.tokens) == stats.generated_tokens
        if mode == "on":
            assert stats.assisted == "prompt lookup"
        ids = [t.id for t in log.tokens]
        ref = reference_logprobs(b, ids)  # type: ignore[arg-type]
        for j, tok in enumerate(log.tokens):
            assert tok.top[0].id == tok.id
            assert tok.logprob == pytest.approx(float(ref[j, tok.id]), abs=1e-4)
        assert log.text().startswith(text)
    finally:
        b.close()

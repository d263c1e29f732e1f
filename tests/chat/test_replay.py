"""Exact replay on the tiny Llama: what a reply records, and regenerating it token for token,
greedy and with seeded sampling, on the generate path and on the fast decoder."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from llama_tui.chat.replay import replay_turns
from llama_tui.chat.reply import run_reply
from llama_tui.chat.state import ChatState
from llama_tui.core.backend import LoadOptions
from llama_tui.core.params import GenerationParams
from llama_tui.engine.local.backend import LocalBackend
from llama_tui.session.export import from_json, to_json
from llama_tui.session.transcript import Conversation

GREEDY = GenerationParams(do_sample=False, max_new_tokens=10)
SAMPLED = GenerationParams(do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                           max_new_tokens=10)


def _backend(model_dir: Path, path: str) -> LocalBackend:
    backend = LocalBackend(str(model_dir), LoadOptions(device="cpu", dtype="float32"),
                           fast_path="eager" if path == "fast" else "off")
    backend.load()
    assert backend.fast_path_active == (path == "fast")
    return backend


def _chat(backend: LocalBackend, params: GenerationParams) -> Conversation:
    state = ChatState(Conversation(), params, "Be brief.")
    state.model = backend.info
    for prompt in ("Hello there", "Tell me more"):
        outcome = run_reply(state, backend, prompt)
        assert outcome.status == "complete"
    return state.conversation


@pytest.mark.parametrize("path", ["generate", "fast"])
@pytest.mark.parametrize("params", [GREEDY, SAMPLED], ids=["greedy", "sampled"])
def test_recorded_replies_replay_identically(tiny_model_dir: Path, path: str,
                                             params: GenerationParams) -> None:
    backend = _backend(tiny_model_dir, path)
    try:
        conv = _chat(backend, params)
        reply = conv.messages[-1]
        record = reply.replay
        assert record is not None
        assert record["decode_path"] == path
        assert isinstance(record["seed"], int)  # drawn, since none was set
        assert record["settings"]["seed"] == record["seed"]
        assert len(record["prompt_sha256"]) == 64
        assert len(record["token_ids"]) == (reply.stats or {})["generated_tokens"]
        assert record["dtype"] == "float32" and record["device"].startswith("cpu")
        assert "torch" in record["versions"] and "transformers" in record["versions"]
        loaded = from_json(to_json(conv))  # what --replay reads back
        results = replay_turns(loaded, backend)
        assert [r.verdict for r in results] == ["identical", "identical"], results
    finally:
        backend.close()


def test_a_different_token_is_reported_with_its_index(tiny_model_dir: Path) -> None:
    backend = _backend(tiny_model_dir, "generate")
    try:
        conv = _chat(backend, SAMPLED)
        tampered = copy.deepcopy(conv)
        record = tampered.messages[1].replay
        assert record is not None
        ids = record["token_ids"]
        ids[3] = (ids[3] + 1) % 100
        results = replay_turns(tampered, backend, turn=1)
        assert len(results) == 1 and results[0].verdict == "differs"
        assert "index 3" in results[0].detail and "recorded" in results[0].detail
    finally:
        backend.close()


def test_replay_says_when_it_cannot_be_exact(tiny_model_dir: Path) -> None:
    backend = _backend(tiny_model_dir, "generate")
    try:
        conv = _chat(backend, GREEDY)
        remote, cuda, old = (copy.deepcopy(conv) for _ in range(3))
        assert remote.messages[1].replay is not None and cuda.messages[1].replay is not None
        remote.messages[1].replay["decode_path"] = "remote"
        cuda.messages[1].replay["device"] = "cuda:0 NVIDIA H100"
        old.messages[1].replay = None
        for changed, words in ((remote, "server"), (cuda, "device"), (old, "older")):
            result = replay_turns(changed, backend, turn=1)[0]
            assert result.verdict == "impossible" and words in result.detail
        with pytest.raises(ValueError, match="no turn 5"):
            replay_turns(conv, backend, turn=5)
    finally:
        backend.close()


def test_a_measured_dtype_pick_matches_loading_in_that_dtype(tiny_model_dir: Path) -> None:
    """`dtype auto` converts a float32 model to its pick; a reply made so must replay
    identically with `--dtype PICK`, so the conversion must give what that load gives:
    the weights in PICK and RoPE's inv_freq still float32 (a `model.to` casts it too)."""
    import torch
    from transformers import AutoModelForCausalLM

    from llama_tui.engine.loading.calibration import _cast

    measured = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    _cast(measured, torch.bfloat16)
    direct = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16)
    for (name, a), (_, b) in zip(measured.state_dict().items(), direct.state_dict().items(),
                                 strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b), name
    for (name, a), (_, b) in zip(measured.named_buffers(), direct.named_buffers(), strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b), name

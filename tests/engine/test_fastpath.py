"""FastDecoder on the tiny random Llama (CPU, eager; no timing thresholds).

The reference is always `model.generate` with the default (dynamic) cache: the fast path
must produce the same greedy tokens, keep producing them when the KV cache is reused across
turns, stop on EOS / max_new_tokens / cancel, and reproduce a seeded sampled reply.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from llama_tui.core.backend import StopReason  # noqa: E402
from llama_tui.core.params import GenerationParams  # noqa: E402
from llama_tui.engine.fast.cache import (  # noqa: E402
    bucket_for,
    common_prefix_length,
    unsupported_reason,
)
from llama_tui.engine.fast.decoder import FastDecoder  # noqa: E402
from llama_tui.engine.local.sampling import SamplingBuffers, exponential_noise, select_token  # noqa: E402
from tests.engine.greedy import reference  # noqa: E402

GREEDY = GenerationParams(do_sample=False, max_new_tokens=24)


@pytest.fixture(scope="module")
def model(tiny_model_dir: Path) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()


@pytest.fixture()
def dec(model: Any) -> FastDecoder:
    # No EOS by default so that every reply runs to max_new_tokens (random weights).
    return FastDecoder(model, compile=False, eos_token_ids=[], min_bucket=64)


def run(
    dec: FastDecoder, prompt: list[int], params: GenerationParams = GREEDY, **kw: Any
) -> list[int]:
    return list(dec.generate_ids(prompt, params, threading.Event(), **kw))


PROMPTS = [
    [1, 5, 7, 9, 11, 13],
    [3],
    [2, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60],
    list(range(100, 190)),
]


@pytest.mark.parametrize("prompt", PROMPTS, ids=lambda p: f"len{len(p)}")
def test_greedy_matches_generate(model: Any, dec: FastDecoder, prompt: list[int]) -> None:
    assert run(dec, prompt) == reference(model, prompt, GREEDY.max_new_tokens, eos_token_id=None)
    st = dec.last_stats
    assert st.stop_reason is StopReason.LENGTH
    assert st.generated_tokens == GREEDY.max_new_tokens
    assert st.steps_by_path == {"eager": GREEDY.max_new_tokens - 1}


def test_greedy_with_repetition_penalty_matches_generate(model: Any, dec: FastDecoder) -> None:
    params = GREEDY.with_changes(repetition_penalty=1.5)
    prompt = PROMPTS[0]
    expected = reference(
        model, prompt, params.max_new_tokens, eos_token_id=None, repetition_penalty=1.5
    )
    assert run(dec, prompt, params) == expected


def test_chunked_prefill_matches(model: Any) -> None:
    dec = FastDecoder(model, compile=False, eos_token_ids=[], min_bucket=64, prefill_chunk=7)
    prompt = PROMPTS[3]
    assert run(dec, prompt) == reference(model, prompt, GREEDY.max_new_tokens, eos_token_id=None)


def test_prefix_reuse_across_turns(model: Any, dec: FastDecoder) -> None:
    """A growing conversation: each turn = previous prompt + reply + new text."""
    prompt = [1, 5, 7, 9]
    prev_len = 0
    for turn in range(4):
        reply = run(dec, prompt)
        assert reply == reference(model, prompt, GREEDY.max_new_tokens, eos_token_id=None)
        if turn:
            # everything but the last prompt token came from the cache... except the reply's
            # last id, which was never fed; so reuse = the previous prompt + reply[:-1]
            assert dec.last_stats.reused_tokens == prev_len + GREEDY.max_new_tokens - 1
        prev_len = len(prompt)
        prompt = prompt + reply + [20 + turn, 21 + turn, 22]


def test_reuse_after_edit_crops_to_common_prefix(model: Any, dec: FastDecoder) -> None:
    first = list(range(30, 60))
    run(dec, first)
    edited = [*first[:10], 7, 7, 7, *first[13:]]  # an earlier message edited
    assert run(dec, edited) == reference(model, edited, GREEDY.max_new_tokens, eos_token_id=None)
    assert dec.last_stats.reused_tokens == 10
    shorter = first[:5]  # the cache holds more than the new prompt
    assert run(dec, shorter) == reference(model, shorter, GREEDY.max_new_tokens, eos_token_id=None)
    assert dec.last_stats.reused_tokens == 4  # the last prompt token is always fed


def test_reuse_off_and_reset(model: Any, dec: FastDecoder) -> None:
    p = PROMPTS[2]
    a = run(dec, p)
    assert run(dec, p, reuse_prefix=False) == a
    assert dec.last_stats.reused_tokens == 0
    dec.reset()
    assert dec.cached_tokens == 0
    assert run(dec, p) == a


def test_bucket_growth_keeps_prefix(model: Any) -> None:
    dec = FastDecoder(model, compile=False, eos_token_ids=[], min_bucket=32)
    p = [1, 2, 3, 4, 5]
    a = run(dec, p, GREEDY.with_changes(max_new_tokens=8))
    assert dec.last_stats.bucket == 32
    longer = p + a + list(range(60, 100))
    b = run(dec, longer, GREEDY.with_changes(max_new_tokens=40))
    assert dec.last_stats.bucket == 128
    assert dec.last_stats.reused_tokens == len(p) + len(a) - 1
    assert b == reference(model, longer, 40, eos_token_id=None)


def test_context_full_stops_with_length(model: Any) -> None:
    ctx = model.config.max_position_embeddings
    dec = FastDecoder(model, compile=False, eos_token_ids=[], min_bucket=64)
    prompt = list(range(1, ctx - 5))
    ids = run(dec, prompt, GREEDY.with_changes(max_new_tokens=100))
    assert dec.last_stats.stop_reason is StopReason.LENGTH
    assert len(prompt) + len(ids) - 1 <= ctx
    with pytest.raises(ValueError):
        run(dec, list(range(1, ctx + 2)))


def test_eos_stops_and_is_not_yielded(model: Any) -> None:
    free = FastDecoder(model, compile=False, eos_token_ids=[], min_bucket=64)
    ids = run(free, PROMPTS[0])
    eos = ids[5]
    first = ids.index(eos)
    dec = FastDecoder(model, compile=False, eos_token_ids=[eos], min_bucket=64)
    got = run(dec, PROMPTS[0])
    assert got == ids[:first]
    assert dec.last_stats.stop_reason is StopReason.EOS
    assert dec.last_stats.generated_tokens == first + 1


def test_max_new_tokens(dec: FastDecoder) -> None:
    assert len(run(dec, PROMPTS[0], GREEDY.with_changes(max_new_tokens=1))) == 1
    assert len(run(dec, PROMPTS[0], GREEDY.with_changes(max_new_tokens=5))) == 5
    assert dec.last_stats.stop_reason is StopReason.LENGTH


def test_cancel(model: Any, dec: FastDecoder) -> None:
    cancel = threading.Event()
    got = []
    for i in dec.generate_ids(PROMPTS[0], GREEDY, cancel):
        got.append(i)
        if len(got) == 3:
            cancel.set()
    assert len(got) == 3
    assert dec.last_stats.stop_reason is StopReason.CANCELLED
    # set before starting: nothing at all
    assert list(dec.generate_ids(PROMPTS[0], GREEDY, cancel)) == []
    # and the cache bookkeeping stayed exact: the next turn still matches generate
    cancel.clear()
    assert run(dec, PROMPTS[0]) == reference(
        model, PROMPTS[0], GREEDY.max_new_tokens, eos_token_id=None
    )


@pytest.mark.parametrize("ahead", [True, False], ids=["run-ahead", "in-step"])
def test_closing_early_keeps_cache_consistent(model: Any, ahead: bool) -> None:
    dec = FastDecoder(model, compile=False, eos_token_ids=[], min_bucket=64, run_ahead=ahead)
    gen = dec.generate_ids(PROMPTS[2], GREEDY, threading.Event())
    head = [next(gen) for _ in range(4)]
    gen.close()  # e.g. the backend hit a stop string
    # Running ahead, each id is fed before it is handed out, so all 4 are in the cache; in
    # step (CPU), the 4th is handed out first and was never fed.
    assert dec.cached_tokens == len(PROMPTS[2]) + (4 if ahead else 3)
    nxt = PROMPTS[2] + head + [9, 9]
    assert run(dec, nxt) == reference(model, nxt, GREEDY.max_new_tokens, eos_token_id=None)
    assert dec.last_stats.reused_tokens == len(PROMPTS[2]) + (4 if ahead else 3)


def test_run_ahead_is_off_on_cpu_and_gives_the_same_ids(model: Any, dec: FastDecoder) -> None:
    assert dec.run_ahead is (dec.device.type == "cuda")
    ahead = FastDecoder(model, compile=False, eos_token_ids=[], min_bucket=64, run_ahead=True)
    for prompt in PROMPTS[:3]:
        assert run(ahead, prompt) == run(dec, prompt)
        assert ahead.last_stats.steps_by_path == dec.last_stats.steps_by_path


def test_first_id_is_handed_out_before_the_next_step_on_cpu(model: Any, dec: FastDecoder) -> None:
    """In-step mode: the first id arrives right after the prefill (no decode step before it)."""
    calls = [0]
    # The embedding runs once per forward: the prefill's, then the (lean) step's.
    embed = model.get_input_embeddings()
    handle = embed.register_forward_pre_hook(lambda m, a: calls.__setitem__(0, calls[0] + 1))
    try:
        gen = dec.generate_ids(PROMPTS[0], GREEDY, threading.Event())
        next(gen)
        assert calls[0] == 1  # the prefill only
        next(gen)
        assert calls[0] == 2
        gen.close()
    finally:
        handle.remove()


def test_eos_id_is_reported(model: Any) -> None:
    ids = run(FastDecoder(model, compile=False, eos_token_ids=[], min_bucket=64), PROMPTS[1])
    eos = ids[3]
    dec = FastDecoder(model, compile=False, eos_token_ids=[eos], min_bucket=64)
    run(dec, PROMPTS[1])
    assert dec.last_stats.stop_reason is StopReason.EOS and dec.last_stats.eos_token_id == eos
    unused = next(i for i in range(1, 500) if i not in ids)
    other = FastDecoder(model, compile=False, eos_token_ids=[unused], min_bucket=64)
    run(other, PROMPTS[1])
    assert other.last_stats.stop_reason is StopReason.LENGTH
    assert other.last_stats.eos_token_id is None


def test_reusable_tokens_predicts_the_reuse(dec: FastDecoder) -> None:
    p = PROMPTS[2]
    assert dec.reusable_tokens(p) == 0
    reply = run(dec, p)
    nxt = p + reply + [5]
    predicted = dec.reusable_tokens(nxt)
    run(dec, nxt)
    assert predicted == dec.last_stats.reused_tokens == len(p) + len(reply) - 1
    assert dec.reusable_tokens(nxt, reuse_prefix=False) == 0


def test_one_generation_at_a_time(dec: FastDecoder) -> None:
    gen = dec.generate_ids(PROMPTS[0], GREEDY, threading.Event())
    next(gen)
    with pytest.raises(RuntimeError):
        run(dec, PROMPTS[1])
    gen.close()
    assert len(run(dec, PROMPTS[1])) == GREEDY.max_new_tokens


def test_seeded_sampling_is_reproducible(dec: FastDecoder) -> None:
    p = GenerationParams(
        do_sample=True, temperature=1.0, top_k=0, top_p=1.0, seed=7, max_new_tokens=20
    )
    a = run(dec, PROMPTS[0], p)
    assert run(dec, PROMPTS[0], p, reuse_prefix=False) == a
    assert run(dec, PROMPTS[0], p) == a  # with the prefix served from the cache
    assert run(dec, PROMPTS[0], p.with_changes(seed=8)) != a
    q = p.with_changes(temperature=0.7, top_k=20, top_p=0.9, min_p=0.05, repetition_penalty=1.2)
    assert run(dec, PROMPTS[0], q) == run(dec, PROMPTS[0], q)


def test_sampling_filters() -> None:
    """top-k / top-p / min-p keep exactly the tokens transformers' warpers keep."""
    logits = torch.tensor([4.0, 3.0, 2.0, 1.0, 0.0, -1.0])
    probs = torch.softmax(logits, 0)

    def support(**kw: Any) -> set[int]:
        buf = SamplingBuffers.allocate(6, "cpu")
        settings: dict[str, Any] = {"temperature": 1.0, "top_k": 0, "top_p": 1.0, **kw}
        buf.load(GenerationParams(do_sample=True, **settings), 0, [])
        seen = set()
        for pos in range(2000):
            seen.add(int(select_token(logits, buf, torch.tensor(pos), greedy=False)))
        return seen

    assert support() == set(range(6))
    assert support(top_k=2) == {0, 1}
    # top_p=0.8: mass above token 1 is p0=0.64 < 0.8 (kept), above token 2 is 0.87 (dropped)
    assert probs[0] < 0.8 < probs[0] + probs[1]
    assert support(top_p=0.8) == {0, 1}
    assert support(min_p=0.2) == {i for i in range(6) if probs[i] >= 0.2 * probs[0]}
    assert support(top_p=0.01) == {0}


def test_host_top_k_draws_exactly_like_the_full_sort() -> None:
    """The eager CPU step's top-k shortcut (`host_top_k`) picks the same token with the same
    logprob as sorting the whole vocabulary, ties at the cut included."""
    from llama_tui.engine.local.sampling import select_token_and_logprob

    torch.manual_seed(0)
    vocab = 500
    tied = torch.randn(vocab)
    tied[:6] = 5.0  # six equal logits: top_k=3 must keep all six, like the full sort
    cases = [
        (torch.randn(vocab) * 3, dict(top_k=20, top_p=0.9, min_p=0.02, temperature=0.7)),
        (torch.randn(vocab) * 3, dict(top_k=50, top_p=1.0, temperature=1.3)),
        (tied, dict(top_k=3, top_p=1.0, temperature=1.0)),
    ]
    for logits, settings in cases:
        buf = SamplingBuffers.allocate(vocab, "cpu")
        buf.load(GenerationParams(do_sample=True, seed=5, **settings), 5, [])
        k = int(settings["top_k"])
        picks = set()
        for pos in range(300):
            at = torch.tensor(pos)
            full = select_token_and_logprob(logits, buf, at, False)
            short = select_token_and_logprob(logits, buf, at, False, host_top_k=k)
            assert int(full[0]) == int(short[0])
            assert torch.allclose(full[1], short[1], atol=1e-6)
            picks.add(int(full[0]))
        if logits is tied:
            assert picks == set(range(6))


def test_sampling_frequencies() -> None:
    """The exponential race over hashed noise samples from softmax(logits)."""
    logits = torch.tensor([1.0, 0.0, -1.0, 0.5])
    buf = SamplingBuffers.allocate(4, "cpu")
    buf.load(GenerationParams(do_sample=True, temperature=1.0, top_k=0, top_p=1.0, seed=1), 1, [])
    n = 4000
    counts = torch.zeros(4)
    for pos in range(n):
        counts[int(select_token(logits, buf, torch.tensor(pos), greedy=False))] += 1
    assert torch.allclose(counts / n, torch.softmax(logits, 0), atol=0.03)
    e = exponential_noise(torch.arange(10000), torch.tensor(3), torch.tensor(5))
    assert abs(float(e.mean()) - 1.0) < 0.05 and bool((e > 0).all())


def test_helpers(model: Any) -> None:
    assert bucket_for(10, min_bucket=512, max_context=8192) == 512
    assert bucket_for(513, min_bucket=512, max_context=8192) == 1024
    assert bucket_for(9000, min_bucket=512, max_context=8192) == 8192
    assert bucket_for(10, min_bucket=512, max_context=256) == 256
    assert common_prefix_length([1, 2, 3], [1, 2, 4, 5]) == 2
    assert unsupported_reason(model) is None


def test_compiled_path_matches_eager(model: Any) -> None:
    """torch.compile on CPU (slow to build, so one small variant): same greedy tokens."""
    if not hasattr(torch, "compile"):
        pytest.skip("no torch.compile")
    states: list[str] = []
    dec = FastDecoder(
        model, compile=True, eos_token_ids=[], min_bucket=64, on_state=lambda s, d: states.append(s)
    )
    prompt = PROMPTS[0]
    params = GREEDY.with_changes(max_new_tokens=12)
    first = run(dec, prompt, params)  # served eagerly while the step compiles
    assert "optimising" in states
    assert dec.wait_ready(timeout=600)
    assert not dec.compiling
    info = dec.variant_info()
    if info[0]["failed"]:
        pytest.skip(f"inductor unavailable here: {info[0]['failed']}")
    second = run(dec, prompt, params, reuse_prefix=False)
    assert dec.last_stats.steps_by_path == {"compiled": 11}
    assert second == first == reference(model, prompt, 12, eos_token_id=None)
    assert states[-1] == "ready"
    dec.close()


def test_warm_up_sets_the_bucket_floor(model: Any) -> None:
    dec = FastDecoder(model, compile=False, eos_token_ids=[], min_bucket=32)
    dec.warm_up(100, greedy=True, max_new_tokens=20)  # compile off: only the floor moves
    run(dec, [1, 2, 3], GREEDY.with_changes(max_new_tokens=4))
    assert dec.last_stats.bucket == 128


def test_works_without_static_layer_crop(model: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """transformers 5.17 (the GPU image) has no StaticLayer.crop: the decoder never calls it."""
    from transformers.cache_utils import StaticLayer

    def missing(self: Any, tokens_to_remove: int) -> None:
        raise AttributeError("'StaticLayer' object has no attribute 'crop'")

    monkeypatch.setattr(StaticLayer, "crop", missing)
    dec = FastDecoder(model, compile=False, eos_token_ids=[], min_bucket=64)
    first = list(range(30, 60))
    run(dec, first)
    edited = [*first[:10], 7, 7, 7, *first[13:]]
    assert run(dec, edited) == reference(model, edited, GREEDY.max_new_tokens, eos_token_id=None)
    assert dec.last_stats.reused_tokens == 10
    assert run(dec, first, reuse_prefix=False) == run(dec, first)
    dec.reset()
    assert dec.cached_tokens == 0 and dec._kv.cache.get_seq_length() == 0

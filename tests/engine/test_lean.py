"""The fast decoder's lean CPU step (engine.fast.lean) against the model's own forward.

Greedy tokens must equal `generate`'s (float32, the tiny random Llama and tiny Qwen2 / Mistral
models built from configs), across turns that reuse the KV cache; fused projections must equal
the separate layers and share their memory; models it cannot drive are refused by name.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from llama_tui.core.params import GenerationParams  # noqa: E402
from llama_tui.engine.fast.decoder import FastDecoder  # noqa: E402
from llama_tui.engine.fast.lean import fused_linear, lean_reason  # noqa: E402
from tests.engine.greedy import reference  # noqa: E402

GREEDY = GenerationParams(do_sample=False, max_new_tokens=20)
PROMPT = [1, 5, 7, 9, 11, 13, 17, 19]


def generate_ids(model: Any, prompt: list[int], n: int) -> list[int]:
    return reference(model, prompt, n, eos_token_id=None)  # no EOS: all n tokens


def decode(dec: FastDecoder, prompt: list[int]) -> list[int]:
    return list(dec.generate_ids(prompt, GREEDY, threading.Event()))


def tiny_from_config(kind: str, **extra: Any) -> Any:
    """A random float32 model of another Llama-family architecture (no tokenizer needed)."""
    import transformers

    common = dict(
        vocab_size=300,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
    )
    config_cls, model_cls = {
        "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
        "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM),
        "qwen3": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM),
    }[kind]
    if kind == "mistral":
        extra["sliding_window"] = None
    torch.manual_seed(3)
    return model_cls(config_cls(**common, **extra)).eval()


def sharpen(model: Any, factor: float = 12.0) -> Any:
    """Scale q and k up: at initialisation scale a random model attends almost uniformly, so
    a wrong rotary or a wrong key would barely change its tokens. With sharp attention every
    position matters."""
    with torch.no_grad():
        for layer in model.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj):
                proj.weight.mul_(factor)
    return model


@pytest.fixture(scope="module")
def llama(tiny_model_dir: Path) -> Any:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    return sharpen(model)


def test_lean_logits_equal_the_models_forward(llama: Any) -> None:
    from llama_tui.engine.fast.cache import new_static_cache
    from llama_tui.engine.fast.lean import LeanForward

    lean = LeanForward(llama)
    ours, theirs = (new_static_cache(llama.config, 64, torch.float32, "cpu") for _ in "ab")
    ids = torch.tensor([PROMPT])
    with torch.no_grad():
        for cache in (ours, theirs):
            llama(input_ids=ids, cache=cache, use_cache=True)
        for token in (3, 77, 5, 140):
            x = torch.tensor([[token]])
            want = llama(input_ids=x, cache=theirs, use_cache=True).logits[0, -1]
            got = lean(ours, x)
            assert torch.allclose(got, want, atol=1e-5, rtol=1e-5), (got - want).abs().max()
            assert int(ours.get_seq_length()) == int(theirs.get_seq_length())
        # Attention is sharp enough that the answer depends on the positions: a token fed at
        # another position gives other logits.
        shifted = new_static_cache(llama.config, 64, torch.float32, "cpu")
        llama(input_ids=torch.tensor([PROMPT[:-1]]), cache=shifted, use_cache=True)
        moved = lean(shifted, torch.tensor([[3]]))
        assert (moved - lean(ours, torch.tensor([[3]]))).abs().max() > 1e-2


def test_lean_step_is_on_by_default_on_cpu_and_matches_generate(llama: Any) -> None:
    lean = FastDecoder(llama, compile=False, eos_token_ids=[], min_bucket=64)
    plain = FastDecoder(llama, compile=False, eos_token_ids=[], min_bucket=64, lean=False)
    assert lean.lean is not None and plain.lean is None
    expected = generate_ids(llama, PROMPT, GREEDY.max_new_tokens)
    assert decode(lean, PROMPT) == expected == decode(plain, PROMPT)
    # Next turn: the previous exchange is reused from the cache, the rest prefilled.
    turn2 = PROMPT + expected + [23, 29, 31]
    assert decode(lean, turn2) == generate_ids(llama, turn2, GREEDY.max_new_tokens)
    assert lean.last_stats.reused_tokens == len(PROMPT) + len(expected) - 1
    assert lean.last_stats.steps_by_path == {"eager": GREEDY.max_new_tokens - 1}


def test_a_cache_of_another_bucket_and_a_full_cache(llama: Any) -> None:
    """The lean step writes where the model's prefill left off, in any bucket, and stops at
    the bucket's end like the model's own step."""
    dec = FastDecoder(llama, compile=False, eos_token_ids=[], min_bucket=32, max_context=64)
    long_prompt = list(range(40, 80))  # 40 + 20 tokens: the 64-token bucket
    assert decode(dec, long_prompt) == generate_ids(llama, long_prompt, GREEDY.max_new_tokens)
    assert dec.last_stats.bucket == 64


@pytest.mark.parametrize("kind", ["qwen2", "mistral"])
def test_other_llama_family_layers(kind: str) -> None:
    """Qwen2 has biases on q/k/v (fused with the weights); Mistral is Llama's layout."""
    model = sharpen(tiny_from_config(kind))
    assert lean_reason(model) is None
    dec = FastDecoder(model, compile=False, eos_token_ids=[], min_bucket=64)
    assert dec.lean is not None
    assert decode(dec, PROMPT) == generate_ids(model, PROMPT, GREEDY.max_new_tokens)


def test_a_tied_output_head_stays_tied() -> None:
    model = sharpen(tiny_from_config("qwen2", tie_word_embeddings=True))
    assert model.lm_head.weight is model.model.embed_tokens.weight
    dec = FastDecoder(model, compile=False, eos_token_ids=[], min_bucket=64)
    assert dec.lean is not None
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert decode(dec, PROMPT) == generate_ids(model, PROMPT, GREEDY.max_new_tokens)


def test_models_it_cannot_drive_are_refused_with_the_reason() -> None:
    qwen3 = tiny_from_config("qwen3")  # q_norm / k_norm in attention
    assert "Qwen3DecoderLayer" in str(lean_reason(qwen3))
    dec = FastDecoder(qwen3, compile=False, eos_token_ids=[], min_bucket=64)
    assert dec.lean is None  # the model's own forward serves
    assert decode(dec, PROMPT) == generate_ids(qwen3, PROMPT, GREEDY.max_new_tokens)
    assert lean_reason(torch.nn.Linear(4, 4)) == "not a decoder-only model"
    windowed = tiny_from_config(
        "qwen2", use_sliding_window=True, sliding_window=16, max_window_layers=0
    )
    assert "sliding-window" in str(lean_reason(windowed))


def test_fused_dense_projections_equal_the_layers_and_share_their_memory() -> None:
    torch.manual_seed(0)
    mods = [torch.nn.Linear(64, n, bias=b) for n, b in ((64, True), (32, False), (32, True))]
    x = torch.randn(1, 64)
    want = torch.cat([m(x) for m in mods], dim=-1).detach()
    op = fused_linear(mods)
    assert torch.equal(op(x), want)
    base = mods[0].weight.untyped_storage().data_ptr()
    assert all(m.weight.untyped_storage().data_ptr() == base for m in mods)
    assert torch.equal(torch.cat([m(x) for m in mods], dim=-1), want)  # the layers still work


@pytest.mark.parametrize("bits", [4, 8])
def test_fused_int4_and_int8_projections(bits: int) -> None:
    from llama_tui.engine.quant.apply import quantize_model

    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Linear(64, 32)).bfloat16()
    quantize_model(model, bits)  # type: ignore[arg-type]
    mods = list(model)
    x = torch.randn(1, 64, dtype=torch.bfloat16)
    want = torch.cat([m(x) for m in mods], dim=-1)
    op = fused_linear(mods)
    assert torch.equal(op(x), want)
    name = "packed" if bits == 4 else "codes"
    ptrs = {getattr(m, name).untyped_storage().data_ptr() for m in mods}
    assert len(ptrs) == 1  # one fused tensor, the layers hold views of it


def test_int4_model_lean_step_matches_generate(tiny_model_dir: Path) -> None:
    from llama_tui.core.backend import LoadOptions
    from llama_tui.engine.loading.models import load_model

    loaded = load_model(str(tiny_model_dir), LoadOptions(device="cpu", dtype="int4", threads=1))
    dec = FastDecoder(loaded.model, compile=False, eos_token_ids=[], min_bucket=64)
    assert dec.lean is not None
    assert decode(dec, PROMPT) == generate_ids(loaded.model, PROMPT, GREEDY.max_new_tokens)

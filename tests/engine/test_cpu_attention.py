"""The folded one-token CPU attention (engine/fast/cpu_attention.py): installed on CPU loads,
and the same tokens and logits as transformers' own sdpa on the tiny Llama (2 query heads per
KV head)."""

from __future__ import annotations

from pathlib import Path

import torch

from llama_tui.core.backend import LoadOptions
from llama_tui.engine.fast import cpu_attention
from llama_tui.engine.loading.models import load_model


def test_cpu_loads_use_the_folded_attention_with_identical_output(tiny_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    loaded = load_model(str(tiny_model_dir), LoadOptions(device="cpu", dtype="float32"))
    assert loaded.model.config._attn_implementation == cpu_attention.NAME
    plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    assert plain.config._attn_implementation == "sdpa"
    x = torch.tensor([[1, 5, 7, 9, 11, 13]])
    with torch.no_grad():
        mine = loaded.model.generate(input_ids=x, max_new_tokens=24, do_sample=False)
        theirs = plain.generate(input_ids=x, max_new_tokens=24, do_sample=False)
        assert mine.tolist() == theirs.tolist()
        # One decode step with a cache, the case the fold serves: the same logits.
        out = plain(input_ids=x, use_cache=True)
        step = torch.tensor([[17]])
        a = plain(input_ids=step, cache=out.cache).logits
        out = loaded.model(input_ids=x, use_cache=True)
        b = loaded.model(input_ids=step, cache=out.cache).logits
    assert float((a - b).abs().max()) < 1e-5

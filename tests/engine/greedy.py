"""The reference every fast path is held to: `model.generate`'s greedy tokens."""

from __future__ import annotations

from typing import Any


def reference(model: Any, prompt: list[int], n: int, **kw: Any) -> list[int]:
    """The `n` greedy ids `generate` (default dynamic cache) gives after `prompt`."""
    import torch

    x = torch.tensor([prompt])
    with torch.no_grad():
        out = model.generate(
            input_ids=x,
            attention_mask=torch.ones_like(x),
            max_new_tokens=n,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            **kw,
        )
    return [int(i) for i in out[0, len(prompt) :]]

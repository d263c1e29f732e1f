"""The fast decoder's KV cache: bucketed lengths, prefix reuse, cropping, allocation.

The cache is a transformers `StaticCache` sized to a *bucket* (512, 1k, 2k, ... up to the
context), so a growing conversation changes shape a handful of times, not every turn (every
shape is one compiled variant of the step, see compile.py).

The decoder keeps the ids whose keys/values sit in the cache, so the next turn prefills only
what differs from the longest common prefix (KV reuse: at turn 10 of a chat that cut the
time to the first token ~9x, with identical replies). A StaticCache is cropped by moving its
length counter back: stale entries past the length are masked out (the mask is built from
the cache length) and overwritten.

torch and transformers are imported lazily, inside functions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

log = logging.getLogger(__name__)


def bucket_for(needed: int, *, min_bucket: int, max_context: int) -> int:
    """Smallest power-of-two cache length >= `needed`, clamped to [min_bucket, max_context]."""
    b = max(1, min_bucket)
    while b < needed:
        b *= 2
    return max(min(b, max_context), min(min_bucket, max_context))


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def crop_static_cache(cache: Any, remove: int) -> None:
    """Forget the last `remove` positions of a `StaticCache` by moving its length counters back.

    What transformers 5.24's `StaticLayer.crop` does, done here because releases before it
    have no `crop` for static layers. In place: the counter is a tensor with a static address
    that compiled code and CUDA graphs read.
    """
    if remove <= 0:
        return
    for layer in cache.layers:
        length = layer.cumulative_length
        if hasattr(length, "sub_"):
            length.sub_(remove)
        else:  # a plain int in some releases
            layer.cumulative_length = length - remove


def unsupported_reason(model: Any) -> str | None:
    """Why `FastDecoder` cannot drive `model` (then use `generate`), or None when it can."""
    from transformers import StaticCache
    from transformers.cache_utils import StaticLayer

    cfg = getattr(model, "config", None)
    if cfg is None or getattr(cfg, "is_encoder_decoder", False):
        return "not a decoder-only model"
    dmap = getattr(model, "hf_device_map", None)
    if dmap and len(set(map(str, dmap.values()))) > 1:
        return "model is spread over several devices"
    q = getattr(model, "hf_quantizer", None)
    if q is not None and "gguf" not in type(q).__name__.lower():
        return f"quantized model ({type(q).__name__})"
    try:
        cache = StaticCache(config=cfg, max_cache_len=8)
    except Exception as e:
        return f"no static cache for this architecture ({e})"
    if not all(type(layer) is StaticLayer for layer in cache.layers):
        return "sliding-window or hybrid attention layers"
    if not all(hasattr(layer, "cumulative_length") for layer in cache.layers):
        return "this transformers' StaticCache keeps no length counter (cannot be cropped)"
    return None


def new_static_cache(config: Any, bucket: int, dtype: Any, device: Any) -> Any:
    """An empty `StaticCache` of `bucket` positions for one sequence, allocated on `device`."""
    import torch
    from transformers import StaticCache

    cache = StaticCache(config=config, max_cache_len=bucket)
    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    # Allocate now (not lazily in the first update) so that the tensors get their static
    # addresses outside any compiled region, and the size is known up front.
    with torch.no_grad():
        cache.early_initialization(1, heads, head_dim, dtype, device)
    return cache


class LiveCache:
    """The decoder's one live `StaticCache` and the ids whose keys/values sit in it, in order.

    Only the decoding thread changes it, except `floor`, which `FastDecoder.warm_up` raises
    (from any thread, after reading `bucket`).

    Args:
        new_cache: bucket -> an empty cache of that length.
        min_bucket, max_context: the bucket range (see `bucket_for`).
        on_replace: called before the cache object is replaced or dropped (CUDA graphs
            captured against the old one must go with it).
    """

    def __init__(
        self,
        new_cache: Callable[[int], Any],
        *,
        min_bucket: int,
        max_context: int,
        on_replace: Callable[[], None],
    ) -> None:
        self._new_cache = new_cache
        self._on_replace = on_replace
        self.min_bucket = min_bucket
        self.max_context = max_context
        self.cache: Any = None
        self.gen = 0  # bumped whenever the live cache object is replaced or dropped
        self.bucket = 0
        self.floor = 0  # the smallest bucket the next cache gets; raised by warm_up()
        self.tokens: list[int] = []  # ids whose keys/values are in the cache, in order

    def bucket_for(self, needed: int) -> int:
        return bucket_for(needed, min_bucket=self.min_bucket, max_context=self.max_context)

    def reusable(self, prompt_ids: Sequence[int], reuse_prefix: bool = True) -> int:
        """How many of `prompt_ids` the next reply will serve from the cache."""
        if not reuse_prefix or not prompt_ids:
            return 0
        # The last prompt token is always fed: its logits pick the first reply token.
        return min(common_prefix_length(self.tokens, prompt_ids), len(prompt_ids) - 1)

    def ensure(self, prompt: list[int], needed: int, reuse: bool) -> int:
        """Make the cache big enough and crop it to the reusable prefix; return its length."""
        keep = self.reusable(prompt, reuse)
        target = min(max(self.bucket_for(needed), self.floor), self.max_context)
        if self.cache is None or target > self.bucket:
            old, old_len = self.cache, len(self.tokens)
            new = self._new_cache(target)
            if old is not None and keep > 0:
                import torch

                # Carry the reusable prefix into the bigger cache (a device copy, no recompute).
                with torch.no_grad():
                    for i, layer in enumerate(old.layers):
                        new.update(layer.keys[:, :, :keep], layer.values[:, :, :keep], i)
            else:
                keep = 0
            del old
            log.debug("cache bucket %d -> %d (had %d tokens)", self.bucket, target, old_len)
            self.replace(new, target)
        elif len(self.tokens) > keep:
            crop_static_cache(self.cache, len(self.tokens) - keep)
        self.tokens = prompt[:keep]
        return keep

    def replace(self, new: Any = None, bucket: int = 0) -> None:
        """Replace (or drop) the cache object; the ids kept are the caller's business."""
        self._on_replace()
        self.cache, self.bucket = new, bucket
        self.gen += 1

    def reset(self) -> None:
        """Forget the cached prefix; keeps the cache object (and so the graphs bound to it)."""
        if self.cache is not None and self.tokens:
            crop_static_cache(self.cache, len(self.tokens))
        self.tokens = []

"""A lean one-token forward for Llama-family models on the CPU: the fast decoder's eager step.

On a CPU the decode step of a small model is bound by per-op overhead, not by the weights: the
demo model's step through transformers' modules (mask building, output records, hooks, a
module call per projection, `repeat_kv`) took ~16 ms at 1 thread against ~10 ms for the same
arithmetic written out as below. This forward computes the same layers, in the same order and
the same dtypes, with fewer ops:

* q/k/v in one matmul and gate/up in one (their weights concatenated once; the original
  modules' weights become views into the fused tensor, so no memory is added);
* rotary embedding on q and k together, one position computed per step;
* attention over the live length of the cache only, with the query heads that share a KV head
  folded into query rows (one SDPA call per layer, no mask, no `repeat_kv`);
* keys and values written straight into transformers' `StaticCache` tensors, whose length
  counters it advances: the prompt is prefilled by the model itself into the same cache, and
  KV reuse, cropping and bucket changes keep working unchanged.

Only transformers' own Llama / Mistral / Qwen2 decoder layers, with full attention and a
static cache the decoder can drive, are run (`lean_reason`); the rest keep the model's forward.
The greedy tokens equal `generate`'s (which also attends over the live length): in float32 on
tiny models (tests/engine/test_lean.py), and in float32, bfloat16, float16 and int4 on the demo
model (benchmarks/cpu.py). The model's own forward over a static cache attends over the whole
bucket with a mask, which can round a bfloat16 near-tie the other way.

torch is imported lazily, inside functions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

log = logging.getLogger(__name__)

# transformers' decoder-layer classes whose forward this module reproduces.
LAYER_CLASSES = frozenset({"LlamaDecoderLayer", "MistralDecoderLayer", "Qwen2DecoderLayer"})


def lean_reason(model: Any) -> str | None:
    """Why `LeanForward` cannot drive `model`, or None when it can."""
    from llama_tui.engine.fast.cache import unsupported_reason

    why = unsupported_reason(model)  # sliding windows, several devices, other quantizers
    if why is not None:
        return why
    core = getattr(model, "model", None)
    layers = getattr(core, "layers", None)
    if core is None or not layers:
        return "no decoder layers found"
    for layer in layers:
        cls = type(layer)
        if cls.__name__ not in LAYER_CLASSES or not cls.__module__.startswith("transformers."):
            return f"layer type {cls.__module__}.{cls.__name__}"
        attn, mlp = getattr(layer, "self_attn", None), getattr(layer, "mlp", None)
        if any(hasattr(attn, n) for n in ("q_norm", "k_norm", "sinks")):
            return "attention with extra norms or sinks"
        if type(getattr(mlp, "act_fn", None)).__name__ != "SiLUActivation":
            return "MLP activation is not SiLU"
    if getattr(core, "rotary_emb", None) is None:
        return "no rotary embedding module"
    if next(model.parameters()).device.type != "cpu":
        return "not on the CPU"
    return None


class LeanForward:
    """`forward(cache, token) -> float32 logits [vocab]` for one token; see the module docstring.

    The token's position is the cache's length; the forward writes its keys and values there
    and advances the length by one, as the model's own forward with `cache=` does.
    """

    def __init__(self, model: Any) -> None:
        import torch

        reason = lean_reason(model)
        if reason is not None:
            raise ValueError(f"lean forward cannot drive this model: {reason}")
        core = model.model
        cfg = model.config
        self.n_heads = int(cfg.num_attention_heads)
        self.n_kv = int(getattr(cfg, "num_key_value_heads", None) or self.n_heads)
        self.head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // self.n_heads)
        self.embed = core.get_input_embeddings()
        self.rotary = core.rotary_emb
        self.norm = (core.norm.weight, float(core.norm.variance_epsilon))
        self.head = fused_linear([model.get_output_embeddings()])
        self._pos = torch.zeros((1, 1), dtype=torch.long)
        self.layers = [self._layer(layer) for layer in core.layers]

    def _layer(self, layer: Any) -> tuple[Any, ...]:
        attn, mlp = layer.self_attn, layer.mlp
        qkv = fused_linear([attn.q_proj, attn.k_proj, attn.v_proj])
        gate_up = fused_linear([mlp.gate_proj, mlp.up_proj])
        n1, n2 = layer.input_layernorm, layer.post_attention_layernorm
        return (
            n1.weight,
            float(n1.variance_epsilon),
            qkv,
            float(attn.scaling),
            fused_linear([attn.o_proj]),  # a single layer too: the kernel without the module
            n2.weight,
            float(n2.variance_epsilon),
            gate_up,
            int(mlp.gate_proj.out_features),
            fused_linear([mlp.down_proj]),
        )

    def __call__(self, cache: Any, token: Any) -> Any:
        import torch
        from torch.nn.functional import scaled_dot_product_attention, silu

        nq, nkv, d = self.n_heads, self.n_kv, self.head_dim
        p = int(cache.layers[0].cumulative_length)
        x = self.embed(token.view(1, 1))[0]  # [1, hidden]
        self._pos.fill_(p)
        cos, sin = self.rotary(x[None], self._pos)  # [1, 1, d] in x's dtype
        half = d // 2
        cos, sin = cos.view(1, d), sin.view(1, d)
        # rotate_half(x) * sin == roll(x, half) * [-sin_1, sin_2]: one op per layer instead of
        # two slices, a negation and a cat, and bit for bit the same (negating is exact).
        sin = torch.cat((-sin[:, :half], sin[:, half:]), dim=-1)
        for i, layer in enumerate(self.layers):
            (w1, eps1, qkv_mm, scaling, o_proj, w2, eps2, gate_up_mm, inter, down) = layer
            kv = cache.layers[i]
            qkv = qkv_mm(_rms_norm(x, w1, eps1)).view(nq + 2 * nkv, d)
            qk = qkv[: nq + nkv]
            # transformers' apply_rotary_pos_emb, for q and k at once
            qk = qk * cos + qk.roll(half, dims=-1) * sin
            kv.keys[0, :, p].copy_(qk[nq:])
            kv.values[0, :, p].copy_(qkv[nq + nkv :])
            q = qk[:nq].view(1, nkv, nq // nkv, d)
            out = scaled_dot_product_attention(
                q, kv.keys[:, :, : p + 1], kv.values[:, :, : p + 1], scale=scaling
            )
            x = x + o_proj(out.reshape(1, nq * d))
            gu = gate_up_mm(_rms_norm(x, w2, eps2))
            x = x + down(silu(gu[:, :inter]) * gu[:, inter:])
        for layer_cache in cache.layers:
            layer_cache.cumulative_length.add_(1)
        logits = self.head(_rms_norm(x, *self.norm))
        return logits[0].float()


def _rms_norm(x: Any, weight: Any, eps: float) -> Any:
    """transformers' LlamaRMSNorm, op for op (float32 inside, the weight applied after)."""
    import torch

    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(x.dtype)


def fused_linear(mods: Sequence[Any]) -> Callable[[Any], Any]:
    """One op computing `cat([m(x) for m in mods], -1)` where the layer types allow it (for
    a single layer: its kernel called directly, without the module's reshapes and checks).

    Plain `nn.Linear` and our int4 / int8 layers are fused by concatenating their weights along
    the output dimension; each module's weight then becomes a view into the fused tensor (the
    model's own forward, used for prompts, reads the same memory). Any other layer type, or a
    fused result that does not equal the separate ones, falls back to calling the modules.
    """
    import torch

    fused = _fuse(mods)
    if fused is not None:
        return fused
    if len(mods) == 1:
        return mods[0]  # type: ignore[no-any-return]
    return lambda x: torch.cat([m(x) for m in mods], dim=-1)


def _fuse(mods: Sequence[Any]) -> Callable[[Any], Any] | None:
    import torch
    from torch import nn

    from llama_tui.engine.quant.blocks import GROUP
    from llama_tui.engine.quant.linear import module_classes

    int4_cls, int8_cls = module_classes()
    kinds = {type(m) for m in mods}
    if len(kinds) != 1 or len({int(m.in_features) for m in mods}) != 1:
        return None
    kind = kinds.pop()
    if kind not in (nn.Linear, int4_cls, int8_cls):
        return None
    sample = torch.randn(1, mods[0].in_features, dtype=_param_dtype(mods[0]))
    with torch.no_grad():
        want = torch.cat([m(sample) for m in mods], dim=-1)
        bias = _fused_bias(mods)
        if kind is nn.Linear:
            weight = _joined([m.weight for m in mods])
            shared = {"weight": weight}

            def op(x: Any) -> Any:
                return torch.nn.functional.linear(x, weight, bias)

        elif kind is int4_cls:
            packed = _joined([m.packed for m in mods])
            sz = _joined([m.scales_and_zeros for m in mods], dim=1).contiguous()
            mm4 = torch.ops.aten._weight_int4pack_mm_for_cpu
            shared = {"packed": packed}

            def op(x: Any) -> Any:
                y = mm4(x, packed, GROUP, sz)
                return y if bias is None else y + bias

        else:
            codes = _joined([m.codes for m in mods])
            scales = _joined([m.scales for m in mods])
            mm8 = torch.ops.aten._weight_int8pack_mm
            shared = {"codes": codes, "scales": scales}

            def op(x: Any) -> Any:
                y = mm8(x, codes, scales)
                return y if bias is None else y + bias

        if not torch.equal(op(sample), want):
            log.info("fused %s layers differ from the separate ones: not fused", kind.__name__)
            return None
        if len(mods) > 1:
            _share(mods, shared)
    return op


def _joined(parts: Sequence[Any], dim: int = 0) -> Any:
    """The parts concatenated, or the one part itself (a tied output head stays tied)."""
    import torch

    return parts[0] if len(parts) == 1 else torch.cat(list(parts), dim=dim)


def _share(mods: Sequence[Any], fused: dict[str, Any]) -> None:
    """Point each module's weights at their rows of the fused tensors (the memory is shared)."""
    from torch import nn

    start = 0
    for m in mods:
        rows = int(m.out_features)
        for name, whole in fused.items():
            part = whole[start : start + rows]
            if isinstance(getattr(m, name), nn.Parameter):
                setattr(m, name, nn.Parameter(part, requires_grad=False))
            else:
                setattr(m, name, part)
        start += rows


def _fused_bias(mods: Sequence[Any]) -> Any:
    import torch

    if all(getattr(m, "bias", None) is None for m in mods):
        return None
    dtype = _param_dtype(mods[0])
    parts = [
        torch.zeros(m.out_features, dtype=dtype) if m.bias is None else m.bias.detach().to(dtype)
        for m in mods
    ]
    return torch.cat(parts)


def _param_dtype(module: Any) -> Any:
    """The activations' dtype a layer computes in (int layers: their scales' dtype)."""
    for name in ("weight", "scales_and_zeros", "scales"):
        t = getattr(module, name, None)
        if t is not None and t.is_floating_point():
            return t.dtype
    raise ValueError(f"no floating weight in {type(module).__name__}")

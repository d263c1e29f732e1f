"""`nn.Linear` replacements over torch's CPU weight-only kernels (torch >= 2.6, verified 2.13).

- int4: `aten._weight_int4pack_mm_for_cpu(x, packed, 32, scales_and_zeros)`; the packed weight
  comes from `aten._convert_weight_to_int4pack_for_cpu(int32 codes [N, K], 2)` and
  `scales_and_zeros` is `[K / 32, N, 2]` in the activations' dtype.
- int8: `aten._weight_int8pack_mm(x, int8 [N, K], scales [N])`.

Both kernels want the scales in the activations' dtype, and only bfloat16 activations are fast
(on a 2-core AVX-512 EPYC, a 1536x576 int4 layer took 35 us per token in bf16 against 766 us
in float32), so the model around them runs in bfloat16.

The module classes are built on first use (`module_classes`): importing this module must not
import torch (tests/unit/test_imports.py).
"""

from __future__ import annotations

import functools
from typing import Any

from llama_tui.engine.quant.blocks import GROUP, QuantWeight, per_channel_int8

INNER_K_TILES = 2  # 2, 4 and 8 pack identically on CPU


def int4_supported() -> bool:
    """Whether this torch has the CPU int4 kernels (torch 2.6+)."""
    import torch

    ops = torch.ops.aten
    return hasattr(ops, "_weight_int4pack_mm_for_cpu") and hasattr(
        ops, "_convert_weight_to_int4pack_for_cpu"
    )


def int8_supported() -> bool:
    import torch

    return hasattr(torch.ops.aten, "_weight_int8pack_mm")


def int4_linear(weight: QuantWeight, bias: Any, dtype: Any) -> Any:
    """An int4 `nn.Module` computing `x W^T (+ b)` with activations in `dtype`."""
    import torch

    if weight.bits != 4 or weight.scale.shape[1] * GROUP != weight.shape[1]:
        raise ValueError("int4 layers need 4-bit codes in groups of 32")
    codes = weight.codes.to(torch.int32).contiguous()
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, INNER_K_TILES)
    sz = torch.stack([weight.scale, weight.zero], dim=-1).transpose(0, 1)
    return module_classes()[0](packed, sz.to(dtype).contiguous(), bias, weight.shape[1])


def int8_linear(weight: QuantWeight, bias: Any, dtype: Any) -> Any:
    """An int8 (per-output-channel scales) `nn.Module` computing `x W^T (+ b)`."""
    import torch

    weight = per_channel_int8(weight)
    n, _ = weight.shape
    codes = weight.codes.to(torch.int8).contiguous()
    return module_classes()[1](codes, weight.scale.reshape(n).to(dtype).contiguous(), bias)


@functools.cache
def module_classes() -> tuple[Any, Any]:
    """(Int4Linear, Int8Linear), defined once torch is wanted. Built from their packed
    tensors (`int4_linear` / `int8_linear` pack them; `packed_cache` loads them)."""
    import torch
    from torch import nn

    class Int4Linear(nn.Module):  # type: ignore[misc]  # torch is untyped to mypy here
        """y = x W^T (+ b) with W as group-32 4-bit codes; see the module docstring."""

        def __init__(self, packed: Any, scales_and_zeros: Any, bias: Any, in_features: int):
            super().__init__()
            self.in_features = in_features
            self.out_features = int(scales_and_zeros.shape[1])
            self.register_buffer("packed", packed)
            self.register_buffer("scales_and_zeros", scales_and_zeros)
            dtype = scales_and_zeros.dtype
            self.bias = None if bias is None else nn.Parameter(bias.detach().to(dtype), False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            sz = self.scales_and_zeros
            flat = x.reshape(-1, self.in_features)
            if flat.dtype != sz.dtype:
                flat = flat.to(sz.dtype)
            y = torch.ops.aten._weight_int4pack_mm_for_cpu(flat, self.packed, GROUP, sz)
            if self.bias is not None:
                y = y + self.bias
            return y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)

        def extra_repr(self) -> str:
            return f"in_features={self.in_features}, out_features={self.out_features}, int4"

    class Int8Linear(nn.Module):  # type: ignore[misc]
        """y = x W^T (+ b) with W as int8 codes and one scale per output channel."""

        def __init__(self, codes: Any, scales: Any, bias: Any) -> None:
            super().__init__()
            self.out_features, self.in_features = (int(d) for d in codes.shape)
            self.register_buffer("codes", codes)
            self.register_buffer("scales", scales)
            dtype = scales.dtype
            self.bias = None if bias is None else nn.Parameter(bias.detach().to(dtype), False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            flat = x.reshape(-1, self.in_features)
            if flat.dtype != self.scales.dtype:
                flat = flat.to(self.scales.dtype)
            y = torch.ops.aten._weight_int8pack_mm(flat, self.codes, self.scales)
            if self.bias is not None:
                y = y + self.bias
            return y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)

        def extra_repr(self) -> str:
            return f"in_features={self.in_features}, out_features={self.out_features}, int8"

    return Int4Linear, Int8Linear

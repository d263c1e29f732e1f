"""Quantised weights as codes + per-group scales: read from GGUF blocks, or made from floats.

GGUF block formats (llama.cpp's ggml-common.h), one row per output feature, blocks of 32
weights along the input dimension:

- Q4_0: fp16 `d`, 16 bytes of 4-bit codes; `w = d * (q - 8)`.
- Q4_1: fp16 `d`, fp16 `m`, 16 bytes of codes; `w = d * q + m`.
- Q8_0: fp16 `d`, 32 int8 codes; `w = d * q`.

In a block's 16 code bytes, byte j holds weight j in its low nibble and weight j + 16 in its
high nibble. The int4 kernel computes `w = (q - 8) * scale + zero` per group of 32, so Q4_0 is
(scale d, zero 0) and Q4_1 is (scale d, zero m + 8d): the same weights, without a round trip
through floats (in float32 activations exactly; bf16 activations round scale and zero to bf16).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

GROUP = 32  # the weights per block / quantisation group, in every format here

Q4_0, Q4_1, Q8_0 = "Q4_0", "Q4_1", "Q8_0"
BLOCK_BYTES = {Q4_0: 18, Q4_1: 20, Q8_0: 34}


@dataclass
class QuantWeight:
    """A `[N, K]` weight as integer codes and per-group float32 scales.

    4-bit (`bits == 4`): `codes` uint8 `[N, K]` in 0..15, `scale` and `zero` float32
    `[N, K / GROUP]`, `w = (q - 8) * scale + zero`. 8-bit: `codes` int8 `[N, K]`, `scale`
    float32 `[N, K / GROUP]` (GGUF Q8_0) or `[N, 1]` (per output channel), `zero` None,
    `w = q * scale`.
    """

    bits: int
    codes: Any  # torch.Tensor
    scale: Any
    zero: Any = None

    @property
    def shape(self) -> tuple[int, int]:
        n, k = self.codes.shape
        return int(n), int(k)

    def dequantize(self) -> Any:
        """The float32 weights these codes stand for."""
        import torch

        n, k = self.shape
        group = k // self.scale.shape[1]
        q = self.codes.to(torch.float32).view(n, -1, group)
        if self.bits == 4:
            w = (q - 8) * self.scale.unsqueeze(-1) + self.zero.unsqueeze(-1)
        else:
            w = q * self.scale.unsqueeze(-1)
        return w.reshape(n, k)


def from_gguf_blocks(kind: str, raw: Any, rows: int, cols: int) -> QuantWeight:
    """Decode one GGUF tensor's bytes (`raw`: numpy uint8, rows x blocks*bytes) bit for bit."""
    import numpy as np
    import torch

    if kind not in BLOCK_BYTES:
        raise ValueError(f"unsupported GGUF block type {kind}")
    if cols % GROUP:
        raise ValueError(f"{cols} columns are not a whole number of {GROUP}-weight blocks")
    blocks = np.ascontiguousarray(raw).reshape(rows, cols // GROUP, BLOCK_BYTES[kind])
    d = blocks[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)
    if kind == Q8_0:
        q8 = blocks[..., 2:].copy().view(np.int8).reshape(rows, cols)
        return QuantWeight(8, torch.from_numpy(q8), torch.from_numpy(d))
    start = 2 if kind == Q4_0 else 4
    packed = blocks[..., start:]  # rows, blocks, 16
    codes = np.concatenate([packed & 0x0F, packed >> 4], axis=-1).reshape(rows, cols)
    if kind == Q4_0:
        zero = np.zeros_like(d)
    else:
        m = blocks[..., 2:4].copy().view(np.float16)[..., 0].astype(np.float32)
        zero = m + 8 * d
    return QuantWeight(
        4, torch.from_numpy(codes.copy()), torch.from_numpy(d), torch.from_numpy(zero)
    )


def quantize_int4(weight: Any) -> QuantWeight:
    """Asymmetric group-32 4-bit codes for a float `[N, K]` weight (min..max over 16 levels)."""
    import torch

    n, k = weight.shape
    if k % GROUP:
        raise ValueError(f"{k} columns are not a whole number of {GROUP}-weight groups")
    w = weight.detach().to(torch.float32).reshape(n, k // GROUP, GROUP)
    lo = w.amin(dim=-1)
    hi = w.amax(dim=-1)
    scale = ((hi - lo) / 15).clamp_min(1e-12)
    q = torch.round((w - lo.unsqueeze(-1)) / scale.unsqueeze(-1)).clamp_(0, 15)
    return QuantWeight(4, q.to(torch.uint8).reshape(n, k), scale, lo + 8 * scale)


def quantize_int8(weight: Any) -> QuantWeight:
    """Symmetric per-output-channel 8-bit codes for a float `[N, K]` weight."""
    import torch

    w = weight.detach().to(torch.float32)
    scale = (w.abs().amax(dim=1, keepdim=True) / 127).clamp_min(1e-12)
    q = torch.round(w / scale).clamp_(-127, 127).to(torch.int8)
    return QuantWeight(8, q, scale)


def per_channel_int8(weight: QuantWeight) -> QuantWeight:
    """An 8-bit weight with one scale per output channel, as `_weight_int8pack_mm` wants.

    GGUF Q8_0 has a scale per 32 weights; a per-channel re-quantisation of its exact values is
    the closest the kernel takes (not lossless: rows whose blocks differ in range lose bits).
    """
    if weight.bits == 8 and weight.scale.shape[1] == 1:
        return weight
    return quantize_int8(weight.dequantize())

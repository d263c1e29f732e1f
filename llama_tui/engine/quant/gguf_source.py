"""The quantised linear weights of a llama-architecture GGUF file, as `QuantWeight`s.

Read from a memory map of the file (`gguf_file`), one tensor at a time, bit for bit (see
`blocks`). Names are mapped to transformers' (`blk.3.attn_q` -> `model.layers.3.self_attn.q_proj`)
and the q / k rows are un-permuted the way transformers' own GGUF loader does for Llama
(llama.cpp's converter interleaves the rotary halves of each head). With that, dequantizing
these codes equals transformers' dequantized weights exactly (all 210 linear tensors of the
demo model), so the int4 model runs llama.cpp's weights, not a re-quantisation of them.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llama_tui.engine.quant.blocks import (
    BLOCK_BYTES,
    GROUP,
    Q4_0,
    Q4_1,
    QuantWeight,
    from_gguf_blocks,
)
from llama_tui.engine.quant.gguf_file import read_gguf

log = logging.getLogger(__name__)

ARCHITECTURES = ("llama",)  # where the names and the q/k permutation below hold
_LAYER_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
INT4_KINDS = (Q4_0, Q4_1)


@dataclass(frozen=True)
class GgufSummary:
    """What kind of quantised weights a GGUF holds (from its header, no tensor data read)."""

    architecture: str
    linear_kind: str | None  # the block type of most layer weights ("Q4_1"), None if mixed/other

    @property
    def int4(self) -> bool:
        return self.architecture in ARCHITECTURES and self.linear_kind in INT4_KINDS


def summarize(path: Path) -> GgufSummary | None:
    """The architecture and dominant layer block type of `path`, or None if unreadable."""
    try:
        gguf = read_gguf(path)
    except (OSError, ValueError) as exc:  # a damaged file fails later with a clear message
        log.info("could not read the GGUF header of %s: %r", path, exc)
        return None
    arch = str(gguf.fields.get("general.architecture") or "")
    kinds = Counter(t.kind for t in gguf.tensors if _hf_name(t.name, True) is not None)
    kind = kinds.most_common(1)[0][0] if kinds else None
    if kind is not None and kinds[kind] != sum(kinds.values()):
        kind = None  # mixed quantisations (Q4_K_M ...): not one of our direct layouts
    return GgufSummary(arch, kind)


def read_linear_weights(path: Path) -> dict[str, QuantWeight]:
    """Every Q4_0 / Q4_1 / Q8_0 linear weight of a llama GGUF, under transformers' names.

    `lm_head.weight` is the `output` tensor, or `token_embd` when the embeddings are tied.
    Tensors in other formats (F16, K-quants) are left out: the caller quantises those.
    """
    gguf = read_gguf(path)
    arch = str(gguf.fields.get("general.architecture") or "")
    if arch not in ARCHITECTURES:
        raise ValueError(f"GGUF architecture {arch!r} is not one of {ARCHITECTURES}")
    heads = int(gguf.fields[f"{arch}.attention.head_count"])
    kv_heads = int(gguf.fields.get(f"{arch}.attention.head_count_kv") or heads)
    has_output = any(t.name == "output.weight" for t in gguf.tensors)
    found: dict[str, QuantWeight] = {}
    for tensor in gguf.tensors:
        name = _hf_name(tensor.name, has_output)
        if name is None or tensor.kind not in BLOCK_BYTES or len(tensor.dims) != 2:
            continue
        cols, rows = tensor.dims  # GGUF lists the fastest dimension first
        nbytes = rows * (cols // GROUP) * BLOCK_BYTES[tensor.kind]
        raw = gguf.tensor_bytes(tensor, nbytes).reshape(rows, -1)
        if name.endswith("q_proj.weight"):
            raw = raw[_unpermute_order(rows, heads)]
        elif name.endswith("k_proj.weight"):
            raw = raw[_unpermute_order(rows, kv_heads)]
        found[name] = from_gguf_blocks(tensor.kind, raw, rows, cols)
    return found


def _hf_name(gguf_name: str, has_output: bool) -> str | None:
    """transformers' name of a linear weight (`blk.3.attn_q.weight`), None for the others."""
    parts = gguf_name.split(".")
    if len(parts) == 4 and parts[0] == "blk" and parts[2] in _LAYER_NAMES:
        return f"model.layers.{parts[1]}.{_LAYER_NAMES[parts[2]]}.weight"
    if gguf_name == "output.weight" or (gguf_name == "token_embd.weight" and not has_output):
        return "lm_head.weight"
    return None


def _unpermute_order(rows: int, heads: int) -> Any:
    """Row order undoing llama.cpp's rotary interleave (transformers' `_reverse_permute`)."""
    import numpy as np

    index = np.arange(rows).reshape(heads, rows // heads // 2, 2)
    return index.swapaxes(1, 2).reshape(rows)

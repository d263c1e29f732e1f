"""Swap a loaded model's `nn.Linear` layers for int4 / int8 ones, and back.

Where the weights come from:
- a Q4_0 / Q4_1 GGUF: its own codes and scales (`gguf_source`), so the layers run exactly
  llama.cpp's weights;
- anything else (a safetensors model with `--load-in-4bit` / `--load-in-8bit`, a GGUF layer in
  another format): the model's float weights, quantised here (`blocks.quantize_int4` /
  `quantize_int8`).

The output head is always int8 (per output channel): an int4 head was measured to cost too
much quality (teacher-forced top-1 agreement with float32 0.85 on the demo model) for its
speed. A layer whose input size is not a multiple of 32 stays as it is; one whose output size
is not a multiple of 16 is int8.

The model must already be in the activations' dtype (bfloat16: the kernels are only fast
there); the embedding, norms and attention stay in it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from llama_tui.engine.quant.blocks import GROUP, QuantWeight, quantize_int4, quantize_int8

log = logging.getLogger(__name__)

Bits = Literal[4, 8]
HEAD = "lm_head"
INT4_ROW_TILE = 16  # `_convert_weight_to_int4pack_for_cpu` packs output rows in 16s


@dataclass
class Swap:
    """The replaced layers of one model: `undo()` puts the originals back, `redo()` the new."""

    model: Any
    new: dict[str, Any]
    old: dict[str, Any]
    label: str  # "int4" | "int8": what the status bar shows as the model's dtype

    def undo(self) -> None:
        for name, module in self.old.items():
            _set_module(self.model, name, module)

    def redo(self) -> None:
        for name, module in self.new.items():
            _set_module(self.model, name, module)


def build_swap(model: Any, bits: Bits, gguf: Path | None = None) -> Swap:
    """Quantised replacements for every linear layer of `model` (not applied yet: `redo`).

    `gguf`: the file the model was converted from; its Q4_0 / Q4_1 / Q8_0 tensors are used
    as they are for the layers they match in shape (4-bit layers only when `bits` is 4), and
    the built layers are kept on disk for the next load (`packed_cache`).
    """
    import torch

    from llama_tui.engine.quant import packed_cache

    dtype = next(model.parameters()).dtype
    old = {
        name: module
        for name, module in model.named_modules()
        if type(module) is torch.nn.Linear and module.in_features % GROUP == 0
    }
    shapes = {name: (m.out_features, m.in_features) for name, m in old.items()}
    path = packed_cache.cache_path(gguf, bits, dtype) if gguf is not None else None
    new = packed_cache.load(path, shapes) if path is not None else None
    if new is None:
        new = _build(old, bits, gguf, dtype)
        if path is not None:
            packed_cache.save(path, new)
    return Swap(model, new, old, f"int{bits}")


def _build(old: dict[str, Any], bits: Bits, gguf: Path | None, dtype: Any) -> dict[str, Any]:
    from llama_tui.engine.quant.linear import int4_linear, int8_linear

    source: dict[str, QuantWeight] = {}
    if gguf is not None:
        from llama_tui.engine.quant.gguf_source import read_linear_weights

        source = read_linear_weights(gguf)
    new: dict[str, Any] = {}
    direct = 0
    for name, module in old.items():
        given = source.get(f"{name}.weight")
        if given is not None and given.shape != (module.out_features, module.in_features):
            given = None
        weight: QuantWeight
        # The int4 packer wants whole 16-row tiles; other layers (rare) take int8.
        int4_fits = module.out_features % INT4_ROW_TILE == 0
        if name == HEAD or name.endswith(f".{HEAD}") or bits == 8 or not int4_fits:
            weight = given if given is not None else quantize_int8(module.weight)
            new[name] = int8_linear(weight, module.bias, dtype)
        else:
            use = given if given is not None and given.bits == 4 else None
            weight = use if use is not None else quantize_int4(module.weight)
            new[name] = int4_linear(weight, module.bias, dtype)
        direct += given is not None
    log.info("int%d: %d linear layers (%d straight from the GGUF)", bits, len(new), direct)
    return new


def quantize_model(model: Any, bits: Bits, gguf: Path | None = None) -> Swap:
    """`build_swap` and apply it; returns the swap (for its label, or to undo it)."""
    swap = build_swap(model, bits, gguf)
    swap.redo()
    return swap


def quant_label(model: Any) -> str | None:
    """ "int4" / "int8" when `model` runs our quantised layers (int4 wins: the head is int8)."""
    from llama_tui.engine.quant.linear import module_classes

    int4_cls, int8_cls = module_classes()
    kinds = {type(m) for m in model.modules()}
    if int4_cls in kinds:
        return "int4"
    return "int8" if int8_cls in kinds else None


def _set_module(model: Any, dotted: str, module: Any) -> None:
    parent_name, _, child = dotted.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)

"""Which int4 / int8 CPU layout a load uses: `--load-in-4bit` / `--load-in-8bit` on the CPU,
or `dtype auto`'s measured pick `int4` for a Q4 GGUF (`loading.calibration`).

On the CPU these flags mean torch's own weight-only kernels (`engine.quant.linear`), not
bitsandbytes: the model loads in the activations' dtype (bfloat16, the only one the kernels are
fast in, unless `--dtype` names another), then its linear layers are swapped for quantised
ones, taken straight from the GGUF's Q4_0 / Q4_1 blocks when the model came from such a file.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llama_tui.core.backend import LoadOptions
from llama_tui.engine.quant.apply import Bits, quantize_model

INT4_PICK = "int4"  # the `dtype auto` pick that means this layout
ACTIVATIONS = "bfloat16"


@dataclass(frozen=True)
class CpuQuant:
    bits: Bits
    activations: str  # the dtype the model loads in and computes in
    gguf: Path | None  # the Q4 GGUF whose codes to use as they are

    def without_flags(self, options: LoadOptions) -> LoadOptions:
        """`options` with the bitsandbytes flags off (the CPU layout replaces them)."""
        return dataclasses.replace(options, load_in_4bit=False, load_in_8bit=False)

    def apply(self, model: Any) -> str:
        """Swap the model's linear layers; returns the dtype label ("int4" / "int8")."""
        return quantize_model(model, self.bits, self.gguf).label


def requested(
    options: LoadOptions, device: str, dtype_name: str, gguf: Path | None, q4_gguf: bool
) -> CpuQuant | None:
    """The CPU quantisation this load asks for, or None. `dtype_name` is the resolved dtype
    (`int4` when dtype auto picked it); `q4_gguf` says `gguf` has Q4_0 / Q4_1 layers."""
    if device != "cpu":
        return None
    explicit = (options.dtype or "auto").strip().lower() != "auto"
    activations = dtype_name if explicit and dtype_name != INT4_PICK else ACTIVATIONS
    source = gguf if q4_gguf else None
    if options.load_in_8bit:
        return CpuQuant(8, activations, None)
    if options.load_in_4bit or dtype_name == INT4_PICK:
        return CpuQuant(4, activations, source)
    return None

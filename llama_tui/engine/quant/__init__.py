"""4-bit and 8-bit weights on the CPU, run by torch's own weight-only kernels.

- `blocks`: the GGUF block formats (Q4_0, Q4_1, Q8_0) read bit for bit into codes and scales,
  and the same for dense weights quantised at load (`--load-in-4bit` / `--load-in-8bit`).
- `linear`: `Int4Linear` / `Int8Linear`, drop-in `nn.Linear` replacements over
  `aten._weight_int4pack_mm_for_cpu` and `aten._weight_int8pack_mm`.
- `apply`: swaps a loaded model's linear layers for them (from the GGUF, or quantising).

torch is imported inside functions only (module import stays cheap for the UI).
"""

"""A minimal GGUF reader: the metadata values we need and where each tensor's bytes are.

`gguf.GGUFReader` builds a numpy view for every metadata item, which for a 49k-token
vocabulary takes 5-7 s on a 2-core machine, on every load. The layout is simple (llama.cpp's
docs/gguf.md, versions 2 and 3), so this walks it with `struct` in about 0.1 s and maps the
tensor data with one `numpy.memmap`.

Layout: magic "GGUF", u32 version, u64 tensor count, u64 metadata count; metadata as
(string key, u32 type, value); tensor infos as (string name, u32 n_dims, u64 dims[n_dims],
u32 ggml type, u64 offset); then the data, aligned to `general.alignment` (default 32).
Strings are a u64 length and UTF-8 bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

# Metadata value types: struct format of the scalar ones; 8 = string, 9 = array.
_SCALARS = {
    0: "B",
    1: "b",
    2: "H",
    3: "h",
    4: "I",
    5: "i",
    6: "f",
    7: "?",
    10: "Q",
    11: "q",
    12: "d",
}
_STRING, _ARRAY = 8, 9
# ggml tensor types we name (others are only "type N").
GGML_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 8: "Q8_0", 30: "BF16"}


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dims: tuple[int, ...]  # fastest-varying first, as GGUF stores them
    kind: str  # "Q4_1", "F32", ... or "type N"
    offset: int  # from the start of the data section


@dataclass
class GgufFile:
    path: Path
    fields: dict[str, Any]  # scalar and string values; arrays are skipped (None)
    tensors: list[TensorInfo]
    data_start: int

    def tensor_bytes(self, info: TensorInfo, nbytes: int) -> Any:
        """The raw bytes of `info` as a read-only numpy uint8 memmap of `nbytes`."""
        import numpy as np

        start = self.data_start + info.offset
        return np.memmap(self.path, dtype=np.uint8, mode="r", offset=start, shape=(nbytes,))


def read_gguf(path: Path) -> GgufFile:
    """Parse `path`'s header; raises ValueError for something that is not GGUF v2/v3."""
    with path.open("rb") as fh:
        if fh.read(4) != b"GGUF":
            raise ValueError(f"{path.name} is not a GGUF file")
        (version,) = _unpack(fh, "I")
        if version not in (2, 3):
            raise ValueError(f"GGUF version {version} is not supported")
        n_tensors, n_kv = _unpack(fh, "QQ")
        fields: dict[str, Any] = {}
        for _ in range(n_kv):
            key = _string(fh)
            (kind,) = _unpack(fh, "I")
            fields[key] = _value(fh, kind)
        tensors = []
        for _ in range(n_tensors):
            name = _string(fh)
            (n_dims,) = _unpack(fh, "I")
            dims = _unpack(fh, "Q" * n_dims)
            kind, offset = _unpack(fh, "IQ")
            tensors.append(
                TensorInfo(name, tuple(dims), GGML_TYPES.get(kind, f"type {kind}"), offset)
            )
        align = int(fields.get("general.alignment") or 32)
        start = -(-fh.tell() // align) * align
    return GgufFile(path, fields, tensors, start)


def _unpack(fh: BinaryIO, fmt: str) -> tuple[Any, ...]:
    size = struct.calcsize("<" + fmt)
    data = fh.read(size)
    if len(data) != size:
        raise ValueError("the GGUF header is truncated")
    return struct.unpack("<" + fmt, data)


def _string(fh: BinaryIO) -> str:
    (n,) = _unpack(fh, "Q")
    if n > 1 << 30:
        raise ValueError("a GGUF string is implausibly long")
    return fh.read(n).decode("utf-8", errors="replace")


def _value(fh: BinaryIO, kind: int) -> Any:
    if kind in _SCALARS:
        return _unpack(fh, _SCALARS[kind])[0]
    if kind == _STRING:
        return _string(fh)
    if kind == _ARRAY:
        item, count = _unpack(fh, "IQ")
        if item in _SCALARS:  # fixed size: skip in one seek
            fh.seek(struct.calcsize("<" + _SCALARS[item]) * count, 1)
        elif item == _STRING:  # a vocabulary: skip each string by its length, undecoded
            for _ in range(count):
                fh.seek(_unpack(fh, "Q")[0], 1)
        else:
            for _ in range(count):
                _value(fh, item)
        return None
    raise ValueError(f"unknown GGUF metadata type {kind}")

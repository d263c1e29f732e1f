"""The int4 / int8 layers built from a GGUF, kept on disk so later loads skip the packing.

Building the demo model's layers (codes widened to int32 for torch's int4 packer, the packer
itself, the int8 head's re-quantisation) took 4-19 s on 2 busy cores, on every load; reading
the packed tensors back from a safetensors file is a memory map and a copy. The file is named by
the GGUF's path, size and mtime, the torch version (the packed layout is torch's own), the bits,
the activations' dtype and a format number, so a changed file or a torch upgrade packs again. A
missing, damaged or mismatched file is never an error: the layers are built and the file
rewritten.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from llama_tui import locations
from llama_tui.atomic import make_private_dirs

log = logging.getLogger(__name__)

FORMAT = 1
_META = "llama_tui_layers"


def cache_path(gguf: Path, bits: int, dtype: Any) -> Path:
    import torch

    path = gguf.resolve()
    st = path.stat()
    key = f"{path}|{st.st_size}|{st.st_mtime_ns}|{torch.__version__}|{bits}|{dtype}|v{FORMAT}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    # Beside the converted folders, not among them (each of those is one GGUF's folder).
    return locations.cache_dir() / "quantized" / f"{path.stem}-int{bits}-{digest}.safetensors"


def load(path: Path, wanted: dict[str, tuple[int, int]]) -> dict[str, Any] | None:
    """The layers stored in `path` (name -> module), or None unless they are exactly `wanted`
    (name -> (out_features, in_features))."""
    from safetensors import safe_open

    from llama_tui.engine.quant.linear import module_classes

    if not path.is_file():
        return None
    int4_cls, int8_cls = module_classes()
    try:
        with safe_open(str(path), framework="pt") as fh:
            layers = json.loads((fh.metadata() or {})[_META])
            keys = set(fh.keys())
            found: dict[str, Any] = {}
            for name, (kind, out_f, in_f) in layers.items():
                if wanted.get(name) != (out_f, in_f):
                    return None
                bias = fh.get_tensor(f"{name}:bias") if f"{name}:bias" in keys else None
                if kind == "int4":
                    packed, sz = fh.get_tensor(f"{name}:a"), fh.get_tensor(f"{name}:b")
                    found[name] = int4_cls(packed, sz, bias, in_f)
                else:
                    codes, scales = fh.get_tensor(f"{name}:a"), fh.get_tensor(f"{name}:b")
                    found[name] = int8_cls(codes, scales, bias)
    except Exception as exc:  # damaged or from another version: build again
        log.info("ignoring the packed layers in %s: %r", path, exc)
        return None
    return found if set(found) == set(wanted) else None


def save(path: Path, modules: dict[str, Any]) -> None:
    """Store `modules` in `path` (atomically); a failure is only logged."""
    from safetensors.torch import save_file

    tensors: dict[str, Any] = {}
    layers: dict[str, tuple[str, int, int]] = {}
    for name, module in modules.items():
        int4 = hasattr(module, "packed")
        a, b = (module.packed, module.scales_and_zeros) if int4 else (module.codes, module.scales)
        tensors[f"{name}:a"], tensors[f"{name}:b"] = a.contiguous(), b.contiguous()
        if module.bias is not None:
            tensors[f"{name}:bias"] = module.bias.detach().contiguous()
        layers[name] = ("int4" if int4 else "int8", module.out_features, module.in_features)
    tmp = None
    try:
        make_private_dirs(path.parent)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        os.close(fd)
        save_file(tensors, tmp, metadata={_META: json.dumps(layers)})
        os.replace(tmp, path)
        tmp = None
    except Exception as exc:
        log.warning("could not keep the packed layers in %s: %s", path, exc)
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)

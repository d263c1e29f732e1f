"""GGUF -> safetensors conversion, done once per file and cached.

A GGUF file (the bundled demo, or one the user points at) is dequantized with transformers'
own GGUF reader and saved as a safetensors folder under `locations.converted_models_dir()`,
named by a hash of the file's path, size and mtime so a replaced file is converted again.
The conversion is atomic (temp folder + rename). torch and transformers are imported inside
the functions that need them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from llama_tui import locations
from llama_tui.atomic import make_private_dirs
from llama_tui.core.backend import LoadStage, ProgressCallback
from llama_tui.core.errors import ModelError
from llama_tui.engine.loading.specs import emit_progress, user_text

# Bump when the conversion output changes, so old converted folders are not reused.
CONVERSION_VERSION = 1
# GGUF weights are dequantized (Q4_1 etc.) and saved in half precision: 260 MB instead of 517 MB
# for the demo model. float16 rather than bfloat16 because its 10-bit mantissa keeps the
# dequantized values closer: measured on the demo model loaded back as float32, max logit
# difference vs an fp32 save 0.04 (fp16) against 0.28 (bf16), same greedy tokens both; loaded
# as bf16 both give the same quality. A GGUF whose weights overflow fp16 is saved in bf16.
CONVERSION_DTYPE = "float16"
_CONVERSION_FALLBACK_DTYPE = "bfloat16"
_CONVERSION_MARKER = "llama_tui_conversion.json"


def converted_dir_for(gguf: Path) -> Path:
    """Where the converted copy of `gguf` lives: `<stem>-<hash of path, size, mtime>`.

    The hash changes when the file is replaced, so a stale conversion is never used.
    """
    path = gguf.resolve()
    st = path.stat()
    key = f"{path}|{st.st_size}|{st.st_mtime_ns}|v{CONVERSION_VERSION}|{CONVERSION_DTYPE}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return locations.converted_models_dir() / f"{path.stem}-{digest}"


def _is_converted(folder: Path) -> bool:
    return (folder / _CONVERSION_MARKER).is_file() and (folder / "config.json").is_file()


def _remove_stale_temps(parent: Path, max_age_s: float = 24 * 3600) -> None:
    """Delete temp folders left by a conversion that was killed (they are never used)."""
    now = time.time()
    for child in parent.glob(".*.tmp-*"):
        with contextlib.suppress(OSError):
            if now - child.stat().st_mtime > max_age_s:
                shutil.rmtree(child, ignore_errors=True)


class _Overflow(Exception):
    """A dequantized weight does not fit the conversion dtype."""


def _convert_gguf_into(
    gguf: Path, out: Path, progress: ProgressCallback | None, dtype_name: str = CONVERSION_DTYPE
) -> None:
    """Dequantize `gguf` and save it (model + tokenizer) as a safetensors folder in `out`.

    We build the model from the GGUF config and fill it with transformers' own GGUF reader
    (`load_gguf_checkpoint`, what `from_pretrained(gguf_file=)` uses for Llama in 5.24) rather
    than `from_pretrained(gguf_file=)` itself: that refuses to run without `accelerate`, which
    is not a core dependency. The result is the same dense model, without the quantization
    config that makes `save_pretrained` refuse a GGUF-loaded model ("The model is quantized
    with gguf and is not serializable"). Loading the saved folder takes ~1.4 s against ~15 s
    for the GGUF, which is why we convert once.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.initialization import no_init_weights
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    dtype = getattr(torch, dtype_name)
    folder, name = str(gguf.parent), gguf.name
    emit_progress(progress, LoadStage.CONVERT, f"Reading the tokenizer from {name}", 0.05)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name, trust_remote_code=False)
    emit_progress(progress, LoadStage.CONVERT, f"Reading the model config from {name}", 0.2)
    config = AutoConfig.from_pretrained(folder, gguf_file=name, trust_remote_code=False)
    with no_init_weights():  # random init of 135M+ weights we overwrite anyway costs seconds
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, trust_remote_code=False)
    emit_progress(progress, LoadStage.CONVERT, f"Dequantizing the weights of {name}", 0.35)
    tensors = load_gguf_checkpoint(
        str(gguf), return_tensors=True, model_to_load=model, torch_dtype=dtype
    )["tensors"]
    result = model.load_state_dict(tensors, strict=False)
    del tensors
    _check_weights(model, config, result, name)
    model.tie_weights()
    if dtype_name == "float16":
        for param in model.parameters():
            if not bool(torch.isfinite(param).all()):
                raise _Overflow(dtype_name)
    emit_progress(progress, LoadStage.CONVERT, f"Saving {name} as safetensors", 0.85)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    _write_marker(gguf, out, dtype_name)


def _check_weights(model: Any, config: Any, result: Any, name: str) -> None:
    """Refuse a conversion whose GGUF weights do not fill the model built from its config."""
    # Tied weights (lm_head = embed_tokens) are absent from the file by design.
    tied = set(getattr(model, "_tied_weights_keys", None) or ())  # a list in 4.x, a dict in 5.x
    missing = [k for k in result.missing_keys if k not in tied]
    if config.tie_word_embeddings:
        missing = [k for k in missing if k != "lm_head.weight"]
    if missing or result.unexpected_keys:
        raise ModelError(
            f"Could not convert {user_text(name)}: the GGUF weights do not match the model "
            f"(missing {missing[:3]}, unexpected {result.unexpected_keys[:3]}).",
            "This GGUF architecture may not be supported by transformers; try the original "
            "safetensors model from the Hub instead.",
        )


def _write_marker(gguf: Path, out: Path, dtype_name: str) -> None:
    """What the folder was converted from, so a changed GGUF or a new version converts again."""
    st = gguf.stat()
    marker = {
        "source": str(gguf.resolve()),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "dtype": dtype_name,
        "version": CONVERSION_VERSION,
    }
    (out / _CONVERSION_MARKER).write_text(json.dumps(marker, indent=2), encoding="utf-8")


def ensure_converted(gguf: Path, progress: ProgressCallback | None = None) -> Path:
    """Return a safetensors folder for `gguf`, converting it once (about 15 s for the demo).

    Atomic: the conversion is written to a temp folder next to the target and renamed into
    place, so a killed conversion leaves only a temp folder that is never used. Two processes
    converting at once both succeed; the second rename fails and its copy is discarded.
    """
    target = converted_dir_for(gguf)
    if _is_converted(target):
        return target
    parent = make_private_dirs(target.parent, chmod_existing=True)
    _remove_stale_temps(parent)
    if target.exists():  # a folder without our marker: not ours or damaged; replace it
        shutil.rmtree(target, ignore_errors=True)
    emit_progress(progress, LoadStage.CONVERT, f"Converting {gguf.name} to safetensors (once)", 0.0)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=parent))
    try:
        try:
            _convert_gguf_into(gguf, tmp, progress)
        except _Overflow:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(mode=0o700)
            _convert_gguf_into(gguf, tmp, progress, _CONVERSION_FALLBACK_DTYPE)
        try:
            os.replace(tmp, target)
        except OSError:
            if not _is_converted(target):  # lost a race to a half-made folder: cannot happen
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    emit_progress(progress, LoadStage.CONVERT, f"Converted {gguf.name}", 1.0)
    return target

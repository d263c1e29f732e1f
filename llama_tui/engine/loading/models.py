"""Loading a model spec (bundled demo, Hub repo id, local folder, GGUF file) with transformers.

A spec is what the user typed after `--model`. `load_model` parses it (`specs.parse_spec`, no
network or torch), resolves it to a local folder of safetensors weights (`hub`: cache first,
then a download with progress; `conversion`: a one-time GGUF conversion), checks it
(`checks`) and loads it with transformers straight onto the chosen device.

Every failure becomes a `ModelError` subclass whose message names the cause and the fix
(`load_errors.classify_load_error`). Rules that keep secrets and users safe:

- Token-shaped specs (`hf_...`) are refused before anything else and never echoed.
- We never read or pass the Hugging Face token: huggingface_hub finds it itself.
- `trust_remote_code` is passed explicitly to every `from_pretrained` (transformers would
  otherwise prompt on stdin, which hangs a TUI) and custom code is refused unless opted in.
- safetensors only, unless the user opts in to pickle weights.

This module is also the public face of those modules: the names other code uses
(`parse_spec`, `ensure_converted`, `classify_load_error`, ...) are re-exported here.
`_resolve` looks `_resolve_hub` up on this module, so tests replace it here.

Importing this module never imports torch or transformers (together ~1.3 s, which would
delay the first paint): they are imported inside the functions that need them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llama_tui.core.backend import LoadOptions, LoadStage, ModelInfo, ProgressCallback
from llama_tui.core.errors import ModelError
from llama_tui.engine import device as devices
from llama_tui.engine.loading.checks import (
    DEVICE_MAPS,
    _device_map,
    _weights_kind,
    check_config,
    check_folder,
    check_options,
    have_accelerate,
    quant_method,
)
from llama_tui.engine.loading.conversion import (
    CONVERSION_DTYPE,
    CONVERSION_VERSION,
    converted_dir_for,
    ensure_converted,
)
from llama_tui.engine.loading.errors import (
    QUANT_PACKAGES,
    classify_load_error,
    classify_quantized_load_error,
)
from llama_tui.engine.loading.hub import _resolve_hub, cached_model_ids, hub_cache_dir, hub_offline
from llama_tui.engine.loading.specs import (
    DEMO_NAME,
    TOKEN_RE,
    ModelSpec,
    SpecKind,
    _emit,
    _shown,
    demo_gguf_path,
    parse_spec,
    redact,
)

# What this module offers: its own loading API and the names it re-exports from the modules
# it was split into, so `models.parse_spec` and friends keep working for callers and tests.
__all__ = [
    "CONVERSION_DTYPE",
    "CONVERSION_VERSION",
    "DEMO_NAME",
    "DEVICE_MAPS",
    "GENERATION_FIELDS",
    "QUANT_PACKAGES",
    "TOKEN_RE",
    "LoadedModel",
    "ModelSpec",
    "SpecKind",
    "cached_model_ids",
    "check_config",
    "check_folder",
    "check_options",
    "classify_load_error",
    "classify_quantized_load_error",
    "converted_dir_for",
    "demo_gguf_path",
    "ensure_converted",
    "generation_defaults",
    "hub_cache_dir",
    "hub_offline",
    "load_model",
    "parse_spec",
    "quant_method",
    "redact",
]

log = logging.getLogger(__name__)

# generation_config.json fields the chat UI uses as the model's own defaults.
GENERATION_FIELDS = (
    "do_sample",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "repetition_penalty",
    "max_new_tokens",
)


@dataclass
class LoadedModel:
    """A loaded model with its tokenizer and what the UI needs to know about it."""

    model: Any
    tokenizer: Any
    info: ModelInfo
    generation_defaults: dict[str, Any] = field(default_factory=dict)
    folder: Path | None = None  # the local folder the weights came from
    device: str = "cpu"  # torch device of the inputs: where the input embedding executes


def _resolve(
    ms: ModelSpec, options: LoadOptions, progress: ProgressCallback | None
) -> tuple[Path, str | None, str]:
    """(local folder, revision, display name) for any spec kind."""
    if ms.kind == "demo":
        folder = ensure_converted(demo_gguf_path(), progress)
        return folder, None, DEMO_NAME
    if ms.kind == "gguf":
        assert ms.path is not None
        return ensure_converted(ms.path, progress), None, ms.display_name
    if ms.kind == "local":
        assert ms.path is not None
        return ms.path, None, ms.display_name
    folder, commit = _resolve_hub(ms, options, progress)
    return folder, commit, ms.display_name


def _quantization_config(options: LoadOptions, dtype: Any) -> Any:
    """bitsandbytes settings for --load-in-4bit / --load-in-8bit (after `check_options`).

    4-bit: NF4 with double quantisation (the QLoRA recipe: about 0.53 bytes per weight),
    computing in the load dtype (bf16 on Ampere and newer GPUs, fp16 before).
    """
    if not (options.load_in_4bit or options.load_in_8bit):
        return None
    from transformers import BitsAndBytesConfig

    if options.load_in_4bit:
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=dtype,
            bnb_4bit_use_double_quant=True,
        )
    return BitsAndBytesConfig(load_in_8bit=True)


def _context_length(model: Any, tokenizer: Any) -> int:
    config = getattr(model, "config", None)
    text_config = getattr(config, "text_config", None) or config
    n = None
    for attr in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(text_config, attr, None)
        if isinstance(value, int) and value > 0:
            n = value
            break
    tok_max = getattr(tokenizer, "model_max_length", None)
    # Tokenizers without a limit report int(1e30); only a sane value caps the context.
    if isinstance(tok_max, int) and 0 < tok_max < 10_000_000:
        n = min(n, tok_max) if n else tok_max
    return n or 2048


def generation_defaults(model: Any) -> dict[str, Any]:
    """The sampling fields the model's generation_config.json sets (not transformers' defaults)."""
    gc = getattr(model, "generation_config", None)
    if gc is None:
        return {}
    try:
        diff = gc.to_diff_dict()
    except Exception:
        return {}
    return {k: diff[k] for k in GENERATION_FIELDS if diff.get(k) is not None}


def load_model(
    spec: str, options: LoadOptions | None = None, progress: ProgressCallback | None = None
) -> LoadedModel:
    """Resolve `spec` and load it (tokenizer + model) onto the chosen device and dtype.

    Emits LoadStage.RESOLVE, DOWNLOAD (uncached hub weights), CONVERT (GGUF, once) and LOAD;
    the backend emits WARMUP / READY. Raises a `ModelError` subclass with cause and fix on
    any failure (see `classify_load_error`).
    """
    options = options or LoadOptions()
    ms = parse_spec(spec)  # raises before anything else for token-shaped specs
    try:
        return _load(ms, options, progress)
    except ModelError:
        raise
    except Exception as exc:
        err = classify_load_error(exc, ms.raw)
        log.info("loading %s failed: %s", _shown(ms.raw), redact(repr(exc))[:500])
        raise err from exc


def _load(ms: ModelSpec, options: LoadOptions, progress: ProgressCallback | None) -> LoadedModel:
    caps = devices.probe_caps()
    device = devices.choose_device(options.device, caps)
    dtype_name = devices.dtype_name(device, options.dtype, caps)
    device_map = _device_map(options)
    check_options(options, device)  # before any download or conversion
    # Threads first: a GGUF conversion runs torch too.
    devices.set_threads(options.threads)
    folder, revision, name = _resolve(ms, options, progress)
    config = check_folder(folder, ms.raw, options)
    prequantized = quant_method(config)

    if device_map is not None:
        where = f"device_map={device_map}" + (
            f" over {caps.cuda_count} GPUs" if caps.cuda_count > 1 else f" ({device})"
        )
    else:
        where = device
    _emit(progress, LoadStage.LOAD, f"Loading {name} with {where} ({dtype_name})")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = getattr(torch, dtype_name)
    kwargs: dict[str, Any] = {
        "trust_remote_code": options.trust_remote_code,
        "local_files_only": True,  # the folder is local now; never let transformers go online
        "dtype": dtype,
    }
    if _weights_kind(folder) == "safetensors":
        kwargs["use_safetensors"] = True  # never fall back to a pickle file in the same folder
    if prequantized is not None and (options.load_in_4bit or options.load_in_8bit):
        # The checkpoint's own quantization_config wins (transformers would override ours
        # anyway, with a warning nobody sees in a TUI); say so instead.
        flag = "--load-in-4bit" if options.load_in_4bit else "--load-in-8bit"
        _emit(
            progress,
            LoadStage.LOAD,
            f"{name} is already quantised ({_shown(prequantized, 40)}); {flag} is ignored",
        )
    else:
        quant = _quantization_config(options, dtype)
        if quant is not None:
            kwargs["quantization_config"] = quant
    # Straight onto the device (no full CPU copy of the weights on the way to the GPU), or
    # accelerate's placement over every visible GPU, then CPU RAM, then disk. transformers
    # refuses any device_map without accelerate (a core dependency, but a hand-made install
    # may lack it): then load on the CPU and move the model, which still works.
    move_to: str | None = None
    if device_map is not None or have_accelerate():
        kwargs["device_map"] = device_map if device_map is not None else device
    elif device != "cpu":
        move_to = device
    tokenizer = AutoTokenizer.from_pretrained(
        folder, trust_remote_code=options.trust_remote_code, local_files_only=True
    )
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
    except Exception as exc:
        if prequantized is not None:
            err = classify_quantized_load_error(exc, ms.raw, prequantized)
            if err is not None:
                raise err from exc
        raise
    if move_to is not None:
        model.to(move_to)
    model.eval()

    # hf_device_map is only set when accelerate dispatched the model (not for a single
    # device); a map over a single device is no placement worth showing.
    placement = devices.normalize_placement(getattr(model, "hf_device_map", None))
    if len(set(placement.values())) <= 1:
        placement = {}
    input_device = devices.input_device(model, placement, str(getattr(model, "device", device)))
    label = devices.device_label(device, placement or None, caps)
    warning = devices.offload_warning(name, placement)
    if warning is not None:
        log.warning("%s", warning)
        _emit(progress, LoadStage.LOAD, warning)
    source = str(ms.path) if ms.kind == "gguf" else str(folder)
    info = ModelInfo(
        name=name,
        spec=ms.raw,
        source=source,
        revision=revision,
        device=label,
        dtype=str(getattr(model, "dtype", dtype)).removeprefix("torch."),
        parameters=int(sum(p.numel() for p in model.parameters())),
        context_length=_context_length(model, tokenizer),
        chat_template=getattr(tokenizer, "chat_template", None) is not None,
        backend="local",
        placement=placement,
    )
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        info=info,
        generation_defaults=generation_defaults(model),
        folder=folder,
        device=input_device,
    )

"""Loading a model spec (bundled demo, Hub repo id, local folder, GGUF file) with transformers.

A spec is what the user typed after `--model`. `load_model` parses it (`specs.parse_spec`, no
network or torch), resolves it to a local folder of safetensors weights (`hub`: cache first,
then a download with progress; `conversion`: a one-time GGUF conversion), checks it
(`checks`) and loads it with transformers straight onto the chosen device.

Every failure becomes a `ModelError` subclass whose message names the cause and the fix
(`errors.classify_load_error`). Rules that keep secrets and users safe:

- Token-shaped specs (`hf_...`) are refused before anything else and never echoed.
- We never read or pass the Hugging Face token: huggingface_hub finds it itself.
- `trust_remote_code` is passed explicitly to every `from_pretrained` (transformers would
  otherwise prompt on stdin, which hangs a TUI) and custom code is refused unless opted in.
- safetensors only, unless the user opts in to pickle weights.

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
from llama_tui.core.params import MODEL_DEFAULT_FIELDS
from llama_tui.engine import device as devices
from llama_tui.engine import placement as placements
from llama_tui.engine.fast import cpu_attention
from llama_tui.engine.loading import calibration, hub
from llama_tui.engine.loading.checks import (
    check_folder,
    check_options,
    have_accelerate,
    quant_method,
    requested_device_map,
    weights_kind,
)
from llama_tui.engine.loading.conversion import ensure_converted
from llama_tui.engine.loading.errors import classify_load_error, classify_quantized_load_error
from llama_tui.engine.loading.specs import (
    DEMO_NAME,
    ModelSpec,
    demo_gguf_path,
    emit_progress,
    parse_spec,
    user_text,
)
from llama_tui.engine.quant import cpu_load
from llama_tui.text import redact

log = logging.getLogger(__name__)


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
    folder, commit = hub.resolve_hub(ms, options, progress)
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
    return {k: diff[k] for k in MODEL_DEFAULT_FIELDS if diff.get(k) is not None}


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
        log.info("loading %s failed: %s", user_text(ms.raw), redact(repr(exc))[:500])
        raise err from exc


def _load(ms: ModelSpec, options: LoadOptions, progress: ProgressCallback | None) -> LoadedModel:
    caps = devices.probe_caps()
    device = devices.choose_device(options.device, caps)
    dtype_name = devices.dtype_name(device, options.dtype, caps)
    device_map = requested_device_map(options)
    check_options(options, device)  # before any download or conversion
    # Threads first: a GGUF conversion runs torch too.
    devices.set_threads(options.threads)
    folder, revision, name = _resolve(ms, options, progress)
    config = check_folder(folder, ms.raw, options)
    prequantized = quant_method(config)
    gguf = _gguf_file(ms)
    plan = calibration.plan_auto(
        device=device,
        requested=options.dtype,
        rule=dtype_name,
        folder=folder,
        config=config,
        quantized=prequantized is not None or options.load_in_4bit or options.load_in_8bit,
        device_map=device_map,
        gguf=gguf,
    )
    if not plan.measure:
        log.info("dtype %s, not measured: %s", plan.load_dtype, plan.reason)
    dtype_name = plan.load_dtype
    # int4 / int8 on the CPU: torch's kernels, loaded in bf16 then swapped (engine.quant).
    cpu_quant = None
    if prequantized is None:
        q4 = plan.int4_gguf is not None or (gguf is not None and calibration.int4_source(gguf))
        cpu_quant = cpu_load.requested(options, device, dtype_name, gguf, q4)
    if cpu_quant is not None:
        dtype_name = cpu_quant.activations
        options = cpu_quant.without_flags(options)
    if device_map is not None:
        gpus = f" over {caps.cuda_count} GPUs" if caps.cuda_count > 1 else f" ({device})"
        where = f"device_map={device_map}{gpus}"
    else:
        where = device
    shown = f"{dtype_name}, to measure the fastest dtype" if plan.measure else dtype_name
    emit_progress(progress, LoadStage.LOAD, f"Loading {name} with {where} ({shown})")
    import torch
    from transformers import AutoTokenizer

    dtype = getattr(torch, dtype_name)
    kwargs = _pretrained_kwargs(options, folder, dtype, prequantized, name, progress)
    move_to = _placement_kwargs(kwargs, device_map, device)
    tokenizer = AutoTokenizer.from_pretrained(
        folder, trust_remote_code=options.trust_remote_code, local_files_only=True
    )
    model = _from_pretrained(folder, kwargs, ms.raw, prequantized)
    if move_to is not None:
        model.to(move_to)
    model.eval()
    if device == "cpu" and device_map is None:
        cpu_attention.install(model)  # one-token attention folded: ~2 ms/token on the demo
    # Counted before any int4 / int8 swap: packed layers hold no parameters.
    parameters = int(sum(p.numel() for p in model.parameters()))
    dtype_label = None
    if cpu_quant is not None:
        dtype_label = cpu_quant.apply(model)
    if plan.measure and calibration.calibrate(model, tokenizer, plan, progress) == "int4":
        dtype_label = "int4"
    # hf_device_map is only set when accelerate dispatched the model (not for one device);
    # a map over a single device is no placement worth showing.
    placement = placements.normalize_placement(getattr(model, "hf_device_map", None))
    if len(set(placement.values())) <= 1:
        placement = {}
    warning = placements.offload_warning(name, placement)
    if warning is not None:
        log.warning("%s", warning)
        emit_progress(progress, LoadStage.LOAD, warning)
    info = ModelInfo(
        name=name,
        spec=ms.raw,
        source=str(ms.path) if ms.kind == "gguf" else str(folder),
        revision=revision,
        device=placements.device_label(device, placement or None, caps),
        dtype=dtype_label or str(getattr(model, "dtype", dtype)).removeprefix("torch."),
        parameters=parameters,
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
        device=placements.input_device(model, placement, str(getattr(model, "device", device))),
    )


def _gguf_file(ms: ModelSpec) -> Path | None:
    """The GGUF a demo / GGUF spec's folder was converted from (its Q4 codes load as int4)."""
    if ms.kind == "demo":
        return demo_gguf_path()
    return ms.path if ms.kind == "gguf" else None


def _pretrained_kwargs(
    options: LoadOptions,
    folder: Path,
    dtype: Any,
    prequantized: str | None,
    name: str,
    progress: ProgressCallback | None,
) -> dict[str, Any]:
    """`from_pretrained` arguments for the weights and the quantisation (not the placement)."""
    kwargs: dict[str, Any] = {
        "trust_remote_code": options.trust_remote_code,
        "local_files_only": True,  # the folder is local now; never let transformers go online
        "dtype": dtype,
    }
    if weights_kind(folder) == "safetensors":
        kwargs["use_safetensors"] = True  # never fall back to a pickle file in the same folder
    if prequantized is not None and (options.load_in_4bit or options.load_in_8bit):
        # The checkpoint's own quantization_config wins (transformers would override ours
        # anyway, with a warning nobody sees in a TUI); say so instead.
        flag = "--load-in-4bit" if options.load_in_4bit else "--load-in-8bit"
        emit_progress(
            progress,
            LoadStage.LOAD,
            f"{name} is already quantised ({user_text(prequantized, 40)}); {flag} is ignored",
        )
    else:
        quant = _quantization_config(options, dtype)
        if quant is not None:
            kwargs["quantization_config"] = quant
    return kwargs


def _placement_kwargs(kwargs: dict[str, Any], device_map: str | None, device: str) -> str | None:
    """Put the placement into `kwargs`; return the device to move the model to afterwards.

    Straight onto the device (no full CPU copy of the weights on the way to the GPU), or
    accelerate's placement over every visible GPU, then CPU RAM, then disk. transformers
    refuses any device_map without accelerate (a core dependency, but a hand-made install may
    lack it): then load on the CPU and move the model, which still works.
    """
    if device_map is not None or have_accelerate():
        kwargs["device_map"] = device_map if device_map is not None else device
        return None
    return device if device != "cpu" else None


def _from_pretrained(
    folder: Path, kwargs: dict[str, Any], spec_text: str, prequantized: str | None
) -> Any:
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(folder, **kwargs)
    except Exception as exc:
        if prequantized is not None:
            err = classify_quantized_load_error(exc, spec_text, prequantized)
            if err is not None:
                raise err from exc
        raise

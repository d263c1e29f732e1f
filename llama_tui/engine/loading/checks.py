"""Checks before loading: refuse what we will not load, before anything is downloaded.

- safetensors only, unless the user opts in to pickle weights (`check_folder`);
- custom code from a repository is refused unless opted in (`check_config`);
- option combinations that cannot work on this machine (`check_options`: 4/8-bit without a
  CUDA GPU or bitsandbytes, a device map without accelerate, ...).

Also what a local folder holds (`weights_kind`, `_missing_files`) and the quantisation method
of a pre-quantised checkpoint (`quant_method`). No network; transformers only for its table of
known model types.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any, Literal

from llama_tui.core.backend import DEVICE_MAPS, LoadOptions
from llama_tui.core.errors import (
    DependencyMissingError,
    InvalidModelSpecError,
    ModelError,
    RemoteCodeRequiredError,
    UnsafeWeightsError,
)
from llama_tui.engine.loading.specs import user_text

# accelerate is a core dependency, so missing means a broken environment, not a missing extra.
ACCELERATE_FIX = (
    "accelerate is one of llama-tui's dependencies; reinstall it with "
    "`pip install 'accelerate>=1.15'`"
)


def have_accelerate() -> bool:
    """Whether accelerate is importable (transformers needs it for any `device_map`)."""
    return importlib.util.find_spec("accelerate") is not None


def weights_kind(folder: Path) -> Literal["safetensors", "pickle", None]:
    names = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
    if any(n.endswith(".safetensors") for n in names) or "model.safetensors.index.json" in names:
        return "safetensors"
    if any(n.endswith((".bin", ".pt", ".pth")) for n in names if n != "training_args.bin"):
        return "pickle"
    return None


def _missing_files(folder: Path) -> list[str]:
    """Files a load needs that are not in `folder` (config, tokenizer, every weight shard)."""
    missing: list[str] = []
    if not (folder / "config.json").is_file():
        missing.append("config.json")
    if not any(
        (folder / n).is_file()
        for n in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "vocab.json")
    ):
        missing.append("tokenizer files")
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = folder / index_name
        if index.is_file():
            try:
                shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
            except (OSError, ValueError, KeyError, TypeError, RecursionError):
                return [*missing, index_name + " (unreadable)"]
            missing += sorted(s for s in shards if not (folder / s).is_file())
            return missing
    if weights_kind(folder) is None:
        missing.append("weights (*.safetensors)")
    return missing


def _pickle_error(spec_text: str) -> UnsafeWeightsError:
    return UnsafeWeightsError(
        f"{user_text(spec_text)} has only pickle weights (.bin / .pt), which can run code when "
        "loaded; safetensors are preferred.",
        "Opt in with --allow-pickle if you trust the source, or use a safetensors version.",
    )


def remote_code_error(spec_text: str, detail: str = "") -> RemoteCodeRequiredError:
    return RemoteCodeRequiredError(
        f"{user_text(spec_text)} needs custom Python code from its repository to run"
        + (f" ({detail})" if detail else "")
        + ".",
        "Read that code, then opt in with --trust-remote-code if you trust it.",
    )


def check_folder(folder: Path, spec_text: str, options: LoadOptions) -> dict[str, Any]:
    """Refuse what we will not load: no config, pickle-only weights, custom code not opted in.

    Returns the parsed config.json. A `quantization_config` (GPTQ, AWQ, compressed-tensors,
    bitsandbytes, ...) is not a reason to refuse: transformers loads those itself.
    """
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise InvalidModelSpecError(
            f"{user_text(spec_text)} is not a transformers model folder (no config.json).",
            "Give the folder that holds config.json and the weights, or a .gguf file.",
        )
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise ModelError(
            f"{user_text(spec_text)}: config.json is unreadable ({type(exc).__name__}).",
            "Re-download the model or fix the file.",
        ) from None
    if not isinstance(config, dict):
        raise ModelError(
            f"{user_text(spec_text)}: config.json is not a JSON object.", "Re-download the model."
        )
    kind = weights_kind(folder)
    if kind == "pickle" and not options.allow_pickle:
        raise _pickle_error(spec_text)
    if kind is None:
        raise ModelError(
            f"{user_text(spec_text)} has no weights (*.safetensors) in {user_text(str(folder))}.",
            "Check the folder, or re-download the model.",
        )
    check_config(config, spec_text, options)
    return config


def check_config(config: dict[str, Any], spec_text: str, options: LoadOptions) -> None:
    """Refuse a config that needs custom code (unless opted in) or an unknown architecture.

    With `auto_map` and a model type transformers knows, transformers uses its own code when
    trust_remote_code is False, so only an unknown type needs the repository's code.
    """
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    model_type = config.get("model_type")
    known = isinstance(model_type, str) and model_type in CONFIG_MAPPING
    if not known and not options.trust_remote_code:
        if config.get("auto_map"):
            raise remote_code_error(spec_text, f"model type {model_type!r} with auto_map")
        raise ModelError(
            f"{user_text(spec_text)} has model type {user_text(str(model_type))!r}, which this "
            "version of transformers does not know.",
            "Upgrade transformers (`pip install -U transformers`), or use another model.",
        )


def requested_device_map(options: LoadOptions) -> str | None:
    value = (options.device_map or "").strip().lower()
    return None if value in ("", "none") else value


def check_options(options: LoadOptions, device: str) -> None:
    """Refuse option combinations that cannot work, before anything is downloaded.

    `device` is the resolved device (`choose_device`). 4-bit / 8-bit loading is bitsandbytes
    on NVIDIA GPUs, and torch's own int4 / int8 weight-only kernels on the CPU (`engine.quant`,
    no extra package); other devices (MPS) are refused.
    """
    device_map = requested_device_map(options)
    if (options.dtype or "").strip().lower() == "int4" and device != "cpu":
        raise ModelError(
            f"--dtype int4 runs on the CPU only (torch's int4 kernel); the device is {device}.",
            "Use --load-in-4bit on an NVIDIA GPU, or add --device cpu.",
        )
    if options.load_in_4bit and options.load_in_8bit:
        raise ModelError(
            "Both 4-bit and 8-bit loading were requested.",
            "Choose one of --load-in-4bit and --load-in-8bit.",
        )
    if device_map is not None:
        if device_map not in DEVICE_MAPS:
            raise ModelError(
                f"Unknown device map {user_text(options.device_map or '')!r}.",
                "Use --device-map " + ", ".join(DEVICE_MAPS) + " (auto spreads over all GPUs).",
            )
        if not have_accelerate():
            raise DependencyMissingError(
                f"--device-map {device_map} (spreading a model over GPUs) needs the accelerate "
                "package, which is not installed.",
                f"{ACCELERATE_FIX}, or drop --device-map.",
            )
        requested = (options.device or "auto").strip().lower()
        if requested not in ("auto", "cuda"):
            raise ModelError(
                f"--device-map {device_map} places the model over every visible GPU itself; "
                f"it cannot be combined with --device {user_text(options.device)}.",
                "Drop --device (or use --device auto), and pick GPUs with "
                "CUDA_VISIBLE_DEVICES=0,1,...; or drop --device-map.",
            )
    if options.load_in_4bit or options.load_in_8bit:
        bits = "4" if options.load_in_4bit else "8"
        if device == "cpu":
            return  # torch's kernels (engine.quant.cpu_load), nothing to install
        if not device.startswith("cuda"):
            raise DependencyMissingError(
                f"{bits}-bit loading works on an NVIDIA GPU (bitsandbytes) or the CPU (torch's "
                f"own kernels); the device here is {device}.",
                f"Drop --load-in-{bits}bit, or add --device cpu.",
            )
        for package in ("bitsandbytes", "accelerate"):
            if importlib.util.find_spec(package) is None:
                raise DependencyMissingError(
                    f"{bits}-bit loading needs the {package} package, which is not installed.",
                    f"Install it with `pip install 'llama-tui[quant]'`, or drop "
                    f"--load-in-{bits}bit.",
                )


def quant_method(config: dict[str, Any]) -> str | None:
    """The `quant_method` of a pre-quantised checkpoint's config.json (GPTQ, AWQ, ...), or None."""
    q = config.get("quantization_config")
    if not isinstance(q, dict):
        text_config = config.get("text_config")
        q = text_config.get("quantization_config") if isinstance(text_config, dict) else None
    if not isinstance(q, dict):
        return None
    method = q.get("quant_method")
    if isinstance(method, str) and method:
        return method.strip().lower()
    return "bitsandbytes" if q.get("load_in_4bit") or q.get("load_in_8bit") else "unknown"

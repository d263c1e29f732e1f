"""Where accelerate put a model's modules (a device map), and what that means for the user.

The map as device strings, the modules offloaded to the CPU or disk (and the warning that
replies will be slow), the device the input ids go to, and the short device label for the
status bar. Plain Python over the map; torch only to name a GPU.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llama_tui.engine.device import DeviceCaps

# Where accelerate keeps weights that did not fit the accelerators: the module still runs on the
# main GPU, but its weights are copied over PCIe (or read from disk) on every forward pass.
OFFLOAD_DEVICES = ("cpu", "disk")


def _norm_device(value: Any) -> str:
    """One device-map value as a device string: 0 -> "cuda:0", "cuda" -> "cuda:0", "cpu"."""
    if isinstance(value, bool):  # bool is an int; never a valid device
        return str(value)
    if isinstance(value, int):
        return f"cuda:{value}"
    text = str(value).strip()
    if text.isdigit():
        return f"cuda:{text}"
    return "cuda:0" if text == "cuda" else text


def normalize_placement(placement: Mapping[str, Any] | None) -> dict[str, str]:
    """An accelerate `hf_device_map` as {module: device string}, in the map's order."""
    return {str(k): _norm_device(v) for k, v in (placement or {}).items()}


def devices_in(placement: Mapping[str, Any]) -> list[str]:
    """Distinct devices of an accelerate device map, in order: ints mean cuda:N."""
    out: list[str] = []
    for value in placement.values():
        dev = _norm_device(value)
        if dev not in out:
            out.append(dev)
    return out


def _accelerators(devices: list[str]) -> list[str]:
    return [d for d in devices if d not in OFFLOAD_DEVICES]


def offloaded_modules(placement: Mapping[str, Any] | None) -> list[str]:
    """Modules that accelerate put on the CPU or disk although an accelerator is in the map.

    Those run much slower (weights cross PCIe every step, or are read from disk). A map that
    is all CPU (a CPU-only machine) has nothing offloaded, except what went to disk.
    """
    if not placement:
        return []
    devices = devices_in(placement)
    offload = OFFLOAD_DEVICES if _accelerators(devices) else ("disk",)
    return [str(k) for k, v in placement.items() if _norm_device(v) in offload]


def offload_warning(name: str, placement: Mapping[str, Any] | None) -> str | None:
    """The slow-offload warning for a load progress message and the log; None if no offload."""
    offloaded = offloaded_modules(placement)
    if not offloaded or not placement:
        return None
    places = " and ".join(sorted({_norm_device(placement[m]) for m in offloaded}))
    listed = ", ".join(offloaded[:3]) + (
        f" and {len(offloaded) - 3} more" if len(offloaded) > 3 else ""
    )
    on_gpus = bool(_accelerators(devices_in(placement)))
    memory, fix = (
        ("GPU memory", "Use more GPUs, --load-in-4bit, or a smaller model.")
        if on_gpus
        else ("RAM", "Free some memory or use a smaller model.")
    )
    return (
        f"{len(offloaded)} part(s) of {name} did not fit in {memory} and are offloaded to "
        f"{places} ({listed}): replies will be much slower. {fix}"
    )


def main_device(placement: Mapping[str, Any]) -> str:
    """Where accelerate runs CPU/disk-offloaded modules: the first accelerator in the map.

    Same rule as `accelerate.dispatch_model`; "cpu" when the map has no accelerator.
    """
    accel = _accelerators(devices_in(placement))
    return accel[0] if accel else "cpu"


def module_device(placement: Mapping[str, Any], module_name: str) -> str | None:
    """The device the map gives `module_name` (its own entry or its closest ancestor's)."""
    best: tuple[int, str] | None = None
    for key, value in placement.items():
        name = str(key)
        matches = name == "" or module_name == name or module_name.startswith(name + ".")
        if matches and (best is None or len(name) > best[0]):
            best = (len(name), _norm_device(value))
    return best[1] if best else None


def input_device(model: Any, placement: Mapping[str, Any] | None, fallback: str) -> str:
    """The device input ids must be on: where the input embedding layer executes.

    With a device map that is the embedding's entry (not simply the map's first entry, whose
    order is not guaranteed); an embedding offloaded to CPU/disk executes on the main device.
    Without a map it is the embedding weight's device, else `fallback`.
    """
    get_emb = getattr(model, "get_input_embeddings", None)
    emb = get_emb() if callable(get_emb) else None
    if placement:
        name = None
        if emb is not None:
            name = next((n for n, m in model.named_modules() if m is emb), None)
        dev = module_device(placement, name) if name is not None else None
        if dev is None or dev in OFFLOAD_DEVICES:
            return main_device(placement)
        return dev
    weight = getattr(emb, "weight", None)
    dev_obj = getattr(weight, "device", None)
    if dev_obj is not None and str(dev_obj) != "meta":
        return _norm_device(str(dev_obj))
    return fallback


def device_label(
    device: str,
    placement: Mapping[str, Any] | None = None,
    caps: DeviceCaps | None = None,
) -> str:
    """A short label for the status bar: "cuda:0 NVIDIA H100 80GB HBM3", "mps", "cpu".

    With a device map spread over several GPUs: "cuda:0-3, 4 GPUs" ("cuda:0,2, 2 GPUs" when
    not contiguous), plus " +cpu offload" (or "+disk", "+cpu+disk") when accelerate put part
    of the model on the CPU or disk because it did not fit.
    """
    if placement:
        devices = devices_in(placement)
        gpus = sorted({int(d.split(":")[1]) for d in devices if d.startswith("cuda:")})
        others = [d for d in _accelerators(devices) if not d.startswith("cuda:")]
        offload = [d for d in OFFLOAD_DEVICES if d in devices]
        if not gpus and not others:  # CPU-only: only a disk share is an offload
            offload = [d for d in offload if d != "cpu"]
            base = "cpu"
        elif len(gpus) > 1:
            contiguous = gpus == list(range(gpus[0], gpus[-1] + 1))
            span = f"{gpus[0]}-{gpus[-1]}" if contiguous else ",".join(map(str, gpus))
            base = f"cuda:{span}, {len(gpus)} GPUs"
        elif gpus:
            base = device_label(f"cuda:{gpus[0]}", None, caps)
        else:
            base = others[0]
        return base + (f" +{'+'.join(offload)} offload" if offload else "")
    if device.startswith("cuda"):
        index = int(device.partition(":")[2] or 0)
        if caps is None:
            try:
                import torch

                name = torch.cuda.get_device_name(index)
            except Exception:  # no driver or a fake device in a test: the index is enough
                name = ""
        else:
            name = caps.cuda_names[index] if index < len(caps.cuda_names) else ""
        return f"cuda:{index} {name}".strip()
    if device == "cpu":
        return "cpu"
    return device

"""Device and dtype choice, torch threads, and memory readings for the status bar.

The choice logic is plain Python over a `DeviceCaps` snapshot, so tests can inject any mix of
GPUs without having one; `probe_caps()` fills it from torch. torch is imported lazily, inside
functions: importing this module stays cheap (the CLI's `--help` must not pay for torch).
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from llama_tui.core.backend import DTYPE_ALIASES, MemoryReading
from llama_tui.core.errors import ModelError

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

# The names --dtype accepts, "auto" resolved apart (by `dtype_name`).
DTYPE_NAMES: dict[str, str] = {k: v for k, v in DTYPE_ALIASES.items() if k != "auto"}


@dataclass(frozen=True)
class DeviceCaps:
    """What this machine offers; `probe_caps()` reads it, tests build it by hand."""

    cuda_count: int = 0
    cuda_bf16: bool = False  # native bf16 on the CUDA device (Ampere and newer)
    cuda_names: tuple[str, ...] = ()
    mps: bool = False
    cpu_bf16: bool = False  # CPU has native bf16 instructions (AVX512-BF16 / AMX / Arm BF16)
    extra: dict[str, Any] = field(default_factory=dict)


def cpu_has_native_bf16(cpuinfo_path: str = "/proc/cpuinfo") -> bool:
    """True when the CPU computes bf16 natively (so bf16 decodes faster than fp32).

    `torch.backends.cpu.get_cpu_capability()` says only "AVX512" on a CPU that has avx512_bf16
    and amx_bf16 (checked on torch 2.13), so it cannot tell. On Linux we read the kernel's flags;
    elsewhere torch's private `torch.cpu._is_avx512_bf16_supported()` is the best we have.
    """
    try:
        with open(cpuinfo_path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key in ("flags", "features"):  # x86 "flags", aarch64 "Features"
                    flags = set(value.split())
                    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})
    except OSError:
        pass
    try:
        import torch

        for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
            fn = getattr(torch.cpu, probe, None)
            if fn is not None and fn():
                return True
    except Exception:  # a private API: never let it break device choice
        pass
    return False


def probe_caps() -> DeviceCaps:
    """Read the real machine's capabilities (imports torch)."""
    import torch

    cuda_count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    names: tuple[str, ...] = ()
    bf16 = False
    if cuda_count:
        names = tuple(torch.cuda.get_device_name(i) for i in range(cuda_count))
        # including_emulation=False: emulated bf16 on pre-Ampere GPUs is slow; use fp16 there.
        try:
            bf16 = bool(torch.cuda.is_bf16_supported(including_emulation=False))
        except TypeError:  # older torch without the keyword
            bf16 = bool(torch.cuda.is_bf16_supported())
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    return DeviceCaps(
        cuda_count=cuda_count,
        cuda_bf16=bf16,
        cuda_names=names,
        mps=mps,
        cpu_bf16=cpu_has_native_bf16(),
    )


def choose_device(requested: str = "auto", caps: DeviceCaps | None = None) -> str:
    """Resolve "auto" | "cpu" | "cuda" | "cuda:N" | "mps" to a concrete torch device string.

    auto picks cuda (as "cuda:0"), then mps, then cpu. An explicit device that this machine
    lacks raises `ModelError` naming what is available, rather than failing deep in torch.
    """
    req = (requested or "auto").strip().lower()
    caps = caps if caps is not None else probe_caps()
    available = ["cpu"]
    if caps.cuda_count:
        available[:0] = [f"cuda:{i}" for i in range(caps.cuda_count)]
    if caps.mps:
        available.insert(0, "mps")
    if req == "auto":
        if caps.cuda_count:
            return "cuda:0"
        return "mps" if caps.mps else "cpu"
    if req == "cpu":
        return "cpu"
    if req == "mps":
        if caps.mps:
            return "mps"
        raise ModelError(
            "Device 'mps' (Apple GPU) is not available on this machine.",
            f"Use --device auto or one of: {', '.join(available)}.",
        )
    if req == "cuda" or req.startswith("cuda:"):
        index_text = req.partition(":")[2] or "0"
        if not index_text.isdigit():
            raise ModelError(
                f"Device {requested!r} is not a valid CUDA device.",
                "Use cuda, cuda:0, cuda:1, ... or --device auto.",
            )
        index = int(index_text)
        if caps.cuda_count == 0:
            raise ModelError(
                "CUDA was requested but no NVIDIA GPU is usable here "
                "(no GPU, no driver, or a CPU-only build of torch).",
                f"Use --device auto or one of: {', '.join(available)}; on a GPU server "
                "install a CUDA build of torch.",
            )
        if index >= caps.cuda_count:
            raise ModelError(
                f"Device cuda:{index} does not exist; this machine has {caps.cuda_count} GPU(s).",
                f"Use one of: {', '.join(available)}.",
            )
        return f"cuda:{index}"
    raise ModelError(
        f"Unknown device {requested!r}.",
        "Use auto, cpu, cuda, cuda:N or mps.",
    )


def dtype_name(device: str, requested: str = "auto", caps: DeviceCaps | None = None) -> str:
    """The dtype name ("float32" | "bfloat16" | "float16") for `device`, without importing torch.

    auto: bf16 on CUDA (fp16 where bf16 is not native), fp16 on MPS (bf16 needs macOS 14+),
    on CPU bf16 when the CPU has native bf16 (the demo model decodes about 2x faster than fp32
    there) and float32 otherwise (half precision is slow without it).
    """
    req = (requested or "auto").strip().lower()
    if req != "auto":
        if req not in DTYPE_NAMES:
            raise ModelError(
                f"Unknown dtype {requested!r}.",
                "Use auto, float32, bfloat16 or float16.",
            )
        return DTYPE_NAMES[req]
    if device.startswith("cuda"):
        caps = caps if caps is not None else probe_caps()
        return "bfloat16" if caps.cuda_bf16 else "float16"
    if device == "mps":
        return "float16"
    if caps is None:
        return "bfloat16" if cpu_has_native_bf16() else "float32"
    return "bfloat16" if caps.cpu_bf16 else "float32"


def choose_dtype(
    device: str, requested: str = "auto", caps: DeviceCaps | None = None
) -> torch.dtype:
    """The torch dtype to load weights in on `device` (see `dtype_name` for the rules)."""
    import torch

    return getattr(torch, dtype_name(device, requested, caps))  # type: ignore[no-any-return]


def set_threads(n: int | None) -> None:
    """Set torch's intra-op threads (CPU decode); None keeps torch's default."""
    if n is None:
        return
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ModelError(
            f"Invalid thread count {n!r}.", "Use a whole number >= 1, or leave it unset."
        )
    import torch

    torch.set_num_threads(n)


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


def _devices_in(placement: Mapping[str, Any]) -> list[str]:
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
    devices = _devices_in(placement)
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
    on_gpus = bool(_accelerators(_devices_in(placement)))
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
    accel = _accelerators(_devices_in(placement))
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
        devices = _devices_in(placement)
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


def _rss_bytes() -> int:
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except Exception:  # psutil is a dependency, but a reading must never crash the UI
        if platform.system() == "Linux":
            with open(f"/proc/{os.getpid()}/statm", encoding="ascii") as fh:
                return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        return 0


def _total_ram() -> int | None:
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except Exception:
        return None


def memory_reading(device: str, model: Any = None) -> MemoryReading:
    """Memory in use now: this process's CUDA tensors per GPU, MPS allocations, or CPU RSS.

    CUDA: `memory_allocated` counts only our tensors; the total comes from `mem_get_info`, which
    is device-wide. With a device map the GPUs come from `model.hf_device_map`: `used_bytes`
    and `total_bytes` are sums over them and `per_device` lists each GPU (only when there are
    several). Weights offloaded to the CPU are not in the VRAM figure. RSS is only meaningful
    after the first forward pass (safetensors weights are mmapped lazily).
    """
    placement = getattr(model, "hf_device_map", None) if model is not None else None
    devices = _devices_in(placement) if placement else [device]
    cuda_devices = sorted(
        {d for d in devices if d.startswith("cuda")}, key=lambda d: int(d.partition(":")[2] or 0)
    )
    if cuda_devices:
        import torch

        per: list[tuple[str, int]] = []
        total = 0
        for dev in cuda_devices:
            index = int(dev.partition(":")[2] or 0)
            per.append((f"cuda:{index}", int(torch.cuda.memory_allocated(index))))
            total += int(torch.cuda.mem_get_info(index)[1])
        return MemoryReading(
            used_bytes=sum(b for _, b in per),
            total_bytes=total,
            label="VRAM",
            per_device=tuple(per) if len(per) > 1 else (),
        )
    if device == "mps":
        import torch

        used = int(torch.mps.current_allocated_memory())
        total_fn = getattr(torch.mps, "recommended_max_memory", None)
        return MemoryReading(
            used_bytes=used,
            total_bytes=int(total_fn()) if total_fn else None,
            label="MPS",
        )
    return MemoryReading(used_bytes=_rss_bytes(), total_bytes=_total_ram(), label="RSS")

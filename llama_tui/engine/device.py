"""Device and dtype choice, and torch threads.

The choice logic is plain Python over a `DeviceCaps` snapshot, so tests can inject any mix of
GPUs without having one; `probe_caps()` fills it from torch. torch is imported lazily, inside
functions: importing this module stays cheap (the CLI's `--help` must not pay for torch).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llama_tui.core.backend import DTYPE_ALIASES
from llama_tui.core.errors import ModelError

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
    there) and float32 otherwise (half precision is slow without it). This is the rule; a load
    on one CPU measures instead (`loading.calibration`) and prefers it within 10%.
    """
    req = (requested or "auto").strip().lower()
    if req != "auto":
        if req not in DTYPE_NAMES:
            raise ModelError(
                f"Unknown dtype {requested!r}.",
                "Use auto, float32, bfloat16, float16 or int4 (CPU).",
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

"""Memory readings for the status bar: this process's GPU tensors, MPS allocations, or RSS."""

from __future__ import annotations

import os
import platform
from typing import Any

from llama_tui.core.backend import MemoryReading
from llama_tui.engine.placement import devices_in


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
    devices = devices_in(placement) if placement else [device]
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

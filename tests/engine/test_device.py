"""Device / dtype choice (with injected capabilities: no GPU needed), labels and memory."""

from __future__ import annotations

from pathlib import Path

import pytest

from llama_tui.core.errors import ModelError
from llama_tui.engine import device as dev
from llama_tui.engine import memory
from llama_tui.engine import placement as placements
from llama_tui.engine.device import DeviceCaps

CPU_ONLY = DeviceCaps()
CPU_BF16 = DeviceCaps(cpu_bf16=True)
ONE_H100 = DeviceCaps(cuda_count=1, cuda_bf16=True, cuda_names=("NVIDIA H100 80GB HBM3",))
FOUR_V100 = DeviceCaps(cuda_count=4, cuda_bf16=False, cuda_names=("Tesla V100",) * 4)
MAC = DeviceCaps(mps=True)


@pytest.mark.parametrize(
    ("caps", "expected"),
    [
        (CPU_ONLY, "cpu"),
        (MAC, "mps"),
        (ONE_H100, "cuda:0"),
        (DeviceCaps(cuda_count=2, mps=True), "cuda:0"),
    ],
)
def test_auto_prefers_cuda_then_mps_then_cpu(caps: DeviceCaps, expected: str) -> None:
    assert dev.choose_device("auto", caps) == expected
    assert dev.choose_device("", caps) == expected


def test_explicit_devices_are_validated() -> None:
    assert dev.choose_device("cpu", ONE_H100) == "cpu"
    assert dev.choose_device("CUDA", ONE_H100) == "cuda:0"
    assert dev.choose_device("cuda:3", FOUR_V100) == "cuda:3"
    assert dev.choose_device("mps", MAC) == "mps"
    with pytest.raises(ModelError, match="no NVIDIA GPU") as info:
        dev.choose_device("cuda", CPU_ONLY)
    assert "cpu" in info.value.fix
    with pytest.raises(ModelError, match="cuda:4 does not exist"):
        dev.choose_device("cuda:4", FOUR_V100)
    with pytest.raises(ModelError, match="mps"):
        dev.choose_device("mps", ONE_H100)
    with pytest.raises(ModelError, match="Unknown device"):
        dev.choose_device("tpu", ONE_H100)
    with pytest.raises(ModelError, match="not a valid CUDA device"):
        dev.choose_device("cuda:x", ONE_H100)


def test_auto_dtype_rules() -> None:
    assert dev.dtype_name("cuda:0", "auto", ONE_H100) == "bfloat16"
    assert dev.dtype_name("cuda:0", "auto", FOUR_V100) == "float16"  # no native bf16
    assert dev.dtype_name("mps", "auto", MAC) == "float16"
    assert dev.dtype_name("cpu", "auto", CPU_BF16) == "bfloat16"
    assert dev.dtype_name("cpu", "auto", CPU_ONLY) == "float32"


def test_explicit_dtype_and_aliases() -> None:
    assert dev.dtype_name("cpu", "fp16", CPU_ONLY) == "float16"
    assert dev.dtype_name("cuda:0", "float32", ONE_H100) == "float32"
    assert dev.dtype_name("cpu", "BF16", CPU_ONLY) == "bfloat16"
    with pytest.raises(ModelError, match="Unknown dtype"):
        dev.dtype_name("cpu", "int3", CPU_ONLY)


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ("flags\t\t: fpu sse avx512f avx512_bf16 amx_tile", True),
        ("flags\t\t: fpu sse avx2 amx_bf16", True),
        ("Features\t: fp asimd bf16 i8mm", True),  # aarch64 (Graviton 3 etc.)
        ("flags\t\t: fpu sse avx2 avx512f", False),
    ],
)
def test_cpu_bf16_from_cpuinfo(tmp_path: Path, flags: str, expected: bool) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nmodel name\t: Some CPU\n{flags}\n\n")
    assert dev.cpu_has_native_bf16(str(info)) is expected


def test_probe_caps_on_this_machine_is_consistent() -> None:
    import torch

    caps = dev.probe_caps()
    assert caps.cuda_count == (torch.cuda.device_count() if torch.cuda.is_available() else 0)
    assert dev.choose_device("auto", caps) in {"cpu", "mps", "cuda:0"}
    assert dev.choose_device("cpu", caps) == "cpu"


def test_device_labels() -> None:
    assert placements.device_label("cpu", caps=CPU_ONLY) == "cpu"
    assert placements.device_label("mps", caps=MAC) == "mps"
    assert placements.device_label("cuda:0", caps=ONE_H100) == "cuda:0 NVIDIA H100 80GB HBM3"
    spread = {"model.embed_tokens": 0, "model.layers.0": 1, "model.layers.1": 2, "lm_head": 3}
    assert placements.device_label("cuda:0", spread, FOUR_V100) == "cuda:0-3, 4 GPUs"
    offload = {"model.layers.0": 0, "model.layers.1": 1, "lm_head": "cpu"}
    assert placements.device_label("cuda:0", offload, FOUR_V100) == "cuda:0-1, 2 GPUs +cpu offload"
    one = {"model": 0, "lm_head": "cpu"}
    label = placements.device_label("cuda:0", one, ONE_H100)
    assert label == "cuda:0 NVIDIA H100 80GB HBM3 +cpu offload"
    assert placements.device_label("cuda:0", {"": 0}, ONE_H100) == "cuda:0 NVIDIA H100 80GB HBM3"


def test_cpu_memory_reading_is_process_rss() -> None:
    import psutil

    reading = memory.memory_reading("cpu")
    assert reading.label == "RSS"
    rss = psutil.Process().memory_info().rss
    assert 0.5 * rss < reading.used_bytes < 2 * rss
    assert reading.total_bytes is not None and reading.total_bytes > reading.used_bytes


def test_set_threads() -> None:
    import torch

    before = torch.get_num_threads()
    try:
        dev.set_threads(1)
        assert torch.get_num_threads() == 1
        dev.set_threads(None)  # keeps the current value
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    for bad in (0, -1, True, 1.5):
        with pytest.raises(ModelError, match="thread"):
            dev.set_threads(bad)  # type: ignore[arg-type]

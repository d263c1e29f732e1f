"""Several GPUs, offload and quantisation, tested on a CPU-only machine.

No GPU is needed: torch.cuda's counts, names and memory counters are monkeypatched, and
accelerate's placement is faked by giving a really loaded tiny Llama the `hf_device_map` that
`from_pretrained(device_map="auto")` would set on a machine with several GPUs. What is real:
the tiny model and its tokenizer, transformers' own loading, and transformers' own failures for
pre-quantised checkpoints whose packages are missing.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from llama_tui.core.backend import LoadOptions, LoadProgress
from llama_tui.core.errors import DependencyMissingError, ModelError, ModelNotCachedError
from llama_tui.engine import device as devices
from llama_tui.engine import memory
from llama_tui.engine import placement as placements
from llama_tui.engine.device import DeviceCaps
from llama_tui.engine.loading.checks import check_folder, quant_method
from llama_tui.engine.loading.errors import classify_load_error, classify_quantized_load_error
from llama_tui.engine.loading.models import load_model

GIB = 1024**3
TWO_GPUS = DeviceCaps(cuda_count=2, cuda_bf16=True, cuda_names=("Fake GPU A", "Fake GPU B"))
FOUR_GPUS = DeviceCaps(cuda_count=4, cuda_bf16=True, cuda_names=("Fake H100",) * 4)

# What accelerate's "auto" gives the tiny Llama on two small GPUs with the head not fitting.
SPREAD_WITH_OFFLOAD: dict[str, Any] = {
    "model.embed_tokens": 0,
    "model.layers.0": 0,
    "model.layers.1": 1,
    "model.norm": 1,
    "model.rotary_emb": 1,
    "lm_head": "cpu",
}


@pytest.fixture
def fake_caps(monkeypatch: pytest.MonkeyPatch) -> Callable[[DeviceCaps], None]:
    """Make `probe_caps()` (what load_model asks) report the given GPUs."""

    def use(caps: DeviceCaps) -> None:
        monkeypatch.setattr(devices, "probe_caps", lambda: caps)

    return use


@pytest.fixture
def fake_dispatch(monkeypatch: pytest.MonkeyPatch) -> Callable[..., list[dict[str, Any]]]:
    """Make from_pretrained load for real on the CPU, then carry the given hf_device_map.

    Returns the list of keyword arguments load_model passed (device_map, dtype, quantisation).
    `weights_from` loads another folder instead (a pre-quantised config needs packages we lack).
    """
    import torch
    import transformers

    real = transformers.AutoModelForCausalLM.from_pretrained

    def install(
        device_map: Mapping[str, Any] | None, weights_from: Path | None = None
    ) -> list[dict[str, Any]]:
        calls: list[dict[str, Any]] = []

        def fake(path: Any, **kwargs: Any) -> Any:
            calls.append(dict(kwargs))
            kwargs = {**kwargs, "device_map": "cpu", "dtype": torch.float32}
            kwargs.pop("quantization_config", None)
            model = real(weights_from or path, **kwargs)
            if device_map is not None:
                model.hf_device_map = dict(device_map)
            return model

        monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", fake)
        return calls

    return install


def with_config(src: Path, dst: Path, **changes: Any) -> Path:
    """A copy of the tiny model folder with config.json fields changed."""
    shutil.copytree(src, dst)
    config = json.loads((dst / "config.json").read_text())
    config.update(changes)
    (dst / "config.json").write_text(json.dumps(config))
    return dst


# --------------------------------------------------------------------------- torch.cuda faked


def test_probe_caps_reads_fake_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: f"Fake GPU {i}")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda **kw: True)
    caps = devices.probe_caps()
    assert caps.cuda_count == 4
    assert caps.cuda_names == ("Fake GPU 0", "Fake GPU 1", "Fake GPU 2", "Fake GPU 3")
    assert devices.choose_device("auto", caps) == "cuda:0"
    assert devices.dtype_name("cuda:0", "auto", caps) == "bfloat16"
    # Without caps the label asks torch for the name.
    assert placements.device_label("cuda:2") == "cuda:2 Fake GPU 2"


# --------------------------------------------------------------------------- labels, offload


@pytest.mark.parametrize(
    ("placement", "label"),
    [
        (
            {"model.embed_tokens": 0, "model.layers.0": 1, "model.layers.1": 2, "lm_head": 3},
            "cuda:0-3, 4 GPUs",
        ),
        (
            {"model.layers.0": 0, "model.layers.1": 1, "lm_head": "cpu"},
            "cuda:0-1, 2 GPUs +cpu offload",
        ),
        (
            {"model.layers.0": 0, "model.layers.1": 1, "model.norm": "cpu", "lm_head": "disk"},
            "cuda:0-1, 2 GPUs +cpu+disk offload",
        ),
        ({"model.layers.0": 0, "model.layers.1": 2}, "cuda:0,2, 2 GPUs"),
        ({"model.layers.0": "cuda:1", "lm_head": "cuda:3"}, "cuda:1,3, 2 GPUs"),
        ({"model": "cuda", "lm_head": "cpu"}, "cuda:0 Fake H100 +cpu offload"),
        ({"model": "cpu", "lm_head": "cpu"}, "cpu"),
        ({"model": "cpu", "lm_head": "disk"}, "cpu +disk offload"),
    ],
)
def test_device_labels_for_device_maps(placement: dict[str, Any], label: str) -> None:
    assert placements.device_label("cuda:0", placement, FOUR_GPUS) == label


def test_offloaded_modules() -> None:
    assert placements.offloaded_modules(SPREAD_WITH_OFFLOAD) == ["lm_head"]
    assert placements.offloaded_modules({"model": 0, "lm_head": 1}) == []
    # A CPU-only map is not an offload; only the disk part of it is.
    assert placements.offloaded_modules({"model": "cpu", "lm_head": "cpu"}) == []
    assert placements.offloaded_modules({"model": "cpu", "lm_head": "disk"}) == ["lm_head"]
    assert placements.offloaded_modules(None) == []


def test_offload_warning_text() -> None:
    many = {"model.layers.0": 0, **{f"model.layers.{i}": "cpu" for i in range(1, 6)}}
    text = placements.offload_warning("Big", many)
    assert text is not None
    assert text.startswith("5 part(s) of Big did not fit in GPU memory and are offloaded to cpu")
    assert "model.layers.1, model.layers.2, model.layers.3 and 2 more" in text
    assert "slower" in text and "--load-in-4bit" in text
    ram = placements.offload_warning("Big", {"model": "cpu", "lm_head": "disk"})
    assert ram is not None and "did not fit in RAM" in ram and "to disk (lm_head)" in ram
    assert "--load-in-4bit" not in ram  # no GPU: 4-bit is not an option
    assert placements.offload_warning("Big", {"model": 0, "lm_head": 1}) is None
    assert placements.offload_warning("Big", None) is None


def test_module_device_uses_the_closest_ancestor() -> None:
    placement = {"model": 0, "model.layers.1": 1, "lm_head": "cpu"}
    assert placements.module_device(placement, "model.embed_tokens") == "cuda:0"
    assert placements.module_device(placement, "model.layers.1.mlp") == "cuda:1"
    assert placements.module_device(placement, "model.layers.10") == "cuda:0"  # not layers.1
    assert placements.module_device(placement, "lm_head") == "cpu"
    assert placements.module_device({"": 2}, "anything") == "cuda:2"
    assert placements.module_device({"lm_head": 0}, "model.norm") is None


def test_input_device_is_the_embeddings(tiny_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, local_files_only=True)
    # The map's first entry is not the embedding: inputs still go where the embedding is.
    layers_first = {"model.layers.0": 0, "model.embed_tokens": 1, "model.layers.1": 1}
    assert placements.input_device(model, layers_first, "cpu") == "cuda:1"
    assert placements.input_device(model, {"model": 2, "lm_head": 3}, "cpu") == "cuda:2"
    # An offloaded embedding executes on accelerate's main device (the first GPU in the map).
    offloaded = {"model.embed_tokens": "cpu", "model.layers.0": 1, "model.layers.1": 0}
    assert placements.input_device(model, offloaded, "cpu") == "cuda:1"
    assert placements.input_device(model, {}, "cuda:7") == "cpu"  # the weight's real device


# --------------------------------------------------------------------------- memory per GPU


def test_memory_reading_sums_and_lists_each_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    allocated = {0: 3 * GIB, 1: 5 * GIB, 2: 7 * GIB}
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda i=0: allocated[i])
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda i=0: (GIB, 80 * GIB))

    dispatched = SimpleNamespace(
        hf_device_map={"model.layers.0": 1, "model.layers.1": 0, "lm_head": "cpu"}
    )
    reading = memory.memory_reading("cuda:0", dispatched)
    assert reading.label == "VRAM"
    assert reading.used_bytes == 8 * GIB  # GPUs 0 and 1 only: GPU 2 holds none of the model
    assert reading.total_bytes == 160 * GIB
    assert reading.per_device == (("cuda:0", 3 * GIB), ("cuda:1", 5 * GIB))

    one_gpu = SimpleNamespace(hf_device_map={"model": 2, "lm_head": "cpu"})
    single = memory.memory_reading("cuda:0", one_gpu)
    assert (single.used_bytes, single.total_bytes, single.per_device) == (7 * GIB, 80 * GIB, ())


# --------------------------------------------------------------------------- load_model


def test_device_map_auto_spreads_and_warns_about_offload(
    tiny_model_dir: Path, fake_caps: Any, fake_dispatch: Any
) -> None:
    fake_caps(TWO_GPUS)
    calls = fake_dispatch(SPREAD_WITH_OFFLOAD)
    seen: list[LoadProgress] = []
    loaded = load_model(str(tiny_model_dir), LoadOptions(device_map="auto"), seen.append)

    assert calls[0]["device_map"] == "auto"  # accelerate decides, not us
    info = loaded.info
    assert info.device == "cuda:0-1, 2 GPUs +cpu offload"
    assert info.placement == {
        "model.embed_tokens": "cuda:0",
        "model.layers.0": "cuda:0",
        "model.layers.1": "cuda:1",
        "model.norm": "cuda:1",
        "model.rotary_emb": "cuda:1",
        "lm_head": "cpu",
    }
    assert loaded.device == "cuda:0"
    warnings = [p.message for p in seen if "offloaded" in p.message]
    assert len(warnings) == 1
    assert "lm_head" in warnings[0] and "cpu" in warnings[0] and "slower" in warnings[0]
    assert "2 GPUs" in next(p.message for p in seen if p.message.startswith("Loading"))


def test_inputs_follow_the_embedding_not_the_first_map_entry(
    tiny_model_dir: Path, fake_caps: Any, fake_dispatch: Any
) -> None:
    fake_caps(FOUR_GPUS)
    fake_dispatch({"model.layers.0": 2, "model.layers.1": 3, "model.embed_tokens": 3, "lm_head": 2})
    seen: list[LoadProgress] = []
    loaded = load_model(str(tiny_model_dir), LoadOptions(device_map="auto"), seen.append)
    assert loaded.device == "cuda:3"
    assert loaded.info.device == "cuda:2-3, 2 GPUs"
    assert not any("offloaded" in p.message for p in seen)


def test_device_map_on_one_device_has_no_placement(
    tiny_model_dir: Path, fake_caps: Any, fake_dispatch: Any
) -> None:
    fake_caps(DeviceCaps())
    calls = fake_dispatch(None)  # accelerate sets no hf_device_map for one device
    loaded = load_model(str(tiny_model_dir), LoadOptions(device_map="auto"))
    assert calls[0]["device_map"] == "auto"
    assert loaded.info.placement == {}
    assert loaded.info.device == "cpu"
    assert loaded.device == "cpu"


def test_device_map_conflicts_and_typos_are_refused_before_loading(tiny_model_dir: Path) -> None:
    with pytest.raises(ModelError, match="cannot be combined with --device cpu") as info:
        load_model(str(tiny_model_dir), LoadOptions(device="cpu", device_map="auto"))
    assert "CUDA_VISIBLE_DEVICES" in info.value.fix
    with pytest.raises(ModelError, match="Unknown device map") as info:
        load_model(str(tiny_model_dir), LoadOptions(device_map="everywhere"))
    assert "balanced" in info.value.fix


# --------------------------------------------------------------------------- quantisation


def test_both_bit_widths_is_a_clear_error_before_any_download(fake_caps: Any) -> None:
    fake_caps(TWO_GPUS)
    # A hub model that is not cached, with the Hub off: the option error must come first.
    with pytest.raises(ModelError, match="Both 4-bit and 8-bit") as info:
        load_model("org/not-cached", LoadOptions(load_in_4bit=True, load_in_8bit=True))
    assert not isinstance(info.value, ModelNotCachedError)


def test_quantisation_needs_cuda_and_says_why(fake_caps: Any) -> None:
    fake_caps(DeviceCaps(mps=True))
    with pytest.raises(DependencyMissingError, match="NVIDIA GPU") as info:
        load_model("org/not-cached", LoadOptions(load_in_8bit=True))
    assert "mps" in info.value.cause and "--load-in-8bit" in info.value.fix


def test_missing_bitsandbytes_names_the_extra(
    fake_caps: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_caps(TWO_GPUS)
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "bitsandbytes" else real(n, *a)
    )
    with pytest.raises(DependencyMissingError, match="bitsandbytes") as info:
        load_model("org/not-cached", LoadOptions(load_in_4bit=True))
    assert "pip install 'llama-tui[quant]'" in info.value.fix


def test_4bit_passes_nf4_double_quant_config(
    tiny_model_dir: Path, fake_caps: Any, fake_dispatch: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    fake_caps(TWO_GPUS)
    real = importlib.util.find_spec
    present = {"bitsandbytes", "accelerate"}
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda n, *a: real("json") if n in present else real(n, *a),
    )
    calls = fake_dispatch(None)
    load_model(str(tiny_model_dir), LoadOptions(load_in_4bit=True))
    quant = calls[0]["quantization_config"]
    assert quant.load_in_4bit and not quant.load_in_8bit
    assert quant.bnb_4bit_quant_type == "nf4"
    assert quant.bnb_4bit_use_double_quant is True
    assert quant.bnb_4bit_compute_dtype is torch.bfloat16  # the GPUs have native bf16
    assert calls[0]["device_map"] == "cuda:0"

    calls = fake_dispatch(None)
    load_model(str(tiny_model_dir), LoadOptions(load_in_8bit=True, device_map="auto"))
    assert calls[0]["quantization_config"].load_in_8bit
    assert calls[0]["device_map"] == "auto"


def test_bitsandbytes_refusing_to_offload_is_explained() -> None:
    exc = ValueError(
        "Some modules are dispatched on the CPU or the disk. Make sure you have enough GPU RAM "
        "to fit the quantized model."
    )
    err = classify_load_error(exc, "org/big")
    assert "does not fit in GPU memory" in err.cause
    assert "--device-map auto" in err.fix


# --------------------------------------------------------------------------- pre-quantised


GPTQ = {"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": False, "sym": True}
AWQ = {"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True, "version": "gemm"}
COMPRESSED = {"quant_method": "compressed-tensors", "format": "pack-quantized", "config_groups": {}}


@pytest.mark.parametrize(
    ("qconfig", "method"),
    [
        (GPTQ, "gptq"),
        (AWQ, "awq"),
        (COMPRESSED, "compressed-tensors"),
        ({"load_in_4bit": True}, "bitsandbytes"),
    ],
)
def test_pre_quantised_configs_pass_our_checks(
    tiny_model_dir: Path, tmp_path: Path, qconfig: dict[str, Any], method: str
) -> None:
    folder = with_config(tiny_model_dir, tmp_path / "q", quantization_config=qconfig)
    config = check_folder(folder, str(folder), LoadOptions())
    assert quant_method(config) == method
    assert quant_method({"model_type": "llama"}) is None


@pytest.mark.parametrize(
    ("qconfig", "module", "package"),
    [
        (GPTQ, "optimum", "optimum gptqmodel"),
        (AWQ, "gptqmodel", "gptqmodel"),
        (COMPRESSED, "compressed_tensors", "compressed-tensors"),
    ],
)
def test_pre_quantised_load_names_the_missing_package(
    tiny_model_dir: Path, tmp_path: Path, qconfig: dict[str, Any], module: str, package: str
) -> None:
    """transformers itself loads these; what fails here is its own package check (real)."""
    if importlib.util.find_spec(module) is not None:
        pytest.skip(f"{module} is installed here")
    folder = with_config(tiny_model_dir, tmp_path / "q", quantization_config=qconfig)
    with pytest.raises(DependencyMissingError) as info:
        load_model(str(folder), LoadOptions(device="cpu"))
    assert f"pre-quantised {qconfig['quant_method']} checkpoint" in info.value.cause
    assert f"pip install {package}" in info.value.fix
    assert isinstance(info.value.__cause__, ImportError)


def test_our_quantisation_flag_yields_to_the_checkpoints(
    tiny_model_dir: Path,
    tmp_path: Path,
    fake_caps: Any,
    fake_dispatch: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_caps(TWO_GPUS)
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda n, *a: real("json") if n == "bitsandbytes" else real(n, *a),
    )
    folder = with_config(tiny_model_dir, tmp_path / "q", quantization_config=GPTQ)
    calls = fake_dispatch(None, weights_from=tiny_model_dir)
    seen: list[LoadProgress] = []
    load_model(str(folder), LoadOptions(load_in_4bit=True), seen.append)
    assert "quantization_config" not in calls[0]
    assert any("already quantised (gptq); --load-in-4bit is ignored" in p.message for p in seen)


def test_unknown_quant_method_uses_transformers_pip_hint() -> None:
    exc = ImportError("Loading this needs foo (`pip install foo-kernels>=1.2`)")
    err = classify_quantized_load_error(OSError("wrapped"), "org/m", "foo")
    assert err is None  # not about the quantisation
    err = classify_quantized_load_error(exc, "org/m", "foo")
    assert isinstance(err, DependencyMissingError)
    assert "pip install foo-kernels>=1.2" in err.fix
    gpu = classify_quantized_load_error(
        RuntimeError("GPU is required to quantize or run quantize model."), "org/m", "gptq"
    )
    assert gpu is not None and "needs a GPU" in gpu.cause

"""The measured `dtype auto` on CPU (engine/loading/calibration.py, dtype_cache.py) on the tiny
random Llama: the cache and its key, rejecting a dtype whose greedy tokens differ from float32's,
the 10% margin, and that the pick is the dtype the model ends in and the one ModelInfo shows.

The tiny model is far below `MIN_PARAMETERS` (too small to time), so every test lowers it.
Timings are faked where the pick matters; no test depends on how fast anything is.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llama_tui.core.backend import LoadOptions, LoadProgress
from llama_tui.engine import device as devices
from llama_tui.engine.loading import calibration, dtype_cache
from llama_tui.engine.loading.calibration import Measurement, choose
from llama_tui.engine.loading.models import load_model

AUTO = LoadOptions(device="cpu", dtype="auto", threads=1)
RIGHT = (1, 2, 3)
WRONG = (1, 2, 4)


@pytest.fixture(autouse=True)
def _measurable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(calibration, "MIN_PARAMETERS", 0)
    monkeypatch.setattr(calibration, "_busy", lambda: None)  # the test machine may be busy


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The dtypes measured, through the real measurement."""
    seen: list[str] = []
    real = calibration.measure_decode

    def counting(model: Any, ids: list[int], dtype: str) -> Measurement:
        seen.append(dtype)
        return real(model, ids, dtype)

    monkeypatch.setattr(calibration, "measure_decode", counting)
    return seen


def fake_measurements(
    monkeypatch: pytest.MonkeyPatch, table: dict[str, tuple[tuple[int, ...], float]]
) -> list[str]:
    """Replace the measurement by `table` (dtype -> tokens, tok/s); the dtype the model is in
    while measured is recorded, so tests see each candidate really was converted to."""
    seen: list[str] = []

    def fake(model: Any, ids: list[int], dtype: str) -> Measurement:
        seen.append(str(model.dtype).removeprefix("torch."))
        tokens, rate = table[dtype]
        return Measurement(dtype, tokens, rate)

    monkeypatch.setattr(calibration, "measure_decode", fake)
    return seen


def rule_is(monkeypatch: pytest.MonkeyPatch, dtype: str) -> None:
    """Make today's rule (`device.dtype_name`) say `dtype` for the CPU."""
    caps = devices.DeviceCaps(cpu_bf16=dtype == "bfloat16")
    monkeypatch.setattr(devices, "probe_caps", lambda: caps)


def entries() -> dict[str, Any]:
    data = json.loads(dtype_cache.cache_file().read_text(encoding="utf-8"))
    result: dict[str, Any] = data["entries"]
    return result


def test_the_pick_is_the_models_dtype_and_modelinfos(
    tiny_model_dir: Path, calls: list[str]
) -> None:
    messages: list[str] = []

    def progress(p: LoadProgress) -> None:
        messages.append(p.message)

    loaded = load_model(str(tiny_model_dir), AUTO, progress)
    assert calls == ["float32", "bfloat16", "float16"]
    assert "Measuring the fastest dtype on this CPU…" in messages
    (entry,) = entries().values()
    pick = entry["dtype"]
    assert loaded.info.dtype == pick
    assert {str(p.dtype) for p in loaded.model.parameters()} == {f"torch.{pick}"}
    # Converted from the exact float32 weights: the same tensors an explicit --dtype gives.
    explicit = load_model(str(tiny_model_dir), LoadOptions(device="cpu", dtype=pick, threads=1))
    mine, theirs = loaded.model.state_dict(), explicit.model.state_dict()
    assert mine.keys() == theirs.keys()
    for name in mine:
        assert mine[name].dtype == theirs[name].dtype, name
        assert mine[name].equal(theirs[name]), name


def test_a_faster_dtype_with_different_tokens_is_rejected(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rule_is(monkeypatch, "float32")
    seen = fake_measurements(
        monkeypatch,
        {"float32": (RIGHT, 10.0), "bfloat16": (RIGHT, 10.5), "float16": (WRONG, 100.0)},
    )
    loaded = load_model(str(tiny_model_dir), AUTO)
    assert seen == ["float32", "bfloat16", "float16"]
    # float16 is 10x faster but wrong; bfloat16 is right but within the 10% margin.
    assert loaded.info.dtype == "float32"
    assert str(loaded.model.dtype) == "torch.float32"
    assert next(iter(entries().values()))["dtype"] == "float32"


def test_a_clearly_faster_correct_dtype_is_picked(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rule_is(monkeypatch, "bfloat16")
    fake_measurements(
        monkeypatch,
        {"float32": (RIGHT, 11.0), "bfloat16": (RIGHT, 13.0), "float16": (RIGHT, 31.0)},
    )
    loaded = load_model(str(tiny_model_dir), AUTO)
    assert loaded.info.dtype == "float16"
    assert {str(p.dtype) for p in loaded.model.parameters()} == {"torch.float16"}


def test_a_candidate_that_fails_is_skipped(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rule_is(monkeypatch, "bfloat16")

    def fake(model: Any, ids: list[int], dtype: str) -> Measurement:
        if dtype == "bfloat16":
            raise RuntimeError("no bf16 kernel here")
        return Measurement(dtype, RIGHT, 10.0)

    monkeypatch.setattr(calibration, "measure_decode", fake)
    loaded = load_model(str(tiny_model_dir), AUTO)
    assert loaded.info.dtype == "float32"  # the rule's bf16 failed: float32 is the baseline


def test_choose_prefers_the_rule_within_ten_percent() -> None:
    def m(dtype: str, rate: float, tokens: tuple[int, ...] = RIGHT) -> Measurement:
        return Measurement(dtype, tokens, rate)

    close = (m("float32", 10.0), m("bfloat16", 20.0), m("float16", 21.0))
    assert choose(close, "bfloat16") == ("bfloat16", ())
    clear = (m("float32", 10.0), m("bfloat16", 20.0), m("float16", 22.0))
    assert choose(clear, "bfloat16") == ("float16", ())
    wrong_rule = (m("float32", 10.0), m("bfloat16", 20.0, WRONG), m("float16", 10.5))
    assert choose(wrong_rule, "bfloat16") == ("float32", ("bfloat16",))


def test_a_cache_hit_skips_measuring(tiny_model_dir: Path, calls: list[str]) -> None:
    first = load_model(str(tiny_model_dir), AUTO)
    assert len(calls) == 3
    calls.clear()
    second = load_model(str(tiny_model_dir), AUTO)
    assert calls == []
    assert second.info.dtype == first.info.dtype
    assert str(second.model.dtype) == f"torch.{first.info.dtype}"


def test_a_cached_pick_is_loaded_directly(
    tiny_model_dir: Path, calls: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = json.loads((tiny_model_dir / "config.json").read_text(encoding="utf-8"))
    dtype_cache.remember(dtype_cache.cache_key(config), "float16", {"float16": 1.0})
    loaded = load_model(str(tiny_model_dir), AUTO)
    assert calls == []
    assert loaded.info.dtype == "float16"


@pytest.mark.parametrize("changed", ["cpu_name", "torch_version"])
def test_another_cpu_or_torch_misses_the_cache(
    tiny_model_dir: Path, calls: list[str], monkeypatch: pytest.MonkeyPatch, changed: str
) -> None:
    config = json.loads((tiny_model_dir / "config.json").read_text(encoding="utf-8"))
    before = dtype_cache.cache_key(config)
    load_model(str(tiny_model_dir), AUTO)
    assert len(calls) == 3
    calls.clear()
    monkeypatch.setattr(dtype_cache, changed, lambda: "something else")
    assert dtype_cache.cache_key(config) != before
    load_model(str(tiny_model_dir), AUTO)
    assert len(calls) == 3  # measured again
    assert len(entries()) == 2  # and remembered beside the old machine's pick


def test_the_key_names_the_models_shape(tiny_model_dir: Path) -> None:
    config = json.loads((tiny_model_dir / "config.json").read_text(encoding="utf-8"))
    wider = {**config, "intermediate_size": config["intermediate_size"] * 2}
    assert dtype_cache.cache_key(wider) != dtype_cache.cache_key(config)
    assert dtype_cache.cache_key({**config, "name_or_path": "x"}) == dtype_cache.cache_key(config)


@pytest.mark.parametrize(
    "damage", [b"{not json", b"[]", b'{"version": 1, "entries": 5}', b"\xff\xfe", b""]
)
def test_a_damaged_cache_is_replaced(tiny_model_dir: Path, calls: list[str], damage: bytes) -> None:
    path = dtype_cache.cache_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(damage)
    loaded = load_model(str(tiny_model_dir), AUTO)
    assert len(calls) == 3
    (entry,) = entries().values()
    assert entry["dtype"] == loaded.info.dtype


def test_a_nonsense_cached_dtype_is_measured_again(tiny_model_dir: Path, calls: list[str]) -> None:
    config = json.loads((tiny_model_dir / "config.json").read_text(encoding="utf-8"))
    dtype_cache.remember(dtype_cache.cache_key(config), "int3", {})
    load_model(str(tiny_model_dir), AUTO)
    assert len(calls) == 3


def test_explicit_dtype_skips_calibration(tiny_model_dir: Path, calls: list[str]) -> None:
    loaded = load_model(str(tiny_model_dir), LoadOptions(device="cpu", dtype="fp16", threads=1))
    assert calls == []
    assert loaded.info.dtype == "float16"
    assert not dtype_cache.cache_file().exists()


def test_a_model_too_large_to_convert_keeps_the_rule(
    tiny_model_dir: Path, calls: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    rule_is(monkeypatch, "float32")
    monkeypatch.setattr(calibration, "MAX_FLOAT32_BYTES", 1)
    loaded = load_model(str(tiny_model_dir), AUTO)
    assert calls == []
    assert loaded.info.dtype == "float32"


def test_cpu_name_reads_the_model_name(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9R14\n")
    assert dtype_cache.cpu_name(str(info)) == "AMD EPYC 9R14"
    assert dtype_cache.cpu_name(str(tmp_path / "missing"))  # the platform's answer, never ""


def test_a_pick_measured_on_a_busy_machine_is_used_but_not_remembered(
    tiny_model_dir: Path, calls: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(calibration, "_busy", lambda: "load average 12.0 on 2 cores")
    loaded = load_model(str(tiny_model_dir), AUTO)
    assert len(calls) == 3 and loaded.info.dtype in ("float32", "bfloat16", "float16")
    assert not dtype_cache.cache_file().exists()
    load_model(str(tiny_model_dir), AUTO)
    assert len(calls) == 6  # measured again


def test_measured_on_the_lean_step_with_the_models_tokens(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Calibration times the step replies run (the lean CPU step where it drives the model);
    its greedy tokens are the model's own forward's."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    ids = [1, 5, 7, 9, 11, 13, 17, 19]
    from llama_tui.engine.fast import lean

    built: list[object] = []

    original = lean.LeanForward

    class Counting(original):  # type: ignore[misc, valid-type]
        def __init__(self, m: object) -> None:
            built.append(m)
            super().__init__(m)

    monkeypatch.setattr(lean, "LeanForward", Counting)
    with_lean = calibration.measure_decode(model, ids, "float32")
    assert built == [model]
    monkeypatch.setattr(calibration, "lean_reason", lambda m: "not a Llama")
    without = calibration.measure_decode(model, ids, "float32")
    assert len(built) == 1
    assert with_lean.tokens == without.tokens and len(with_lean.tokens) == 15

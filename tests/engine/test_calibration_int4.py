"""`dtype auto`'s int4 candidate (engine/loading/calibration.py) on the tiny random Llama, with
a Q4_1 GGUF of its own weights written by the `gguf` package: measured and picked when it is
faster with the same greedy tokens, rejected when its tokens differ, remembered under a key
that names the GGUF source, and loaded as int4 from the cache.

Timings are faked where the pick matters; no test depends on how fast anything is.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType, GGUFWriter, quants

from llama_tui.core.backend import LoadOptions
from llama_tui.engine.loading import calibration, dtype_cache
from llama_tui.engine.loading.calibration import Measurement, Plan
from llama_tui.engine.quant import apply, cpu_load

RIGHT = (1, 2, 3)
WRONG = (1, 2, 4)
NAMES = {
    "q_proj": "attn_q",
    "k_proj": "attn_k",
    "v_proj": "attn_v",
    "o_proj": "attn_output",
    "gate_proj": "ffn_gate",
    "up_proj": "ffn_up",
    "down_proj": "ffn_down",
}


def _permute(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's converter order of q / k rows (what the reader undoes)."""
    rows = w.shape[0]
    return w.reshape(heads, 2, rows // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def q4_gguf_of(model: Any, path: Path) -> Path:
    """A llama GGUF holding `model`'s layer weights as Q4_1 (no embeddings: they stay dense)."""
    cfg = model.config
    writer = GGUFWriter(str(path), "llama")
    writer.add_uint32("llama.attention.head_count", cfg.num_attention_heads)
    writer.add_uint32("llama.attention.head_count_kv", cfg.num_key_value_heads)
    q41 = GGMLQuantizationType.Q4_1
    for i, layer in enumerate(model.model.layers):
        for part in (layer.self_attn, layer.mlp):
            for hf, gg in NAMES.items():
                lin = getattr(part, hf, None)
                if lin is None:
                    continue
                w = lin.weight.detach().float().numpy()
                if hf == "q_proj":
                    w = _permute(w, cfg.num_attention_heads)
                elif hf == "k_proj":
                    w = _permute(w, cfg.num_key_value_heads)
                writer.add_tensor(f"blk.{i}.{gg}.weight", quants.quantize(w, q41), raw_dtype=q41)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(autouse=True)
def _quiet_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(calibration, "_busy", lambda: None)  # remember picks however busy


@pytest.fixture
def tiny(tiny_model_dir: Path, tmp_path: Path) -> tuple[Any, Any, Path]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    return model, tok, q4_gguf_of(model, tmp_path / "tiny-q4_1.gguf")


def fake_measurements(
    monkeypatch: pytest.MonkeyPatch, table: dict[str, tuple[tuple[int, ...], float]]
) -> list[tuple[str, str | None]]:
    """(candidate, quant label of the model while measured) per measurement."""
    seen: list[tuple[str, str | None]] = []

    def fake(model: Any, ids: list[int], dtype: str) -> Measurement:
        seen.append((dtype, apply.quant_label(model)))
        tokens, rate = table[dtype]
        return Measurement(dtype, tokens, rate)

    monkeypatch.setattr(calibration, "measure_decode", fake)
    return seen


def test_a_q4_gguf_adds_the_int4_candidate_and_its_key(tiny: Any, tiny_model_dir: Path) -> None:
    _, _, gguf = tiny
    config = json.loads((tiny_model_dir / "config.json").read_text(encoding="utf-8"))
    kw: dict[str, Any] = {
        "device": "cpu",
        "requested": "auto",
        "rule": "bfloat16",
        "folder": tiny_model_dir,
        "config": config,
        "quantized": False,
        "device_map": None,
    }
    calibration.MIN_PARAMETERS, saved = 0, calibration.MIN_PARAMETERS
    try:
        plain = calibration.plan_auto(**kw)
        q4 = calibration.plan_auto(**kw, gguf=gguf)
    finally:
        calibration.MIN_PARAMETERS = saved
    assert plain.int4_gguf is None and q4.int4_gguf == gguf
    assert plain.key != q4.key and '"source": "gguf-q4"' in str(q4.key)


def test_int4_is_picked_when_faster_with_the_same_tokens(
    tiny: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, tok, gguf = tiny
    seen = fake_measurements(
        monkeypatch,
        {
            "float32": (RIGHT, 10.0),
            "bfloat16": (RIGHT, 12.0),
            "float16": (RIGHT, 20.0),
            "int4": (RIGHT, 40.0),
        },
    )
    plan = Plan("float32", "bfloat16", key="k-int4", int4_gguf=gguf)
    assert calibration.calibrate(model, tok, plan, None) == "int4"
    assert seen == [("float32", None), ("bfloat16", None), ("float16", None), ("int4", "int4")]
    assert apply.quant_label(model) == "int4"
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    with torch.no_grad():
        out = model.generate(input_ids=torch.tensor([[1, 2, 3]]), max_new_tokens=3, do_sample=False)
    assert out.shape == (1, 6)
    assert dtype_cache.lookup("k-int4") == "int4"


def test_int4_with_other_tokens_is_rejected_and_undone(
    tiny: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, tok, gguf = tiny
    fake_measurements(
        monkeypatch,
        {
            "float32": (RIGHT, 10.0),
            "bfloat16": (RIGHT, 10.5),
            "float16": (RIGHT, 20.0),
            "int4": (WRONG, 90.0),
        },
    )
    plan = Plan("float32", "bfloat16", key="k-wrong", int4_gguf=gguf)
    assert calibration.calibrate(model, tok, plan, None) == "float16"
    assert apply.quant_label(model) is None  # the dense layers are back
    assert {p.dtype for p in model.parameters()} == {torch.float16}


def test_the_int4_candidate_is_measured_for_real_from_the_gguf_codes(tiny: Any) -> None:
    """No fake: int4 decodes and is timed, and the codes it runs are the file's weights."""
    from llama_tui.engine.quant.gguf_source import read_linear_weights

    model, tok, gguf = tiny
    q41 = GGMLQuantizationType.Q4_1
    codes = read_linear_weights(gguf)
    for name in ("model.layers.0.self_attn.q_proj.weight", "model.layers.1.mlp.down_proj.weight"):
        w = model.get_parameter(name).detach().numpy()
        expected = torch.from_numpy(quants.dequantize(quants.quantize(w, q41), q41))
        assert float((codes[name].dequantize() - expected).abs().max()) == 0.0, name
    plan = Plan("float32", "bfloat16", key="k-real", int4_gguf=gguf)
    pick = calibration.calibrate(model, tok, plan, None)
    remembered = json.loads(dtype_cache.cache_file().read_text(encoding="utf-8"))
    (entry,) = remembered["entries"].values()
    assert "int4" in entry["tokens_per_s"] and entry["dtype"] == pick


def test_a_remembered_int4_pick_loads_as_int4() -> None:
    opts = LoadOptions(device="cpu", dtype="auto")
    gguf = Path("model.gguf")
    picked = cpu_load.requested(opts, "cpu", "int4", gguf, q4_gguf=True)
    assert picked is not None and picked.bits == 4 and picked.activations == "bfloat16"
    assert picked.gguf == gguf
    assert cpu_load.requested(opts, "cpu", "float16", gguf, q4_gguf=True) is None
    assert cpu_load.requested(opts, "cuda", "int4", gguf, q4_gguf=True) is None
    explicit = LoadOptions(device="cpu", dtype="float32", load_in_4bit=True)
    flagged = cpu_load.requested(explicit, "cpu", "float32", None, q4_gguf=False)
    assert flagged is not None and flagged.activations == "float32" and flagged.gguf is None

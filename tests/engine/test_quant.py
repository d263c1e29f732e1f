"""int4 / int8 weights on the CPU (engine.quant): GGUF blocks read bit for bit, the kernels
against dense matmuls of the same weights, and loading with them.

The GGUF files here are written by the `gguf` package (llama.cpp's own Python writer and
reference quantiser), so "bit for bit" means: our decoding equals `gguf.quants.dequantize`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType, GGUFWriter, quants

from llama_tui.core.backend import LoadOptions
from llama_tui.engine.loading.models import load_model
from llama_tui.engine.quant import apply, blocks
from llama_tui.engine.quant.gguf_file import read_gguf
from llama_tui.engine.quant.gguf_source import read_linear_weights, summarize
from llama_tui.engine.quant.linear import int4_linear, int8_linear

KINDS = {
    "Q4_0": GGMLQuantizationType.Q4_0,
    "Q4_1": GGMLQuantizationType.Q4_1,
    "Q8_0": GGMLQuantizationType.Q8_0,
}


def _write_gguf(path: Path, tensors: dict[str, tuple[np.ndarray, str]], heads: int = 4) -> None:
    """A llama-architecture GGUF holding `tensors` (name -> (float32 [N, K], block type))."""
    writer = GGUFWriter(str(path), "llama")
    writer.add_uint32("llama.attention.head_count", heads)
    writer.add_uint32("llama.attention.head_count_kv", heads // 2)
    writer.add_array("tokenizer.ggml.tokens", ["a", "bb", "ccc"])  # an array to skip
    for name, (weight, kind) in tensors.items():
        qtype = KINDS[kind]
        writer.add_tensor(name, quants.quantize(weight, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _per_block_max_error(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).abs().reshape(a.shape[0], -1, blocks.GROUP).amax(dim=-1)


@pytest.mark.parametrize("kind", ["Q4_0", "Q4_1", "Q8_0"])
def test_gguf_blocks_decode_bit_for_bit(tmp_path: Path, kind: str) -> None:
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((48, 96)).astype(np.float32)
    path = tmp_path / "w.gguf"
    _write_gguf(path, {"blk.0.attn_v.weight": (weight, kind)})
    got = read_linear_weights(path)["model.layers.0.self_attn.v_proj.weight"]
    reference = quants.dequantize(quants.quantize(weight, KINDS[kind]), KINDS[kind])
    err = _per_block_max_error(got.dequantize(), torch.from_numpy(reference))
    assert err.shape == (48, 3) and float(err.max()) == 0.0
    assert got.bits == (8 if kind == "Q8_0" else 4)


def test_gguf_q_and_k_rows_are_unpermuted_like_transformers(tmp_path: Path) -> None:
    """llama.cpp's converter interleaves each head's rotary halves; reading undoes it."""
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    processor = LlamaTensorProcessor({"num_attention_heads": 4, "num_key_value_heads": 2})
    rng = np.random.default_rng(1)
    q = rng.standard_normal((64, 64)).astype(np.float32)
    path = tmp_path / "qk.gguf"
    _write_gguf(path, {"blk.0.attn_q.weight": (q, "Q4_1"), "blk.0.attn_k.weight": (q[:32], "Q4_1")})
    got = read_linear_weights(path)
    deq = quants.dequantize(quants.quantize(q, KINDS["Q4_1"]), KINDS["Q4_1"])
    for name, gguf_name, rows in (("q_proj", "attn_q", 64), ("k_proj", "attn_k", 32)):
        ref = processor.process(deq[:rows], f"blk.0.{gguf_name}.weight").weights
        mine = got[f"model.layers.0.self_attn.{name}.weight"].dequantize()
        assert float(_per_block_max_error(mine, torch.from_numpy(ref)).max()) == 0.0


def test_gguf_header_reader_and_summary(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    w = rng.standard_normal((32, 64)).astype(np.float32)
    path = tmp_path / "s.gguf"
    _write_gguf(path, {"blk.0.ffn_up.weight": (w, "Q4_1"), "blk.0.ffn_down.weight": (w, "Q4_1")})
    parsed = read_gguf(path)
    assert parsed.fields["general.architecture"] == "llama"
    assert parsed.fields["tokenizer.ggml.tokens"] is None  # arrays are skipped
    assert [t.kind for t in parsed.tensors] == ["Q4_1", "Q4_1"]
    summary = summarize(path)
    assert summary is not None and summary.int4 and summary.linear_kind == "Q4_1"
    mixed = tmp_path / "m.gguf"
    _write_gguf(mixed, {"blk.0.ffn_up.weight": (w, "Q4_1"), "blk.0.ffn_down.weight": (w, "Q8_0")})
    summary = summarize(mixed)
    assert summary is not None and not summary.int4
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf")
    assert summarize(bad) is None


@pytest.mark.parametrize("kind", ["Q4_0", "Q4_1"])
def test_int4_kernel_matches_the_dequantized_weights(tmp_path: Path, kind: str) -> None:
    """Float32 activations: the kernel computes on exactly the GGUF's weights."""
    rng = np.random.default_rng(3)
    path = tmp_path / "k.gguf"
    _write_gguf(path, {"blk.0.ffn_up.weight": (rng.standard_normal((96, 128)).astype("f4"), kind)})
    weight = read_linear_weights(path)["model.layers.0.mlp.up_proj.weight"]
    x = torch.randn(3, 128)
    dense = x.double() @ weight.dequantize().double().T
    out32 = int4_linear(weight, None, torch.float32)(x)
    assert float((out32.double() - dense).abs().max()) < 1e-4
    out16 = int4_linear(weight, None, torch.bfloat16)(x.bfloat16())
    assert out16.dtype == torch.bfloat16
    assert float((out16.double() - dense).abs().max()) < 0.05 * float(dense.abs().max())


def test_int8_kernel_and_quantisers_stay_within_half_a_step() -> None:
    torch.manual_seed(0)
    w = torch.randn(64, 96)
    q4 = blocks.quantize_int4(w)
    step4 = q4.scale.unsqueeze(-1).expand(-1, -1, blocks.GROUP).reshape(64, 96)
    assert bool(((q4.dequantize() - w).abs() <= step4 / 2 + 1e-6).all())
    q8 = blocks.quantize_int8(w)
    assert bool(((q8.dequantize() - w).abs() <= q8.scale / 2 + 1e-6).all())
    x = torch.randn(2, 96)
    out = int8_linear(q8, None, torch.float32)(x)
    assert float((out - x @ q8.dequantize().T).abs().max()) < 1e-4


def test_swap_and_undo_restore_the_dense_layers() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 8))
    first = model[0]
    swap = apply.build_swap(model, 4)
    swap.redo()
    assert apply.quant_label(model) == "int4" and model[0] is not first
    assert model(torch.randn(1, 64)).shape == (1, 8)
    swap.undo()
    assert model[0] is first and apply.quant_label(model) is None


@pytest.mark.parametrize(("flag", "label"), [("load_in_4bit", "int4"), ("load_in_8bit", "int8")])
def test_load_in_4bit_and_8bit_on_cpu_use_torch_kernels(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, flag: str, label: str
) -> None:
    """On a CPU the flags no longer need bitsandbytes: the model loads and answers."""
    monkeypatch.setenv("LLAMA_TUI_HOME", str(tmp_path))
    loaded = load_model(str(tiny_model_dir), LoadOptions(device="cpu", threads=1, **{flag: True}))
    assert loaded.info.dtype == label
    assert apply.quant_label(loaded.model) == label
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        out = loaded.model.generate(input_ids=ids, max_new_tokens=4, do_sample=False)
    assert out.shape == (1, 8)


def test_dtype_int4_loads_int4_on_cpu_and_is_refused_elsewhere(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`--dtype int4` (also what --replay passes for a reply recorded as int4)."""
    from llama_tui.core.errors import ModelError
    from llama_tui.engine.loading.checks import check_options

    monkeypatch.setenv("LLAMA_TUI_HOME", str(tmp_path))
    loaded = load_model(str(tiny_model_dir), LoadOptions(device="cpu", dtype="int4", threads=1))
    assert loaded.info.dtype == "int4"
    assert {p.dtype for p in loaded.model.parameters()} == {torch.bfloat16}
    with pytest.raises(ModelError, match="CPU only") as info:
        check_options(LoadOptions(device="cuda", dtype="int4"), "cuda:0")
    assert "--load-in-4bit" in info.value.fix


def test_layers_built_from_a_gguf_are_kept_for_the_next_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(4)
    path = tmp_path / "c.gguf"
    up = rng.standard_normal((64, 96)).astype(np.float32)
    _write_gguf(path, {"blk.0.ffn_up.weight": (up, "Q4_1")})

    def model() -> torch.nn.Module:
        m = torch.nn.Module()
        m.up = torch.nn.Linear(96, 64, bias=True).to(torch.bfloat16)
        m.lm_head = torch.nn.Linear(64, 32, bias=False).to(torch.bfloat16)
        return m

    first = model()
    apply.quantize_model(first, 4, path)
    x = torch.randn(2, 96, dtype=torch.bfloat16)
    expected = first.lm_head(first.up(x))

    def no_build(*args: object) -> None:
        raise AssertionError("built again")

    real_build = apply._build
    monkeypatch.setattr(apply, "_build", no_build)
    second = model()  # other random weights: equal outputs mean the layers came from the file
    apply.quantize_model(second, 4, path)
    assert torch.equal(second.lm_head(second.up(x)), expected)
    assert apply.quant_label(second) == "int4"
    # A damaged file is rebuilt, not an error.
    monkeypatch.setattr(apply, "_build", real_build)
    for cached in (tmp_path / "llama_tui_home").rglob("*-int4-*.safetensors"):
        cached.write_bytes(b"damaged")
    third = model()
    apply.quantize_model(third, 4, path)
    assert apply.quant_label(third) == "int4"


def test_int4_replies_go_through_the_eager_fast_decoder_with_generates_tokens(
    tiny_model_dir: Path,
) -> None:
    """The decode-path policy sends CPU int4 to the FastDecoder (measured faster), and its
    greedy tokens are generate's."""
    import threading

    from llama_tui.core.params import GenerationParams
    from llama_tui.engine.fast.glue import FastPath, choose_fast_path

    assert choose_fast_path("cpu", "int4", compile=True).use
    loaded = load_model(str(tiny_model_dir), LoadOptions(device="cpu", dtype="int4", threads=1))
    fast = FastPath.create(loaded.model, compile=True, mode="auto", device_type="cpu")
    assert fast is not None and not fast.decoder.compile_enabled
    prompt = [1, 5, 7, 9, 11, 13]
    params = GenerationParams(do_sample=False, max_new_tokens=16)
    ids = list(fast.decoder.generate_ids(prompt, params, threading.Event()))
    x = torch.tensor([prompt])
    with torch.no_grad():
        out = loaded.model.generate(
            input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=16, do_sample=False
        )
    expected = out[0, len(prompt) :].tolist()
    assert ids == expected[: len(ids)] and len(ids) >= 1
    fast.close()

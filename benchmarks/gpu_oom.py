"""A real CUDA out-of-memory error in the middle of a reply, and recovery in the same process.

Usage (device machine):  PYTHONUNBUFFERED=1 python benchmarks/gpu_oom.py [--layers 16]

What it does, through the same `LocalBackend` the app uses:
1. builds a random-weight Llama (hidden 2048, bf16, 1 to 2 GB) on cuda:0 with a byte-level
   tokenizer made by the test suite's builder;
2. starts a long greedy reply; after 16 streamed chunks another "process" (a ballast thread
   here) takes every free byte of GPU memory, as a second job on a shared card would;
3. the next allocation of the decode loop fails with a real `torch.OutOfMemoryError`: we check
   that the engine reports it as an `OutOfMemoryError` whose fix names shorter context /
   fewer new tokens / 4-bit, that the partial text streamed so far is kept, and that the
   engine freed its cache (`memory_allocated` drops back);
4. the ballast is released and the next prompt is answered on the same, still-loaded model.

Prints a report, and writes it to $OUT/gpu_oom.md when OUT is set. Exit code 0 when every
step behaved, 1 otherwise. Without CUDA it says so and exits 0 (nothing to provoke).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GiB = 1024**3


def fill_device(torch: Any) -> list[Any]:
    """Allocate until nothing is left: big chunks first, then ever smaller ones."""
    ballast: list[Any] = []
    size = 1 * GiB
    while size >= 512:
        try:
            ballast.append(torch.empty(size, dtype=torch.uint8, device="cuda"))
        except torch.OutOfMemoryError:
            size //= 4
    return ballast


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=16)
    args = ap.parse_args()
    import torch

    if not torch.cuda.is_available():
        print(
            "no CUDA device: a real out-of-memory cannot be provoked here (see the "
            "fault-injection test tests/reliability/test_faults.py for the CPU version)"
        )
        return 0
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from llama_tui.core.backend import ChatMessage, LoadOptions
    from llama_tui.core.errors import GenerationError
    from llama_tui.core.params import GenerationParams
    from llama_tui.engine.local.backend import LocalBackend
    from tests.tiny_model import build_tiny_llama

    lines: list[str] = []

    def say(s: str) -> None:
        print(s, flush=True)
        lines.append(s)

    folder = build_tiny_llama(Path(tempfile.mkdtemp()) / "tok")
    tok = AutoTokenizer.from_pretrained(folder)
    cfg = LlamaConfig(
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=args.layers,
        num_attention_heads=16,
        num_key_value_heads=8,
        vocab_size=len(tok),
        max_position_embeddings=32768,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    t0 = time.perf_counter()
    with torch.device("cuda"):
        model = LlamaForCausalLM(cfg).to(torch.bfloat16).eval()
    model.generation_config.eos_token_id = None  # random weights: never stop early
    params_n = sum(p.numel() for p in model.parameters())
    say(f"# Real CUDA OOM during a reply ({torch.cuda.get_device_name(0)})\n")
    say(
        f"- model: random Llama, {params_n / 1e9:.2f} B params bf16, built in "
        f"{time.perf_counter() - t0:.1f} s; allocated {torch.cuda.memory_allocated() / GiB:.2f}"
        " GiB"
    )
    # compile off: CUDA graphs decode from a private memory pool that a second process
    # cannot take, so a mid-reply OOM is a property of the eager paths (a compiled reply
    # meets it at its next prefill instead, which phase 2 below also covers).
    backend = LocalBackend("oom-drill", LoadOptions(compile=False))
    backend.attach(model, tok, device="cuda:0")
    backend._eos_ids = frozenset()  # the tokenizer's EOS too: the reply must run until the OOM
    history = [ChatMessage("user", "Tell me a very long story about a small model.")]
    params = GenerationParams(do_sample=False, max_new_tokens=20000)
    cancel = threading.Event()
    gen = backend.stream(history, params, cancel)
    chunks: list[str] = []
    ballast: list[Any] = []
    error: GenerationError | None = None
    before_fill = 0
    try:
        for chunk in gen:
            chunks.append(chunk)
            if len(chunks) == 16:
                before_fill = torch.cuda.memory_allocated()
                ballast = fill_device(torch)
                free, total = torch.cuda.mem_get_info()
                say(
                    f"- after {len(chunks)} chunks: ballast took "
                    f"{sum(b.numel() for b in ballast) / GiB:.1f} GiB; free now "
                    f"{free / 2**20:.1f} MiB of {total / GiB:.0f} GiB"
                )
            elif len(chunks) > 400:
                cancel.set()  # decoding needed no new memory: not provoked mid-reply
    except GenerationError as e:
        error = e
    stats = gen.stats
    kind = type(error).__name__ if error else "none"
    say(f"- reply ended: {stats.stop_reason.value if stats else '?'}; error class {kind}")
    if error is not None:
        say(f"- message: {error.cause} | fix: {error.fix}")
    partial = "".join(chunks)
    say(f"- partial reply kept: {len(chunks)} chunks, {len(partial)} characters")
    after_err = torch.cuda.memory_allocated()
    say(
        f"- engine memory while ballast held: {before_fill / GiB:.3f} GiB before the fill, "
        f"{after_err / GiB:.3f} GiB after the error (ballast included: "
        f"{sum(b.numel() for b in ballast) / GiB:.1f} GiB)"
    )
    # Phase 2: a new prompt while the memory is still taken fails in its prefill; the
    # conversation is unchanged and the error says the same.
    cancel.clear()
    try:
        backend.stream(
            [ChatMessage("user", "word " * 3000)],
            GenerationParams(do_sample=False, max_new_tokens=8),
            cancel,
        ).text()
        prefill_error = "none"
    except GenerationError as e:
        prefill_error = type(e).__name__
    say(f"- a 3000-word prompt while the memory is taken: {prefill_error}")
    del ballast
    torch.cuda.empty_cache()
    t1 = time.perf_counter()
    again = backend.stream(
        [*history, ChatMessage("assistant", partial), ChatMessage("user", "Shorter, please.")],
        GenerationParams(do_sample=False, max_new_tokens=64),
        cancel,
    )
    text2 = again.text()
    s2 = again.stats
    say(
        f"- next prompt on the same model: {s2.stop_reason.value if s2 else '?'}, "
        f"{s2.generated_tokens if s2 else 0} tokens in {time.perf_counter() - t1:.2f} s, "
        f"{len(text2)} characters"
    )
    fix = (error.fix if error else "").lower()
    ok = (
        error is not None
        and kind == "OutOfMemoryError"
        and len(chunks) >= 16
        and any(w in fix for w in ("context", "max_new_tokens", "new tokens"))
        and "4-bit" in fix
        and prefill_error == "OutOfMemoryError"
        and s2 is not None
        and s2.generated_tokens > 0
    )
    say(f"\nresult: {'PASS' if ok else 'FAIL'}")
    backend.close()
    out = os.environ.get("OUT")
    if out:
        Path(out, "gpu_oom.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

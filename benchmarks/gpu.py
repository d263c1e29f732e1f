"""GPU decode speed at batch 1: `generate` vs the FastDecoder, as a fraction of bandwidth.

Usage (one call on the device machine, under 8 minutes on an H100/H200):
    PYTHONUNBUFFERED=1 python benchmarks/gpu.py [--quick] [--shapes 8b,135m]
        [--prompt 128] [--new 256] [--runs 3] [--compare-graphs]
    python benchmarks/gpu.py --cpu-tiny      # the same script on CPU with tiny shapes (tests it)

Builds random-weight Llama models directly on the device (no download; the shapes decide the
speed): the Llama-3.1-8B shape and the SmolLM2-135M shape, bf16. Measures the copy
bandwidth (2 GiB device-to-device copy, bytes read + written), then per shape:

  generate, default cache      the baseline (eager, DynamicCache)
  FastDecoder, first reply     served eagerly at once while the step compiles in the
                               background: time to first token and its decode rate
  FastDecoder compiled         after warm-up (compile time reported separately): a CUDA
                               graph per step, sampling inside, one host sync per token
  generate, static cache       transformers' own compiled path (not with --quick)

128-token prompt, 256 new tokens, greedy, EOS disabled; median of --runs; timers read after
a device sync (every token's id reaches the host before its timestamp). tok/s counts decode
only: (tokens - 1) / (last token time - first token time).

Correctness: greedy tokens of every path against eager `generate` on the same prompt. In
bf16 a random-weight model has near-ties among 128k logits (the gap between the two best is
often below bf16 resolution), so a different but equally valid kernel order may flip one;
the bf16 rows report the first divergence. The exact check runs in fp32 on the 135M shape
(compiled FastDecoder vs eager generate; TF32 off), where ties are ~1e5 times rarer.

Also checks that two prompts of different lengths in the same cache bucket do not recompile
(torch._dynamo counters). Prints progress lines as it goes (a timeout still shows partial
results) and the table last; writes it to $OUT/gpu_table.md when OUT is set.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

T0 = time.perf_counter()

SHAPES: dict[str, dict[str, Any]] = {
    "8b": dict(  # Llama-3.1-8B
        hidden_size=4096,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        intermediate_size=14336,
        vocab_size=128256,
        tie_word_embeddings=False,
    ),
    "135m": dict(  # SmolLM2-135M
        hidden_size=576,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        intermediate_size=1536,
        vocab_size=49152,
        tie_word_embeddings=True,
    ),
}
TINY: dict[str, dict[str, Any]] = {  # --cpu-tiny: same structure, seconds to run
    "8b": dict(
        SHAPES["8b"],
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=256,
        vocab_size=1024,
    ),
    "135m": dict(
        SHAPES["135m"],
        hidden_size=96,
        num_hidden_layers=2,
        num_attention_heads=3,
        num_key_value_heads=1,
        intermediate_size=192,
        vocab_size=512,
    ),
}


def say(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:6.1f}s] {msg}", flush=True)


@dataclass
class Row:
    shape: str
    path: str
    rates: list[float] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)
    check: str = ""
    note: str = ""

    @property
    def rate(self) -> float:
        return statistics.median(self.rates) if self.rates else float("nan")


class Timeline:
    """Per-token host timestamps; also a transformers streamer (put/end)."""

    def __init__(self) -> None:
        self.t_start = time.perf_counter()
        self.times: list[float] = []
        self.ids: list[int] = []
        self._prompt_seen = False

    def put(self, value: Any) -> None:
        if not self._prompt_seen:  # generate's first put() is the prompt
            self._prompt_seen = True
            return
        self.add(value.reshape(-1).tolist())  # .tolist() syncs: the id is on the host

    def end(self) -> None:
        pass

    def add(self, ids: list[int]) -> None:
        now = time.perf_counter()
        for i in ids:
            self.ids.append(int(i))
            self.times.append(now)

    @property
    def ttft(self) -> float:
        return self.times[0] - self.t_start if self.times else float("nan")

    def rate(self) -> float:
        n = len(self.times) - 1
        return n / (self.times[-1] - self.times[0]) if n > 0 else float("nan")


def divergence(ids: list[int], ref: list[int]) -> str:
    for i, (a, b) in enumerate(zip(ids, ref, strict=False)):
        if a != b:
            return f"first {i} same, differs at {i}"
    if len(ids) != len(ref):
        return f"length {len(ids)} vs {len(ref)}"
    return f"identical ({len(ids)})"


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="1 run, no generate+static rows")
    ap.add_argument("--cpu-tiny", action="store_true", help="CPU, tiny shapes (a self-test)")
    ap.add_argument("--shapes", default="8b,135m")
    ap.add_argument("--prompt", type=int, default=None, help="prompt tokens (default 128)")
    ap.add_argument("--new", type=int, default=None, help="new tokens (default 256)")
    ap.add_argument("--runs", type=int, default=None)
    ap.add_argument("--compare-graphs", action="store_true", help="also reduce-overhead (135m)")
    ap.add_argument("--no-fp32-check", action="store_true")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    os.environ.setdefault("LLAMA_TUI_HOME", "/tmp/llama_tui_bench/home")
    tiny = args.cpu_tiny
    prompt_len = args.prompt or (24 if tiny else 128)
    new = args.new or (32 if tiny else 256)
    runs = args.runs or (1 if args.quick else (2 if tiny else 3))

    import torch
    import transformers

    from llama_tui.core.params import GenerationParams
    from llama_tui.engine.fast.compile import configure_compile_cache
    from llama_tui.engine.fast.decoder import FastDecoder

    dev = torch.device("cpu" if tiny else "cuda")
    if dev.type == "cuda" and not torch.cuda.is_available():
        say("no CUDA device: use --cpu-tiny")
        return 2
    on_cuda = dev.type == "cuda"
    cache_root = configure_compile_cache()
    name = torch.cuda.get_device_name(0) if on_cuda else "CPU"
    say(
        f"{name}; torch {torch.__version__}, transformers {transformers.__version__}, "
        f"python {sys.version.split()[0]}; inductor cache {cache_root}"
    )
    torch.backends.cuda.matmul.allow_tf32 = False  # the fp32 check must be fp32
    torch.backends.cudnn.allow_tf32 = False

    def sync() -> None:
        if on_cuda:
            torch.cuda.synchronize()

    # ------------------------------------------------------------- bandwidth
    gib = 2 if on_cuda else 0.25
    src = torch.empty(int(gib * 2**30) // 2, dtype=torch.bfloat16, device=dev).normal_()
    dst = torch.empty_like(src)
    times = []
    for i in range(13):
        sync()
        t = time.perf_counter()
        dst.copy_(src)
        sync()
        if i >= 3:
            times.append(time.perf_counter() - t)
    bw = 2 * src.numel() * 2 / statistics.median(times)
    del src, dst
    say(f"copy bandwidth {bw / 1e12:.2f} TB/s ({gib} GiB copy, read + write, median of 10)")

    rows: list[Row] = []
    notes: list[str] = []
    limits: dict[str, tuple[float, float]] = {}  # shape -> (weight bytes, tok/s limit)
    greedy = GenerationParams(do_sample=False, max_new_tokens=new)
    cancel = threading.Event()
    g = torch.Generator().manual_seed(0)
    # ids below every shape's vocabulary (the tiny 135m shape has 512)
    prompt = torch.randint(10, 500 if tiny else 30000, (prompt_len,), generator=g).tolist()

    def build(shape: str, dtype: Any) -> Any:
        from transformers import LlamaConfig, LlamaForCausalLM

        spec = (TINY if tiny else SHAPES)[shape]
        cfg = LlamaConfig(**spec, max_position_embeddings=4096, bos_token_id=1)
        cfg.eos_token_id = None  # random weights: never stop early, every path runs `new`
        cfg.pad_token_id = None
        torch.manual_seed(0)
        old = torch.get_default_dtype()
        torch.set_default_dtype(dtype)  # allocate in the target dtype, on the device
        try:
            with torch.device(dev):
                model = LlamaForCausalLM(cfg)
        finally:
            torch.set_default_dtype(old)
        model.eval()
        model.generation_config.eos_token_id = None
        model.generation_config.pad_token_id = None
        sync()
        return model

    def weight_bytes(model: Any) -> int:
        emb = model.get_input_embeddings().weight
        head = model.get_output_embeddings().weight
        total = sum(p.numel() * p.element_size() for p in model.parameters())
        if head.data_ptr() != emb.data_ptr():
            total -= emb.numel() * emb.element_size()  # a lookup reads one row, not the table
        return total

    def run_generate(model: Any, n: int, **kw: Any) -> Timeline:
        x = torch.tensor([prompt], device=dev)
        tl = Timeline()
        with torch.no_grad():
            model.generate(
                input_ids=x,
                attention_mask=torch.ones_like(x),
                max_new_tokens=n,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                streamer=tl,
                **kw,
            )
        sync()
        return tl

    def run_fast(dec: Any, p: list[int] | None = None, n: int = new, reuse: bool = False) -> Any:
        tl = Timeline()
        for i in dec.generate_ids(
            p or prompt, greedy.with_changes(max_new_tokens=n), cancel, reuse
        ):
            tl.add([i])
        return tl

    def measure(row: Row, fn: Callable[[], Timeline]) -> None:
        for _ in range(runs):
            tl = fn()
            row.rates.append(tl.rate())
            row.ids = tl.ids
        each = ", ".join(f"{r:.1f}" for r in row.rates)
        say(f"  {row.shape} {row.path}: {row.rate:.1f} tok/s ({each})")

    def release() -> None:
        torch._dynamo.reset()  # compiled code holds the model
        gc.collect()
        if on_cuda:
            torch.cuda.empty_cache()

    def guarded(label: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception as e:  # keep going: one call must bring back as much as it can
            say(f"  FAILED {label}: {type(e).__name__}: {e}")
            traceback.print_exc(limit=-4)  # the innermost frames; keep the log short
            notes.append(f"{label} failed: {type(e).__name__}: {str(e)[:200]}")

    def bucket_check(shape: str, dec: Any) -> None:
        from torch._dynamo.utils import counters

        before = dict(counters["stats"])
        lens = (prompt_len - prompt_len // 4, prompt_len + prompt_len // 8)  # same bucket
        steps = []
        for k in lens:
            p = (prompt * 2)[:k]
            run_fast(dec, p)
            steps.append(dec.last_stats.steps_by_path)
        after = dict(counters["stats"])
        new_graphs = after.get("unique_graphs", 0) - before.get("unique_graphs", 0)
        msg = (
            f"bucket check ({shape}): prompts of {lens[0]} and {lens[1]} tokens, bucket "
            f"{dec.last_stats.bucket}: {new_graphs} new compiled graphs; steps {steps}"
        )
        say("  " + msg)
        notes.append(msg + (" -> OK" if new_graphs == 0 else " -> RECOMPILED"))

    def run_shape(shape: str, dtype: Any) -> None:
        say(f"== {shape}: building random {str(dtype).split('.')[-1]} model on {dev}")
        model = build(shape, dtype)
        wb = weight_bytes(model)
        limits[shape] = (wb, bw / wb)
        say(f"  weights read per token {wb / 1e9:.3f} GB -> limit {bw / wb:,.0f} tok/s")

        base = Row(shape, "generate, default cache")
        rows.append(base)

        def do_base() -> None:
            run_generate(model, 8)  # warm-up (no compile on this path)
            measure(base, lambda: run_generate(model, new))

        guarded(f"{shape} generate", do_base)

        fast = Row(shape, "FastDecoder compiled")
        rows.append(fast)

        def do_fast() -> None:
            dec = FastDecoder(model, compile=True)
            t = time.perf_counter()
            tl = run_fast(dec)  # starts the background compile, served eagerly meanwhile
            first = Row(shape, "FastDecoder, first reply (eager while compiling)")
            first.rates, first.ids = [tl.rate()], tl.ids
            first.note = f"TTFT {tl.ttft * 1e3:.0f} ms; steps {dec.last_stats.steps_by_path}"
            first.check = divergence(tl.ids, base.ids) if base.ids else ""
            rows.insert(rows.index(fast), first)
            say(f"  first reply: TTFT {tl.ttft * 1e3:.0f} ms, {tl.rate():.1f} tok/s, "
                f"{dec.last_stats.steps_by_path}")  # fmt: skip
            ok = dec.wait_ready(timeout=540)
            info = dec.variant_info()
            say(f"  compiled: ready={ok} after {time.perf_counter() - t:.0f} s; {info}")
            from torch._dynamo.utils import counters

            g0 = counters["stats"].get("unique_graphs", 0)
            measure(fast, lambda: run_fast(dec))
            g1 = counters["stats"].get("unique_graphs", 0)
            if g1 != g0:  # the live cache must hit the code compiled on the scratch cache
                notes.append(f"{shape}: {g1 - g0} recompiles in the decoding thread (a stall)")
            cs = info[0]["compile_s"] if info else None
            fast.note = (
                f"compile {cs if cs is None else round(cs)} s (background); "
                f"steps {dec.last_stats.steps_by_path}"
            )
            fast.check = divergence(fast.ids, base.ids) if base.ids else ""
            bucket_check(shape, dec)
            dec.close()

        guarded(f"{shape} FastDecoder", do_fast)

        if args.compare_graphs and shape == "135m":
            ro = Row(shape, "FastDecoder, inductor reduce-overhead graphs")
            rows.append(ro)

            def do_ro() -> None:
                d2 = FastDecoder(model, compile=True, graphs="inductor")
                d2.warm_up(prompt_len, greedy=True, max_new_tokens=new)
                d2.wait_ready(timeout=400)
                run_fast(d2)
                measure(ro, lambda: run_fast(d2))
                ro.note = f"compile {d2.variant_info()[0]['compile_s']} s"
                ro.check = divergence(ro.ids, base.ids) if base.ids else ""
                d2.close()

            guarded(f"{shape} reduce-overhead", do_ro)

        if not args.quick:
            st = Row(shape, "generate, static cache (transformers auto-compile)")
            rows.append(st)

            def do_static() -> None:
                t = time.perf_counter()
                run_generate(model, new, cache_implementation="static")  # compiles on CUDA
                st.note = f"first call {time.perf_counter() - t:.0f} s (compile)"
                measure(st, lambda: run_generate(model, new, cache_implementation="static"))
                st.check = divergence(st.ids, base.ids) if base.ids else ""

            guarded(f"{shape} generate static", do_static)
        if on_cuda:
            peak = torch.cuda.max_memory_allocated() / 2**30
            notes.append(f"{shape}: peak GPU memory {peak:.1f} GiB")
            torch.cuda.reset_peak_memory_stats()

    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    for shape in shapes:
        dt = torch.float32 if tiny else torch.bfloat16
        guarded(shape, lambda shape=shape, dt=dt: run_shape(shape, dt))
        release()  # run_shape's locals (the model, decoders) are gone: free the memory

    if not args.no_fp32_check and not tiny and "135m" in shapes:
        say("== exact check: 135m shape in fp32, FastDecoder compiled vs eager generate")

        def do_fp32() -> None:
            model = build("135m", torch.float32)
            ref = run_generate(model, new).ids
            dec = FastDecoder(model, compile=True)
            dec.warm_up(prompt_len, greedy=True, max_new_tokens=new)
            dec.wait_ready(timeout=400)
            tl = run_fast(dec)
            msg = f"fp32 135m greedy, compiled+graph vs eager generate: {divergence(tl.ids, ref)}"
            msg += f"; steps {dec.last_stats.steps_by_path}"
            say("  " + msg)
            notes.append(msg)
            dec.close()

        guarded("fp32 check", do_fp32)
        release()

    # ------------------------------------------------------------------ table
    lines = [
        f"{name}, torch {torch.__version__}, transformers {transformers.__version__}; "
        f"copy bandwidth {bw / 1e12:.2f} TB/s; {prompt_len}-token prompt, {new} new tokens, "
        f"greedy, median of {runs}",
        "",
        "| shape | path | tok/s | of BW limit | vs generate | greedy vs eager generate | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if not r.rates:
            continue
        wb, limit = limits[r.shape]
        base_rate = next(
            (x.rate for x in rows if x.shape == r.shape and x.path.startswith("generate, def")),
            float("nan"),
        )
        lines.append(
            f"| {r.shape} ({wb / 1e9:.2f} GB, limit {limit:,.0f}) | {r.path} | {r.rate:,.1f} | "
            f"{100 * r.rate / limit:.1f}% | {r.rate / base_rate:.2f}x | {r.check} | {r.note} |"
        )
    lines.append("")
    lines += [f"- {n}" for n in notes]
    lines.append(f"- total wall time {time.perf_counter() - T0:.0f} s")
    table = "\n".join(lines)
    print("\n" + table, flush=True)
    out = os.environ.get("OUT")
    if out:
        Path(out, "gpu_table.md").write_text(table + "\n")
    failed = [n for n in notes if "failed" in n or "RECOMPILED" in n or "stall" in n]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

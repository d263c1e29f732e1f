"""Does our int4 path compute what llama.cpp computes from the same Q4_1 file?

Usage:
    python benchmarks/agreement.py [--tokens 256] [--threads 2] [--no-llama-cpp] [--out FILE]

The demo model (SmolLM2-135M-Instruct, Q4_1 GGUF) is loaded the way the app loads it, in
float32, float16 and our int4 (`--load-in-4bit` on the CPU: the GGUF's own 4-bit codes in
torch's int4 kernel, bf16 activations, int8 head). For each path, against llama.cpp
(llama-cpp-python, benchmark-only, on the same file):

- greedy: the first index where the path's greedy tokens differ from llama.cpp's, over
  `--tokens` tokens of a chat reply;
- top-1 agreement: llama.cpp's greedy sequence is fed to our model (teacher forcing) and we
  count the positions where our most likely next token is llama.cpp's. One early near-tie
  flipped by llama.cpp's quantised activations would make every later greedy token differ,
  so this, not the first divergence, says how close the two computations are;
- perplexity on benchmarks/data/perplexity.txt (a fixed text of ours, ~1,000 tokens).

The float32 path holds the same quantised weights dequantized exactly (transformers' GGUF
reader; `engine.quant` reads the same bits), so it is the reference for "same weights".
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import warnings
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TEXT = HERE / "data" / "perplexity.txt"
PATHS = {
    "float32": {"dtype": "float32"},
    "float16": {"dtype": "float16"},
    "int4 (ours)": {"load_in_4bit": True},
}


def load(name: str, threads: int) -> Any:
    from llama_tui.core.backend import LoadOptions
    from llama_tui.engine.loading.models import load_model

    opts = LoadOptions(device="cpu", threads=threads, **PATHS[name])  # type: ignore[arg-type]
    return load_model("demo", opts)


def teacher_forced(model: Any, ids: list[int]) -> tuple[list[int], list[float]]:
    """Our top-1 next token after each position of `ids`, and the log-probability of the
    actual next token (float32 log-softmax of the logits)."""
    import torch

    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].float()
    logp = torch.log_softmax(logits, dim=-1)
    nxt = torch.tensor(ids[1:])
    return logits.argmax(-1).tolist(), logp[torch.arange(len(nxt)), nxt].tolist()


def first_divergence(a: list[int], b: list[int]) -> str:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return str(i)
    return "none"


def agreement(top1: list[int], seq: list[int], start: int) -> float:
    """Share of positions start-1 .. len-2 whose top-1 is the next token of `seq`."""
    hits = [top1[i] == seq[i + 1] for i in range(start - 1, len(seq) - 1)]
    return sum(hits) / len(hits)


def perplexity(logprobs: list[float]) -> float:
    return math.exp(-sum(logprobs) / len(logprobs))


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-llama-cpp", action="store_true")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    os.environ.setdefault("LLAMA_TUI_HOME", "/tmp/llama_tui_bench/home")
    sys.path.insert(0, str(HERE))
    import torch
    from cpu import PROMPT, LlamaWorker, demo_gguf, greedy_ids  # benchmarks/cpu.py's

    torch.set_num_threads(args.threads)
    models = {name: load(name, args.threads) for name in PATHS}
    tok = models["float32"].tokenizer
    prompt = [
        int(i)
        for i in tok.apply_chat_template(
            [{"role": "user", "content": PROMPT}], add_generation_prompt=True, return_dict=False
        )
    ]
    text_ids = [int(i) for i in tok(TEXT.read_text(encoding="utf-8"))["input_ids"]][:1000]
    n = args.tokens
    print(f"{len(prompt)}-token prompt, {n} greedy tokens; text {len(text_ids)} tokens", flush=True)

    rows: dict[str, dict[str, str]] = {}
    ref_seq: list[int] | None = None
    llama_note = ""
    if not args.no_llama_cpp:
        worker = LlamaWorker(demo_gguf(), args.threads, logits_all=True)
        if worker.ok:
            gen = worker.run(prompt, n).ids
            ref_seq = prompt + gen
            top1, _ = worker.score(ref_seq)
            _, text_lp = worker.score(text_ids)
            rows["llama.cpp Q4_1"] = {
                "greedy": gen_str(gen),
                "first": "(reference)",
                "agree": f"{agreement(top1, ref_seq, len(prompt)):.3f} (self)",
                "ppl": f"{perplexity(text_lp):.3f}",
            }
        else:
            llama_note = f"no llama.cpp: {worker.error}"
    fp32_seq: list[int] | None = None
    for name, loaded in models.items():
        model = loaded.model
        gen = greedy_ids(model, prompt, n)
        if name == "float32":
            fp32_seq = prompt + gen
        row = {"greedy": gen_str(gen)}
        if ref_seq is not None:
            row["first"] = first_divergence(gen, ref_seq[len(prompt) :])
            top1, _ = teacher_forced(model, ref_seq)
            row["agree"] = f"{agreement(top1, ref_seq, len(prompt)):.3f}"
        assert fp32_seq is not None
        top1, _ = teacher_forced(model, fp32_seq)
        row["agree32"] = f"{agreement(top1, fp32_seq, len(prompt)):.3f}"
        row["first32"] = first_divergence(gen, fp32_seq[len(prompt) :])
        _, text_lp = teacher_forced(model, text_ids)
        row["ppl"] = f"{perplexity(text_lp):.3f}"
        row["dtype"] = loaded.info.dtype
        rows[name] = row
        print(f"  {name}: {row}", flush=True)
    if ref_seq is not None and fp32_seq is not None:
        # llama.cpp's own agreement with the float32 sequence, for the symmetric view.
        worker2 = LlamaWorker(demo_gguf(), args.threads, logits_all=True)
        top1, _ = worker2.score(fp32_seq)
        rows["llama.cpp Q4_1"]["agree32"] = f"{agreement(top1, fp32_seq, len(prompt)):.3f}"
        rows["llama.cpp Q4_1"]["first32"] = first_divergence(
            ref_seq[len(prompt) :], fp32_seq[len(prompt) :]
        )

    lines = [
        f"Agreement on the demo model's Q4_1 GGUF, {len(prompt)}-token chat prompt, {n} greedy "
        f"tokens; perplexity over {len(text_ids)} tokens of benchmarks/data/perplexity.txt; "
        f"torch {torch.__version__}, {args.threads} threads",
        "",
        "| path | ModelInfo dtype | greedy: first divergence vs llama.cpp | top-1 agreement "
        "with llama.cpp (teacher-forced) | greedy: first divergence vs fp32 | top-1 agreement "
        "with fp32 (teacher-forced) | perplexity |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        lines.append(
            f"| {name} | {row.get('dtype', 'q4_1')} | {row.get('first', '-')} | "
            f"{row.get('agree', '-')} | {row.get('first32', '-')} | {row.get('agree32', '-')} | "
            f"{row['ppl']} |"
        )
    if llama_note:
        lines += ["", llama_note]
    table = "\n".join(lines)
    print()
    print(table, flush=True)
    if args.out:
        args.out.write_text(table + "\n")


def gen_str(ids: list[int]) -> str:
    return f"{len(ids)} tokens"


if __name__ == "__main__":
    main()

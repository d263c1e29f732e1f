"""Assisted decoding on the demo model (SmolLM2-135M): plain vs prompt lookup vs a draft model.

Usage:
    python benchmarks/assisted.py [--runs 3] [--dtype auto,bfloat16] [--threads 2]
        [--draft-layers N] [--sampled] [--out FILE.md]

One process; per dtype in `--dtype` (`auto`: what the app's `dtype auto` picks) a line with
the cost of an 11-token verify step against a one-token step, then one table per prompt, every
path measured round-robin (`--runs` times after one untimed warm-up; the median is reported),
so machine noise hits all of them alike, and what `prompt_lookup = auto` does with the prompt:

* `generate`: plain greedy `model.generate`, the reference.
* `generate + prompt lookup`: the same call with the app's prompt-lookup arguments
  (`engine.local.assisted.choose`, `prompt_lookup = on`).
* `fast decoder (eager)`: `engine.fast.FastDecoder`, the path the app takes where its policy
  says so (CPU float16), for the question "is assisted generate faster than the fast path?".
* `generate + draft` (with `--draft-layers N`): the demo truncated to its first N layers (plus
  its final norm and head) as `assistant_model`. No smaller model with the demo's tokenizer is
  available offline, and the demo as its own draft would only measure overhead (it accepts
  everything). A truncated model is a real draft with the same tokenizer, but an untrained one:
  read its row as "what a poor draft costs", not as what a trained small sibling would give.
* With `--sampled` (temperature 0.7, top-p 0.9, fixed seed): plain vs prompt lookup, speed
  only (sampled tokens differ by construction).

Prompts: a repeat-heavy "rewrite this code with one change" chat prompt, and a story prompt.
Replies end at EOS or `MAX_NEW_TOKENS`. Decode tok/s = tokens after the first step / time
after the first step (assisted steps hand over several tokens at once). "greedy" compares each
path's tokens with plain `generate` (a trailing EOS aside): "same" or the first differing
index. "tok/step" is the tokens per main-model step (1.0 without assistance).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

MAX_NEW_TOKENS = 128

CODE = '''def parse_config(path):
    """Read a key=value config file into a dict."""
    result = {}
    with open(path) as handle:
        for number, line in enumerate(handle, start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if "=" not in line:
                raise ValueError(f"{path}:{number}: expected key=value")
            key, value = line.split("=", 1)
            result[key.strip()] = value.strip()
    return result
'''
PROMPTS = {
    "code rewrite": "Rewrite this Python function so that it also skips lines starting with "
    "';'. Output the whole function.\n\n```python\n" + CODE + "```",
    "story": "Write a long, detailed story about a dragon who learns to bake bread.",
}


class Timeline:
    """A `generate` streamer (and a plain list) that timestamps each batch of ids."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.batches: list[tuple[float, int]] = []
        self._prompt = True

    def put(self, value: Any) -> None:
        if self._prompt:  # generate's first put() is the prompt
            self._prompt = False
            return
        self.add(value.reshape(-1).tolist())

    def end(self) -> None:
        pass

    def add(self, ids: list[int]) -> None:
        self.batches.append((time.perf_counter(), len(ids)))
        self.ids.extend(int(i) for i in ids)

    def decode_rate(self) -> float:
        if len(self.batches) < 2:
            return float("nan")
        (t0, n0), (t1, _) = self.batches[0], self.batches[-1]
        return (len(self.ids) - n0) / (t1 - t0)

    def per_step(self) -> float:
        return len(self.ids) / max(1, len(self.batches))


@dataclass
class Row:
    name: str
    run: Callable[[], Timeline]
    greedy: bool = True
    rates: list[float] = field(default_factory=list)
    steps: list[float] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)


def truncated_draft(model: Any, layers: int) -> Any:
    """The model's first `layers` decoder layers, its final norm and head: a same-tokenizer
    draft (untrained as such)."""
    draft = copy.deepcopy(model)
    draft.model.layers = draft.model.layers[:layers]
    draft.config.num_hidden_layers = layers
    for attr in ("layer_types",):
        value = getattr(draft.config, attr, None)
        if isinstance(value, list):
            setattr(draft.config, attr, value[:layers])
    return draft


def verify_cost(model: Any, tokens: int, reps: int = 5) -> float:
    """Time of one forward over `tokens` new tokens / over 1, after a 100-token prefix (median):
    what a verify step costs against a plain decode step."""
    import torch
    from transformers import DynamicCache

    def once(n: int) -> float:
        cache = DynamicCache(config=model.config)
        with torch.inference_mode():
            model(input_ids=torch.arange(100)[None] + 1000, cache=cache)
            t0 = time.perf_counter()
            model(input_ids=torch.arange(n)[None] + 2000, cache=cache)
            return time.perf_counter() - t0

    ones, many = [], []
    for _ in range(reps):
        ones.append(once(1))
        many.append(once(tokens))
    return statistics.median(many) / statistics.median(ones)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown CPU"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dtype", default="auto,bfloat16", help="comma-separated: one table each")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--draft-layers", type=int, default=0, help="0: no draft row")
    ap.add_argument("--sampled", action="store_true", help="add sampled rows (speed only)")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")

    import torch

    lines = [
        f"# Assisted decoding, demo model (SmolLM2-135M) on {cpu_name()}, "
        f"{args.threads} threads, torch {torch.__version__}",
        "",
        f"Median of {args.runs} runs, round-robin. Command: python benchmarks/assisted.py "
        + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v not in (False, "")
        ),
        "",
    ]
    for dtype in args.dtype.split(","):
        lines += run_dtype(dtype.strip(), args)
        print("\n".join(lines), flush=True)
    report = "\n".join(lines)
    print("\n" + report)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.write(report + "\n")


def run_dtype(requested: str, args: argparse.Namespace) -> list[str]:
    import torch

    from llama_tui.core.backend import LoadOptions
    from llama_tui.core.params import GenerationParams
    from llama_tui.engine.fast.decoder import FastDecoder
    from llama_tui.engine.fast.glue import choose_fast_path
    from llama_tui.engine.fast.lean import lean_reason
    from llama_tui.engine.loading import models
    from llama_tui.engine.local import assisted
    from llama_tui.engine.local.sampling import generate_sampling_kwargs

    loaded = models.load_model(
        "demo", LoadOptions(dtype=requested, threads=args.threads, compile=False)
    )
    model, tok = loaded.model, loaded.tokenizer
    dtype = loaded.info.dtype  # "int4" for int4 weights (their activations are bfloat16)
    policy = choose_fast_path("cpu", dtype, compile=True, lean=lean_reason(model) is None)
    lookup = assisted.choose("on", GenerationParams(do_sample=False), draft=None, unsupported=None)
    assert lookup is not None
    draft = truncated_draft(model, args.draft_layers) if args.draft_layers else None
    decoder = FastDecoder(model, compile=False)
    greedy = GenerationParams(do_sample=False, max_new_tokens=MAX_NEW_TOKENS)
    sampled = GenerationParams(
        do_sample=True, temperature=0.7, top_p=0.9, seed=1234, max_new_tokens=MAX_NEW_TOKENS
    )
    cost = verify_cost(model, assisted.PROMPT_LOOKUP_TOKENS + 1)

    class NoStop:
        def is_set(self) -> bool:
            return False

    lines = [
        f"## dtype {dtype}" + (" (what dtype auto picked)" if requested == "auto" else ""),
        "",
        f"The app's fast decoder at {dtype} on CPU: {'used' if policy.use else 'not used'} "
        f"({policy.why}). A verify step of {assisted.PROMPT_LOOKUP_TOKENS + 1} tokens costs "
        f"{cost:.1f}x a one-token decode step.",
        "",
    ]
    for title, text in PROMPTS.items():
        ids = tok.apply_chat_template(
            [{"role": "user", "content": text}],
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
        )["input_ids"]
        prompt = torch.tensor([list(ids)])

        def gen(extra: dict[str, Any], params: GenerationParams, prompt: Any = prompt) -> Timeline:
            tl = Timeline()
            if params.seed is not None:
                torch.manual_seed(params.seed)
            with torch.inference_mode():
                model.generate(
                    prompt,
                    attention_mask=torch.ones_like(prompt),
                    max_new_tokens=params.max_new_tokens,
                    streamer=tl,
                    **generate_sampling_kwargs(params),
                    **extra,
                )
            return tl

        def fast(params: GenerationParams = greedy, ids: tuple[int, ...] = tuple(ids)) -> Timeline:
            tl = Timeline()
            for t in decoder.generate_ids(list(ids), params, NoStop(), reuse_prefix=False):
                tl.add([t])
            return tl

        rows = [
            Row("generate", lambda: gen({}, greedy)),
            Row("generate + prompt lookup", lambda: gen(lookup.kwargs, greedy)),
            Row("fast decoder (eager)", fast),
        ]
        if draft is not None:
            rows.append(
                Row(
                    f"generate + draft (first {args.draft_layers} layers)",
                    lambda: gen({"assistant_model": draft}, greedy),
                )
            )
        if args.sampled:
            rows += [
                Row("generate, sampled", lambda: gen({}, sampled), greedy=False),
                Row(
                    "generate + prompt lookup, sampled",
                    lambda: gen(lookup.kwargs, sampled),
                    greedy=False,
                ),
            ]
        for row in rows:
            row.ids = row.run().ids  # warm-up; its tokens are compared
        for i in range(args.runs):
            for row in rows:
                tl = row.run()
                row.rates.append(tl.decode_rate())
                row.steps.append(tl.per_step())
                print(
                    f"  [{dtype} {title} run {i + 1}] {row.name}: {row.rates[-1]:.1f} tok/s",
                    file=sys.stderr,
                    flush=True,
                )
        ref = rows[0]
        base = statistics.median(ref.rates)
        eos = set(decoder.eos_ids)
        for row in rows:  # the fast decoder ends at EOS without yielding it; generate keeps it
            while row.ids and row.ids[-1] in eos:
                row.ids.pop()
        lines += [
            f"### {title} ({len(ids)} prompt tokens, {len(ref.ids)} reply tokens greedy)",
            "",
            "| path | tok/s | vs generate | tok/step | greedy |",
            "|---|---|---|---|---|",
        ]
        for row in rows:
            rate = statistics.median(row.rates)
            if not row.greedy:
                same = "(sampled)"
            elif row.ids == ref.ids:
                same = "same"
            else:
                first = next(
                    (i for i, (a, b) in enumerate(zip(row.ids, ref.ids, strict=False)) if a != b),
                    min(len(row.ids), len(ref.ids)),
                )
                same = f"differs at {first}"
            lines.append(
                f"| {row.name} | {rate:.1f} | {rate / base:.2f}x | "
                f"{statistics.median(row.steps):.2f} | {same} |"
            )
        auto = assisted.choose("auto", greedy, draft=None, unsupported=None, last_chars=len(text))
        lines += [
            "",
            f"`prompt_lookup = auto` on a CPU ({len(text)} characters in the message): "
            + ("prompt lookup" if auto is not None else "unassisted"),
            "",
        ]
        print("\n".join(lines[-len(rows) - 7 :]), flush=True)
    return lines


if __name__ == "__main__":
    main()

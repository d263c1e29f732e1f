"""The measured `dtype auto` on a CPU: time a few greedy decode steps in each dtype, keep the
fastest whose tokens match float32's.

Which dtype decodes fastest on a CPU is not a rule one can write down: on a 2-core AMD EPYC with
AVX-512 (no AMX) the demo model decodes fp16 1.7-2.4x as fast as bf16, on an Intel with AMX
the two are close, and without native bf16 instructions bf16 is the slowest. So on the first load
of a model on a machine (`--device cpu` or auto landing on the CPU, `--dtype auto`) the model is
loaded in float32 and `calibrate` converts it in place to each candidate, decodes a fixed prompt
greedily and times the steps. A candidate whose tokens differ from float32's is rejected. The
pick is remembered (`dtype_cache`), so later loads go straight to it; `--dtype X` skips all this.

When the weights come from a Q4_0 / Q4_1 GGUF (the bundled demo is Q4_1), one more candidate
is measured: `int4`, the GGUF's own 4-bit codes run by torch's int4 kernel with bfloat16
activations and an int8 output head (`engine.quant`). Its reference is the same float32 model,
which holds exactly those weights dequantized, so a pick of int4 means its greedy tokens equal
those of the quantized weights computed in float32.

Each candidate is timed on the decode step replies will use: the fast decoder's lean CPU
step (`engine.fast.lean`) where it drives the model, else the model's own forward. Whether the
decoder or `generate` serves a reply is the decoder's policy (`engine.fast.glue`), not measured
here.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llama_tui.core.backend import LoadStage, ProgressCallback
from llama_tui.engine.fast.lean import lean_reason
from llama_tui.engine.loading import dtype_cache
from llama_tui.engine.loading.specs import emit_progress
from llama_tui.engine.local.generate_job import cache_kwarg
from llama_tui.engine.quant.apply import Swap

log = logging.getLogger(__name__)

CANDIDATES = ("float32", "bfloat16", "float16")  # float32 first: it is the reference
INT4 = "int4"  # the extra candidate for a Q4 GGUF; runs with bfloat16 activations
INT4_ACTIVATIONS = "bfloat16"
PROMPT_TOKENS = 8
WARMUP_STEPS = 2  # decode steps run untimed first: the first steps of a dtype pay for setup
TIMED_STEPS = 12
# Measuring converts the model in place: float32 weights plus one candidate copy at a time, so
# up to 1.5x the float32 size in RAM. Larger models keep the rule's dtype.
MAX_FLOAT32_BYTES = 2 * 1024**3
# Below this a decode step is dominated by Python overhead, not by the weights' dtype: the
# timing says nothing and the pick would flip with noise. Such models keep the rule's dtype.
MIN_PARAMETERS = 50_000_000
# Timing noise flips the order of close candidates from one measurement to the next. The rule's
# dtype (`device.dtype_name`: bf16 on CPUs with native bf16, else fp32) is what users got so
# far, so another dtype replaces it only when clearly faster; within 10% the pick stays
# the same on every run and machine of a kind, and so do the greedy replies.
MIN_GAIN = 1.10
# Above this load average per core, other processes decide the timings more than the dtypes do.
BUSY_LOAD = 1.5
# A fixed English prompt: tokenised, it gives real-text logits (random ids give near ties).
PROMPT_TEXT = "The capital of France is Paris. The capital of Italy is Rome. The capital of"


@dataclass(frozen=True)
class Plan:
    """What `dtype auto` does for this load: which dtype to load in, and whether to measure."""

    load_dtype: str
    rule: str  # the dtype `device.dtype_name` chose (preferred within MIN_GAIN)
    key: str | None = None  # the cache key when measuring
    reason: str = ""  # why not measured (logged)
    int4_gguf: Path | None = None  # a Q4 GGUF whose codes the int4 candidate (or pick) runs

    @property
    def measure(self) -> bool:
        return self.key is not None


@dataclass(frozen=True)
class Measurement:
    dtype: str
    tokens: tuple[int, ...]
    tokens_per_s: float


def plan_auto(
    *,
    device: str,
    requested: str,
    rule: str,
    folder: Path,
    config: dict[str, Any],
    quantized: bool,
    device_map: str | None,
    gguf: Path | None = None,
) -> Plan:
    """Decide, before loading, how `requested` resolves: the rule's dtype, a remembered pick
    (loaded directly), or float32 to measure from. `gguf`: the file the folder was converted
    from, if any (a Q4 one adds the int4 candidate)."""
    if (requested or "auto").strip().lower() != "auto":
        return Plan(rule, rule, reason="an explicit --dtype")
    if device != "cpu" or device_map is not None:
        return Plan(rule, rule, reason="not a single-CPU load")
    if quantized:
        return Plan(rule, rule, reason="a quantised model")
    n = safetensors_parameters(folder)
    if n is None:
        return Plan(rule, rule, reason="the weights' size is unknown")
    if n < MIN_PARAMETERS:
        return Plan(rule, rule, reason=f"{n:,} parameters are too few to time")
    if n * 4 > MAX_FLOAT32_BYTES:
        gib = n * 4 / 1024**3
        return Plan(rule, rule, reason=f"{gib:.1f} GiB in float32 is too large to convert")
    int4_gguf = gguf if gguf is not None and int4_source(gguf) else None
    key = dtype_cache.cache_key(config, "gguf-q4" if int4_gguf is not None else "")
    remembered = dtype_cache.lookup(key)
    if remembered is not None:
        reason = f"{remembered} measured before on this CPU"
        return Plan(remembered, rule, reason=reason, int4_gguf=int4_gguf)
    return Plan("float32", rule, key=key, int4_gguf=int4_gguf)


def int4_source(gguf: Path) -> bool:
    """Whether `gguf` holds Q4_0 / Q4_1 layers we can run as they are, with kernels for them."""
    from llama_tui.engine.quant.gguf_source import summarize
    from llama_tui.engine.quant.linear import int4_supported, int8_supported

    summary = summarize(gguf)
    return summary is not None and summary.int4 and int4_supported() and int8_supported()


def safetensors_parameters(folder: Path) -> int | None:
    """How many weights the folder's *.safetensors files hold (from their headers), or None."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    try:
        for path in files:
            with path.open("rb") as fh:
                (size,) = struct.unpack("<Q", fh.read(8))
                if size > 100_000_000:
                    return None
                header = json.loads(fh.read(size))
            for name, entry in header.items():
                if name != "__metadata__":
                    count = 1
                    for dim in entry["shape"]:
                        count *= int(dim)
                    total += count
    except (OSError, ValueError, KeyError, TypeError, AttributeError, struct.error):
        return None
    return total


def prompt_ids(tokenizer: Any) -> list[int]:
    """PROMPT_TOKENS ids of PROMPT_TEXT (repeated if the tokenizer makes fewer)."""
    ids = [int(i) for i in tokenizer(PROMPT_TEXT, add_special_tokens=False)["input_ids"]] or [0]
    while len(ids) < PROMPT_TOKENS:
        ids += ids
    return ids[:PROMPT_TOKENS]


def measure_decode(model: Any, ids: list[int], dtype: str) -> Measurement:
    """Greedy decode of `ids` with the KV cache in the model's current dtype: the tokens, and
    the speed of the fastest of the TIMED_STEPS steps after WARMUP_STEPS untimed ones.

    Each step is the one replies will run: the fast decoder's lean CPU step where it can drive
    the model (`engine.fast.lean`; it gains the most where the kernels are cheapest, int4),
    else the model's own forward. The fastest step, not the total or the median: a busy
    machine only ever slows a step down (seen here: 13 ms steps and 1.5 s steps in one fp16
    decode; at a load average of 12 on 2 cores the medians of all four candidates came out
    within 1.0-1.6 steps/s and float32 "won"), so the least disturbed step is the best
    estimate of what the dtype costs.
    """
    import torch

    step = _decoder(model, len(ids) + WARMUP_STEPS + TIMED_STEPS + 1)
    tokens: list[int] = []
    steps: list[float] = []
    with torch.inference_mode():
        logits = step(ids)
        for n in range(WARMUP_STEPS + TIMED_STEPS):
            token = int(logits.float().argmax())
            tokens.append(token)
            start = time.perf_counter()
            logits = step([token])
            if n >= WARMUP_STEPS:
                steps.append(time.perf_counter() - start)
        tokens.append(int(logits.float().argmax()))
    return Measurement(dtype, tuple(tokens), 1.0 / max(min(steps), 1e-9))


def _decoder(model: Any, length: int) -> Callable[[list[int]], Any]:
    """ids -> the last position's logits, feeding a KV cache of `length` positions: the
    prompt through the model, single tokens through the lean step when it drives the model."""
    import torch

    kw = cache_kwarg()  # the cache's name, in forward's arguments and outputs alike
    if lean_reason(model) is None:
        from llama_tui.engine.fast.cache import new_static_cache
        from llama_tui.engine.fast.lean import LeanForward

        dtype = next(model.parameters()).dtype
        cache = new_static_cache(model.config, length, dtype, torch.device("cpu"))
        lean = LeanForward(model)

        def lean_step(ids: list[int]) -> Any:
            x = torch.tensor([ids])
            if len(ids) == 1:
                return lean(cache, x)
            return model(input_ids=x, use_cache=True, **{kw: cache}).logits[0, -1]

        return lean_step
    past: list[Any] = [None]

    def model_step(ids: list[int]) -> Any:
        extra = {} if past[0] is None else {kw: past[0]}
        out = model(input_ids=torch.tensor([ids]), use_cache=True, **extra)
        past[0] = getattr(out, kw)
        return out.logits[0, -1]

    return model_step


def choose(measurements: tuple[Measurement, ...], rule: str) -> tuple[str, tuple[str, ...]]:
    """(the pick, the rejected dtypes): the fastest candidate whose tokens equal float32's,
    if it beats the rule's dtype (or float32, when the rule's is rejected) by MIN_GAIN."""
    by_dtype = {m.dtype: m for m in measurements}
    reference = by_dtype["float32"].tokens
    correct = {d: m for d, m in by_dtype.items() if m.tokens == reference}
    rejected = tuple(d for d in by_dtype if d not in correct)
    baseline = rule if rule in correct else "float32"
    fastest = max(correct.values(), key=lambda m: m.tokens_per_s)
    if fastest.tokens_per_s >= correct[baseline].tokens_per_s * MIN_GAIN:
        return fastest.dtype, rejected
    return baseline, rejected


def calibrate(model: Any, tokenizer: Any, plan: Plan, progress: ProgressCallback | None) -> str:
    """Measure every candidate on `model` (loaded in float32), leave it in the pick and
    remember the pick under `plan.key`; returns the pick."""
    import torch

    emit_progress(progress, LoadStage.LOAD, "Measuring the fastest dtype on this CPU…")
    started = time.perf_counter()
    ids = prompt_ids(tokenizer)
    # The float32 tensors themselves: `.to(dtype)` gives the model new tensors and leaves
    # these alone, so each candidate is converted from the exact float32 weights.
    originals = _tensors(model)
    results: list[Measurement] = []
    failed: list[str] = []
    swap: Swap | None = None
    candidates = CANDIDATES + ((INT4,) if plan.int4_gguf is not None else ())
    try:
        for dtype in candidates:
            _restore(model, originals)
            try:
                if dtype == INT4:
                    _cast(model, getattr(torch, INT4_ACTIVATIONS))
                    swap = _int4_swap(model, plan.int4_gguf)
                    swap.redo()
                else:
                    _cast(model, getattr(torch, dtype))
                results.append(measure_decode(model, ids, dtype))
            except Exception as exc:  # a kernel this CPU lacks, no RAM for the copy: not a pick
                if dtype == "float32":
                    raise
                log.info("dtype auto: %s failed on this CPU: %r", dtype, exc)
                failed.append(dtype)
            finally:
                if swap is not None:
                    swap.undo()
        pick, rejected = choose(tuple(results), plan.rule)
    finally:
        _restore(model, originals)  # float32 again, whatever happened
    _cast(model, getattr(torch, INT4_ACTIVATIONS if pick == INT4 else pick))
    if pick == INT4 and swap is not None:
        swap.redo()
    del originals
    seconds = time.perf_counter() - started
    rates = {m.dtype: m.tokens_per_s for m in results}
    summary = ", ".join(f"{d} {r:.1f}" for d, r in rates.items())
    wrong = f"; tokens differ from float32: {', '.join(rejected)}" if rejected else ""
    wrong += f"; failed: {', '.join(failed)}" if failed else ""
    log.info("dtype auto on this CPU: %s (tok/s %s%s; %.1f s)", pick, summary, wrong, seconds)
    emit_progress(progress, LoadStage.LOAD, f"Fastest dtype on this CPU: {pick} ({summary} tok/s)")
    busy = _busy()
    if plan.key is not None and busy is None:
        dtype_cache.remember(plan.key, pick, rates)
    elif busy is not None:
        log.info("dtype auto: not remembering %s, the CPU was busy (%s)", pick, busy)
    return pick


def _busy() -> str | None:
    """Why this machine was too busy for a pick worth remembering, or None. A pick measured
    while other processes held the cores is used for this load but measured again next time."""
    try:
        load = os.getloadavg()[0]
    except (OSError, AttributeError):  # not on every platform
        return None
    cores = os.cpu_count() or 1
    return f"load average {load:.1f} on {cores} cores" if load > BUSY_LOAD * cores else None


def _int4_swap(model: Any, gguf: Path | None) -> Swap:
    from llama_tui.engine.quant.apply import build_swap

    if gguf is None:
        raise ValueError("no Q4 GGUF to take int4 weights from")
    return build_swap(model, 4, gguf)


def _cast(model: Any, dtype: Any) -> None:
    """The weights in `dtype`, the buffers as loaded: what loading in `dtype` gives. (A
    `model.to(dtype)` would also cast RoPE's float32 `inv_freq`, and the picked model would
    then decode differently from the same model loaded with `--dtype`: `--replay` found it.)"""
    for param in model.parameters():
        param.data = param.data.to(dtype)


def _tensors(model: Any) -> dict[str, Any]:
    found = {f"p:{n}": p.data for n, p in model.named_parameters()}
    found.update({f"b:{n}": b for n, b in model.named_buffers() if b is not None})
    return found


def _restore(model: Any, originals: dict[str, Any]) -> None:
    for name, tensor in originals.items():
        kind, _, path = name.partition(":")
        target = model.get_parameter(path) if kind == "p" else model.get_buffer(path)
        target.data = tensor

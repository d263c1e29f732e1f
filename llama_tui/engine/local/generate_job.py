"""One reply through transformers' `generate`: its arguments, and the KV cache it reuses.

`generate_job` turns a fitted prompt and the settings into the `GenerationJob` the generate
thread runs; `reuse_cache` crops the previous turn's cache to the prefix the new prompt
shares with it, so a follow-up question only prefills what is new. torch and transformers are
imported inside the functions.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Any

from llama_tui.core.params import GenerationParams
from llama_tui.engine.fast.cache import common_prefix_length
from llama_tui.engine.local.assisted import Assist
from llama_tui.engine.local.logprobs import GenerateCapture, sampling_differs
from llama_tui.engine.local.sampling import generate_sampling_kwargs
from llama_tui.engine.local.streaming import GenerationJob, IdStreamer, QueueItem, StopFlags


@dataclass(frozen=True)
class GenerateSetup:
    """What every `generate` call of one loaded model shares."""

    input_device: str  # where the prompt ids go (the first device of a device map)
    pad_id: int | None  # passed only when the model's config lacks one
    cache_kw: str  # generate's name for the cache argument (`cache_kwarg`)


def cache_kwarg() -> str:
    """transformers renamed generate's `past_key_values=` to `cache=` (5.24 warns on the old
    name); earlier 5.x releases only know `past_key_values`."""
    from transformers.generation import utils

    return "cache" if "cache" in getattr(utils, "ALL_CACHE_NAMES", ()) else "past_key_values"


def eos_and_pad(gen_cfg: Any, tokenizer: Any) -> tuple[frozenset[int], int | None]:
    """The ids that end a reply, and the pad id to pass to `generate` (None: do not pass one).

    Passing pad_token_id only when the config lacks one avoids generate's warning.
    """
    eos: set[int] = set()
    for source in (getattr(gen_cfg, "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(source, int):
            eos.add(source)
        elif isinstance(source, (list, tuple)):
            eos.update(int(i) for i in source)
    pad: int | None = None
    if getattr(gen_cfg, "pad_token_id", None) is None:
        pad = tokenizer.pad_token_id
        if pad is None:
            pad = min(eos, default=None)
    return frozenset(eos), pad


def generate_job(
    ids: list[int],
    params: GenerationParams,
    cancel: threading.Event,
    t0: float,
    setup: GenerateSetup,
    cache: Any,
    reused: int,
    assist: Assist | None = None,
) -> GenerationJob:
    """The job for one reply through `model.generate`, streaming ids onto its queue."""
    import torch
    from transformers import StoppingCriteriaList

    q: queue.SimpleQueue[QueueItem] = queue.SimpleQueue()
    streamer = IdStreamer(q)
    internal = threading.Event()
    input_ids = torch.tensor([ids], dtype=torch.long, device=setup.input_device)
    kwargs: dict[str, Any] = {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "max_new_tokens": params.max_new_tokens,
        "streamer": streamer,
        "stopping_criteria": StoppingCriteriaList([StopFlags(cancel, internal)]),
        **generate_sampling_kwargs(params),
    }
    # Stop strings are matched on the decoded text by the consumer, which then sets
    # `internal` (the device stops a step or so later). generate's own `stop_strings` was
    # measured adding ~100 ms to every reply's TTFT on the demo model (it scans the whole
    # vocabulary per call), for a saving of one or two decode steps.
    if setup.pad_id is not None:
        kwargs["pad_token_id"] = setup.pad_id
    if cache is not None:
        kwargs[setup.cache_kw] = cache
    capture = None
    if params.logprobs > 0:  # per-token logprobs (engine.local.logprobs)
        capture = GenerateCapture(params.logprobs, len(ids), sampling_differs(params))
        kwargs.update(capture.generate_kwargs(params))
        streamer.on_push = capture.on_push
    job = GenerationJob(
        kwargs,
        q,
        streamer,
        internal,
        ids,
        params.seed,
        cache,
        max_new_tokens=params.max_new_tokens,
        t0=t0,
        reused=reused,
    )
    job.token_log = capture.log if capture is not None else None
    if assist is not None:  # prompt lookup or a draft model (engine.local.assisted)
        kwargs.update(assist.kwargs)
        job.assisted = assist.kind
    return job


def reuse_cache(model: Any, cache: Any, covered: list[int], ids: list[int]) -> tuple[Any, int]:
    """`cache` (covering exactly `covered`) cropped to its common prefix with `ids`, and how
    many ids it keeps; a new empty cache (and 0) when nothing can be reused."""
    keep = min(common_prefix_length(covered, ids), len(ids) - 1) if cache is not None else 0
    if cache is not None and keep > 0:
        try:
            length = int(cache.get_seq_length())
            if length != len(covered):
                raise ValueError("cache length does not match its ids")
            if length > keep:
                cache.crop(keep - length)  # negative: tokens to remove (5.24 semantics)
            return cache, keep
        except (ValueError, RuntimeError):
            pass  # sliding-window layers past their window cannot crop: start over
    from transformers import DynamicCache

    return DynamicCache(config=model.config), 0

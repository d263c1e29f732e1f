"""Token selection that runs entirely on the device, inside a compiled decode step.

`generate()` picks tokens with a chain of Python logits processors and `torch.multinomial`
with a host-side generator. None of that can live inside one CUDA graph, so the fast decoder
uses the functions here instead. They follow transformers' processors (same order, same
semantics) so that greedy output is token-for-token identical to `generate(do_sample=False)`:

    repetition penalty -> [sampling only] temperature -> top-k -> top-p -> min-p -> draw

Every knob is a *tensor* (`SamplingBuffers`), not a Python number, so changing the settings
between replies never recompiles the graph; only greedy vs sampling is a separate graph.

Randomness comes from a counter-based hash of (seed, position, token id) rather than from a
`torch.Generator`: dynamo cannot trace generator objects, CUDA graphs replay the captured
RNG offsets, and a hash makes a seeded reply reproducible on every path (eager, compiled,
graph), across turns with KV reuse, and on CPU and GPU alike (integer arithmetic is exact).
The draw uses the exponential-race trick (argmax of p / E with E ~ Exp(1)), which samples
exactly from p, as gpt-fast does.

The same settings as `generate()` kwargs (`generate_sampling_kwargs`) and the model's
`generation_config` merged into our defaults (`params_from_generation_config`) live here too,
so that both decode paths read one definition of the settings.

Imports torch lazily (callers import this module only once torch is wanted).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llama_tui.core.params import SAMPLING_FIELDS, GenerationParams

_M32 = 0xFFFFFFFF
# Multipliers below 2**31 so that x * C with x < 2**32 never overflows a signed int64
# (wrap-around of signed overflow is not something to rely on across CPU/Triton codegen).
_H1 = 0x7FEB352D
_H2 = 0x21F0AAAD
_GOLDEN = 0x9E3779B1


def _hash32(x: Any) -> Any:
    """A 32-bit integer mixer (Wellons' lowbias32 shape) on int64 tensors holding [0, 2**32)."""
    x = x ^ (x >> 16)
    x = (x * _H1) & _M32
    x = x ^ (x >> 15)
    x = (x * _H2) & _M32
    x = x ^ (x >> 16)
    return x


def exponential_noise(token_ids: Any, seed: Any, position: Any) -> Any:
    """Exp(1) noise for each id in `token_ids` (any shape), a pure function of its arguments.

    `seed` and `position` are 0-d int64 tensors. float32 with 24 random bits is plenty for a
    draw among at most a few hundred thousand tokens.
    """
    import torch

    k = _hash32((_hash32(seed & _M32) + position) & _M32)
    x = _hash32((token_ids * _GOLDEN + k) & _M32)
    u = ((x >> 8).to(torch.float32) + 0.5) * (1.0 / 16777216.0)
    return -torch.log(u)


@dataclass
class SamplingBuffers:
    """Device tensors holding one reply's settings, updated in place (static addresses).

    floats = [temperature, top_p, min_p, repetition_penalty]  (float32)
    ints   = [top_k, seed]                                     (int64)
    presence[v] is True when token v occurred in the prompt or the reply so far (for the
    repetition penalty, which transformers applies to the whole sequence).
    """

    floats: Any
    ints: Any
    presence: Any

    @classmethod
    def allocate(cls, vocab_size: int, device: Any) -> SamplingBuffers:
        import torch

        return cls(
            floats=torch.tensor([1.0, 1.0, 0.0, 1.0], dtype=torch.float32, device=device),
            ints=torch.zeros(2, dtype=torch.int64, device=device),
            presence=torch.zeros(vocab_size, dtype=torch.bool, device=device),
        )

    def load(self, params: GenerationParams, seed: int, context_ids: list[int]) -> None:
        """Copy `params` in (one small host-to-device copy each) and mark `context_ids` seen."""
        import torch

        dev = self.floats.device
        self.floats.copy_(
            torch.tensor(
                [
                    max(float(params.temperature), 1e-6),
                    float(params.top_p),
                    float(params.min_p),
                    float(params.repetition_penalty),
                ],
                dtype=torch.float32,
            ).to(dev)
        )
        self.ints.copy_(
            torch.tensor([int(params.top_k), int(seed) & _M32], dtype=torch.int64).to(dev)
        )
        self.presence.zero_()
        if context_ids and float(params.repetition_penalty) != 1.0:
            ids = torch.tensor(sorted(set(context_ids)), dtype=torch.int64).to(dev)
            self.presence.index_fill_(0, ids, True)


NON_FINITE_TOKEN = -1  # what select_token returns when the probabilities are not finite


def select_token(logits: Any, buf: SamplingBuffers, position: Any, greedy: bool) -> Any:
    """Pick the next token from float32 `logits` of shape (vocab,); returns a (1,) int64 tensor.

    `position` (0-d int64 tensor) is the position of the token whose logits these are; it is
    the RNG counter. `greedy` is a Python bool on purpose: it selects the graph.
    """
    return select_token_and_logprob(logits, buf, position, greedy)[0]


def select_token_and_logprob(
    logits: Any, buf: SamplingBuffers, position: Any, greedy: bool, host_top_k: int = 0
) -> tuple[Any, Any]:
    """`select_token`, and the (1,) float32 logprob of the pick under the distribution it
    was drawn from (0 in greedy mode: the pick was certain).

    `host_top_k`: the reply's top-k read on the host (0 = unknown or off). With it the candidates
    come from `torch.topk` instead of sorting the whole vocabulary: on a CPU that sort took
    3 ms of a 4.3 ms sampled pick (49k logits), `topk` 0.05 ms. Same candidates, same draw
    (the noise is keyed by token id). Only for eager steps (it branches on the host); the
    compiled steps pass 0 and keep one static graph.
    """
    import torch

    # Repetition penalty, as RepetitionPenaltyLogitsProcessor (applied in greedy mode too).
    # With a penalty of 1.0 both branches are exact no-ops, so no branch on the value is needed.
    rp = buf.floats[3]
    penalised = torch.where(logits < 0, logits * rp, logits / rp)
    logits = torch.where(buf.presence, penalised, logits)
    if greedy:
        # torch.argmax returns the first maximum, like generate's greedy search.
        token = torch.argmax(logits, dim=-1, keepdim=True)
        return token, torch.zeros(1, dtype=torch.float32, device=logits.device)

    temperature, top_p, min_p = buf.floats[0], buf.floats[1], buf.floats[2]
    top_k, seed = buf.ints[0], buf.ints[1]
    logits = logits / temperature
    sorted_logits, sorted_ids = _candidates(logits, host_top_k)
    vocab = sorted_logits.shape[-1]
    # top-k (0 = off): keep everything >= the k-th value, ties included, like TopKLogitsWarper.
    k = torch.where(top_k > 0, torch.clamp(top_k, max=vocab), torch.full_like(top_k, vocab))
    kth = torch.gather(sorted_logits, 0, (k - 1).view(1))
    keep = sorted_logits >= kth
    masked = torch.where(keep, sorted_logits, torch.full_like(sorted_logits, float("-inf")))
    probs = torch.softmax(masked, dim=-1)
    # top-p: TopPLogitsWarper keeps a token when the probability mass strictly above it is
    # below top_p; the most likely token always stays. top_p >= 1 is off (float rounding of the
    # cumulative sum must not drop the tail then).
    mass_above = torch.cumsum(probs, dim=-1) - probs
    keep = keep & ((mass_above < top_p) | (top_p >= 1.0))
    # min-p: relative to the most likely token; the ratio is unchanged by renormalisation, so the
    # probabilities before top-p serve (MinPLogitsWarper computes them after).
    keep = keep & (probs >= min_p * probs[0])
    first = torch.arange(vocab, device=logits.device) == 0
    keep = keep | first
    masked = torch.where(keep, sorted_logits, torch.full_like(sorted_logits, float("-inf")))
    probs = torch.softmax(masked, dim=-1)
    noise = exponential_noise(sorted_ids, seed, position)
    choice = torch.argmax(probs / noise, dim=-1, keepdim=True)
    token = torch.gather(sorted_ids, 0, choice)
    logprob = torch.log(torch.gather(probs, 0, choice))
    # NaN / inf logits (float16 overflow) make every probability NaN; generate's multinomial
    # raises then, argmax would quietly pick garbage. Flag it as NON_FINITE_TOKEN instead (no
    # host sync here); the decoder checks each token on the host before feeding it back.
    token = torch.where(torch.isnan(probs).any(), torch.full_like(token, NON_FINITE_TOKEN), token)
    return token, logprob


def _candidates(logits: Any, top_k: int) -> tuple[Any, Any]:
    """The logits in descending order with their ids: all of them, or, with `top_k`, just
    those top-k keeps (the k largest and any equal to the k-th)."""
    import torch

    if 0 < top_k < logits.shape[-1]:
        values, ids = torch.topk(logits, top_k)
        # top-k keeps every logit equal to the k-th too. Ties across the cut are common: the
        # logits of a bf16 model take few distinct values.
        kept = int((logits >= values[-1]).sum())
        if kept > top_k:
            values, ids = torch.topk(logits, kept)
        return values, ids
    ordered = torch.sort(logits, descending=True)
    return ordered.values, ordered.indices


def generate_sampling_kwargs(params: GenerationParams) -> dict[str, Any]:
    """`model.generate()` keyword arguments for the sampling settings of `params`."""
    kwargs: dict[str, Any] = {
        "do_sample": params.do_sample,
        # 1.0 adds no logits processor; passing it overrides a model default.
        "repetition_penalty": params.repetition_penalty,
    }
    if params.do_sample:
        kwargs.update(
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=params.top_k or None,  # 0 = off
            min_p=params.min_p or None,
        )
    else:
        # Explicit None overrides sampling values from generation_config, which would
        # otherwise be validated against do_sample=False and warn.
        kwargs.update(temperature=None, top_p=None, top_k=None, min_p=None)
    return kwargs


def params_from_generation_config(
    defaults: dict[str, Any], context_length: int | None
) -> GenerationParams:
    """Our defaults, overridden by a model's generation_config values where they are valid."""
    ctx = context_length
    ours = GenerationParams()
    if ctx is not None and ours.max_new_tokens >= ctx:
        ours = ours.with_changes(max_new_tokens=max(1, ctx // 2))
    changes: dict[str, Any] = {}
    for name in SAMPLING_FIELDS:
        value = defaults.get(name)
        if value is None:
            continue
        if name == "top_k" and isinstance(value, float) and value.is_integer():
            value = int(value)
        elif name != "do_sample" and name != "top_k" and isinstance(value, int):
            value = float(value)
        changes[name] = value
    m = defaults.get("max_new_tokens")
    if isinstance(m, int) and not isinstance(m, bool) and m > 0:
        changes["max_new_tokens"] = m
    params = ours.with_changes(**changes)
    # Revert what the model's config got wrong (e.g. temperature 0 with do_sample).
    for bad in params.problems(ctx):
        params = params.with_changes(**{bad: getattr(ours, bad)})
    return params

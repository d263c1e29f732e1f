"""Per-token logprobs and top-k alternatives on the local paths (`generate` and the fast decoder).

What is recorded is described once in `core.tokens`: the model's own distribution (raw
logits, before repetition penalty, temperature, top-k, top-p, min-p), plus, for a sampled
token, its logprob under the distribution it was drawn from when that one differs.

Two halves, on two threads:

* The generating thread produces `RawToken`s: ids and numbers only. On the `generate` path
  `GenerateCapture` puts two logits processors around generate's own and reads them when the
  streamer is handed the chosen ids (`on_push`); the fast decoder computes the same numbers
  inside its step (`engine.fast.compile`) and hands them over with the token id in the one
  host read per token (`capture_from_values`).
* The consuming thread turns them into `TokenLogprob`s with text (`TokenTexts`): the chosen
  tokens' texts concatenate to the reply exactly (a character split over several tokens
  belongs to the token that completes it), and each alternative's text is what it would have
  added at that point (what continuing from it starts with).

Cost per token on the generating thread: a logsumexp and a top-k over the vocabulary and one
small host copy; on the consuming thread: one decode of a few ids for the chosen token and one
batched decode for the alternatives. benchmarks/logprobs_cost.py measures it.

torch is imported lazily, inside functions.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from llama_tui.core.params import GenerationParams
from llama_tui.core.tokens import TokenChoice, TokenLog, TokenLogprob, TokenSource
from llama_tui.engine.stops import REPLACEMENT

# The most alternatives the fast decoder's compiled step computes (its shapes are static).
K_MAX = 20
# Ids of context kept in front of a token for decoding its text (leading spaces, merges).
TEXT_CONTEXT_IDS = 4


@dataclass(frozen=True)
class RawToken:
    """One generated token as the generating thread sees it: ids and numbers, no text."""

    id: int
    logprob: float
    top_ids: tuple[int, ...]
    top_logprobs: tuple[float, ...]
    sampled_logprob: float | None = None


def sampling_differs(params: GenerationParams) -> bool:
    """Whether a token is drawn from a distribution other than the model's (so its
    `sampled_logprob` is worth recording): sampling with any setting that reshapes it."""
    if not params.do_sample:
        return False
    return (
        params.temperature != 1.0
        or params.top_k > 0
        or params.top_p < 1.0
        or params.min_p > 0.0
        or params.repetition_penalty != 1.0
    )


class RawLog:
    """`RawToken`s appended by the generating thread, read by the consumer (thread-safe:
    list appends and a lock-free length read)."""

    def __init__(self) -> None:
        self.items: list[RawToken] = []

    def append(self, raw: RawToken) -> None:
        self.items.append(raw)


# ---------------------------------------------------------------------- the generate path


class _RawScores:
    """First custom logits processor: the model's scores for a position, untouched.

    generate runs its own processors built from the model's generation_config before the
    custom ones; `GenerateCapture` turns off the ones built from our settings (repetition
    penalty, temperature, top-k, top-p, min-p) and runs them itself after this one.
    """

    def __init__(self, owner: GenerateCapture) -> None:
        self._owner = owner

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        # Normalised now, into a tensor of our own: generate's later processors may write
        # into `scores` (measured: the repetition penalty's shifted it by 1e-3).
        # log_softmax, not logsumexp: fused, and measured 4x faster on the CPU.
        self._owner.raw_rows[int(input_ids.shape[-1])] = torch.log_softmax(scores[0], dim=-1)
        return scores


class _SampledScores:
    """Last logits processor: the scores the token is drawn from (after every warper)."""

    def __init__(self, owner: GenerateCapture) -> None:
        self._owner = owner

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        self._owner.sampled_rows[int(input_ids.shape[-1])] = torch.log_softmax(scores[0], -1)
        return scores


class GenerateCapture:
    """Capture for one reply through `model.generate` (see the module docstring).

    Rows are keyed by the position they predict (the length of the ids the processor sees),
    so a streamer that is handed ids a step late, or several at once, still pairs each id
    with its own row.
    """

    def __init__(self, k: int, prompt_len: int, sampled: bool) -> None:
        self.k = k
        self.log = RawLog()
        self.raw_rows: dict[int, Any] = {}
        self.sampled_rows: dict[int, Any] = {}
        self._next_pos = prompt_len
        self._sampled = sampled

    def generate_kwargs(self, params: GenerationParams) -> dict[str, Any]:
        """generate's sampling arguments with this capture around its processors: ours in
        generate's own order (penalty, temperature, top-k, top-p, min-p), so the tokens
        picked are the ones generate would pick without the capture."""
        from transformers import (
            LogitsProcessorList,
            MinPLogitsWarper,
            RepetitionPenaltyLogitsProcessor,
            TemperatureLogitsWarper,
            TopKLogitsWarper,
            TopPLogitsWarper,
        )

        chain: list[Any] = [_RawScores(self)]
        if params.repetition_penalty != 1.0:
            chain.append(RepetitionPenaltyLogitsProcessor(penalty=params.repetition_penalty))
        if params.do_sample:
            if params.temperature != 1.0:
                chain.append(TemperatureLogitsWarper(params.temperature))
            if params.top_k > 0:
                chain.append(TopKLogitsWarper(top_k=params.top_k))
            if params.top_p < 1.0:
                chain.append(TopPLogitsWarper(top_p=params.top_p))
            if params.min_p > 0.0:
                chain.append(MinPLogitsWarper(min_p=params.min_p))
        if self._sampled:
            chain.append(_SampledScores(self))
        return {
            "do_sample": params.do_sample,
            "repetition_penalty": None,
            "temperature": None,
            "top_p": None,
            "top_k": None,
            "min_p": None,
            "logits_processor": LogitsProcessorList(chain),
        }

    def on_push(self, ids: list[int]) -> None:
        """The streamer got `ids` (generating thread): record each with its row's numbers."""
        import torch

        for token in ids:
            pos = self._next_pos
            self._next_pos += 1
            row = self.raw_rows.pop(pos, None)
            sampled_row = self.sampled_rows.pop(pos, None)
            if row is None:
                continue  # no scores for it (cannot happen with generate's loop)
            top_v, top_i = torch.topk(row, self.k)  # rows are log-probabilities already
            parts = [row[token : token + 1], top_v]
            if sampled_row is not None:
                parts.append(sampled_row[token : token + 1])
            values = torch.cat(parts).tolist()
            sampled = values[1 + self.k] if sampled_row is not None else None
            if sampled is not None and sampled == float("-inf"):
                sampled = None  # cannot happen for a drawn token; never store -inf
            self.log.append(
                RawToken(
                    token,
                    values[0],
                    tuple(top_i.tolist()),
                    tuple(values[1 : 1 + self.k]),
                    sampled,
                )
            )
        # Rows of positions never handed out (assisted decoding's rejected guesses).
        for stale in [p for p in self.raw_rows if p < self._next_pos]:
            del self.raw_rows[stale]


# ---------------------------------------------------------------------- the fast decoder


CAPTURE_LEN = 3 + 2 * K_MAX  # the fast step's capture buffer (float32)


def capture_values(logits: Any, token: Any, sampled_logprob: Any) -> Any:
    """The fast step's capture of one position, as a (CAPTURE_LEN,) float32 tensor computed on
    the device from the raw float32 `logits` (vocab,), the chosen (1,) `token` and its (1,)
    `sampled_logprob`; static shapes, so it lives inside a compiled step and CUDA graph."""
    import torch

    vocab = logits.shape[-1]
    kk = min(K_MAX, vocab)
    logp = torch.log_softmax(logits, dim=-1)  # fused: faster than logsumexp on the CPU
    top_v, top_i = torch.topk(logp, kk)
    chosen = torch.gather(logp, 0, token.clamp(min=0))
    parts = [token.to(torch.float32), chosen, sampled_logprob, top_v]
    pad = torch.zeros(K_MAX - kk, dtype=torch.float32, device=logits.device)
    parts += [pad, top_i.to(torch.float32), pad]
    return torch.cat(parts)


def capture_from_values(values: Sequence[float], k: int, sampled: bool) -> RawToken:
    """The `RawToken` in the fast step's capture buffer, read back as floats.

    Layout (engine.fast.compile): [token id, logprob, sampled logprob, K_MAX top logprobs,
    K_MAX top ids]; ids are exact in float32 below 2**24.
    """
    top_lp = tuple(float(v) for v in values[3 : 3 + k])
    top_ids = tuple(int(v) for v in values[3 + K_MAX : 3 + K_MAX + k])
    s = float(values[2]) if sampled else None
    return RawToken(int(values[0]), float(values[1]), top_ids, top_lp, s)


# ---------------------------------------------------------------------- texts (consumer side)


class TokenTexts:
    """Turns `RawToken`s into `TokenLogprob`s with text, in the consuming thread.

    `decode` is the tokenizer's decode of a few ids, `decode_many` the same for a batch
    (one call for a token's alternatives). `context_ids` is the prompt (its last ids give
    the first token its leading space where the tokenizer needs one).
    """

    def __init__(
        self,
        k: int,
        source: TokenSource,
        raw: RawLog,
        decode: Callable[[list[int]], str],
        decode_many: Callable[[list[list[int]]], list[str]],
        context_ids: Sequence[int],
    ) -> None:
        self.log = TokenLog(k, source)
        self._raw = raw
        self._done = 0
        self._decode = decode
        self._decode_many = decode_many
        self._ids: list[int] = list(context_ids[-TEXT_CONTEXT_IDS:])
        self._text = decode(self._ids) if self._ids else ""
        self._lock = threading.Lock()

    def catch_up(self) -> None:
        """Convert every raw token the generating thread has appended so far."""
        with self._lock:
            items = self._raw.items
            end = len(items)
            for i in range(self._done, end):
                self.log.tokens.append(self._convert(items[i]))
            self._done = end

    def _convert(self, raw: RawToken) -> TokenLogprob:
        base_ids, base_text = self._ids, self._text
        alt_texts = self._decode_many([[*base_ids, i] for i in raw.top_ids]) if raw.top_ids else []
        top = tuple(
            TokenChoice(i, _delta(base_text, t), lp)
            for i, t, lp in zip(raw.top_ids, alt_texts, raw.top_logprobs, strict=True)
        )
        ids = [*base_ids, raw.id]
        new_text = self._decode(ids)
        if new_text.endswith(REPLACEMENT):
            # Part of a character: the token that completes it gets the whole character.
            self._ids = ids
            return TokenLogprob(raw.id, "", raw.logprob, top, raw.sampled_logprob)
        text = _delta(base_text, new_text)
        if len(ids) > 2 * TEXT_CONTEXT_IDS:
            ids = ids[-TEXT_CONTEXT_IDS:]
            new_text = self._decode(ids)
        self._ids, self._text = ids, new_text
        return TokenLogprob(raw.id, text, raw.logprob, top, raw.sampled_logprob)


def _delta(before: str, after: str) -> str:
    """What `after` adds to `before` (decoding is not always prefix-stable: then the
    common prefix decides)."""
    if after.startswith(before):
        return after[len(before) :]
    n = 0
    for a, b in zip(before, after, strict=False):
        if a != b:
            break
        n += 1
    return after[n:]


def token_texts(
    job: Any,
    params: GenerationParams,
    tokenizer: Any,
    lock: threading.Lock,
    decode: Callable[[list[int]], str],
) -> TokenTexts | None:
    """The consumer-side half for `job` (a `streaming.GenerationJob`), or None: capture off."""
    raw = job.token_log
    if raw is None:
        return None

    def decode_many(seqs: list[list[int]]) -> list[str]:
        with lock:  # the Rust tokenizer is not safe to share unlocked (ChatFormatter)
            return [str(t) for t in tokenizer.batch_decode(seqs, skip_special_tokens=True)]

    source: TokenSource = "fast" if job.fast is not None else "generate"
    return TokenTexts(params.logprobs, source, raw, decode, decode_many, job.prompt_ids)

"""Assisted decoding on the `generate` path: prompt lookup and a draft model.

Both are transformers' assisted generation (`generate(prompt_lookup_num_tokens=...)` or
`generate(assistant_model=...)`): cheap guesses of the next few tokens are checked by the main
model in one forward pass, and the guesses it agrees with are kept. The main model decides
every token, so a greedy reply is the same as without assistance (tests pin it on the tiny
model; benchmarks/assisted.py checks the demo model in float32, float16 and bfloat16, where a
verify step's other shapes can round a near-tie the other way, as the fast decoder's can);
only the speed changes.

* **Prompt lookup** guesses by finding the last two tokens earlier in the prompt (and the reply
  so far) and proposing the `PROMPT_LOOKUP_TOKENS` that followed them there. No second model.
  It pays off when the reply copies from the prompt: "rewrite this code with one change",
  quoting, editing a document.
* **A draft model** (`--draft-model SPEC`) is a small model with the same tokenizer, loaded
  beside the main one with the same loading code (`load_draft`), on the same device and in the
  same dtype. A different tokenizer is refused at load with the cause and the fix
  (transformers' universal assisted decoding across tokenizers is not used: it re-tokenizes
  text every step, which costs more than it saves on a CPU).

Routing, per reply (`choose`), in this order:

1. A model transformers cannot assist (stateful, encoder-decoder): no assistance.
2. A draft model is loaded: the reply goes to `generate` with the draft. The user asked for it,
   so it beats the fast decoder (`engine.fast`), which has no multi-token verify step.
3. `prompt_lookup = on`: the reply goes to `generate` with prompt lookup, on every path.
4. `prompt_lookup = auto`: the one rule `AUTO_RULE`, measured by benchmarks/assisted.py: a
   greedy reply, on a CPU, whose last message has at least `AUTO_MIN_CHARS` characters (text
   to copy from), and with nothing of its prompt in the KV cache (the first reply of a
   conversation, or one after the history changed). On the demo model that reply is 1.5x
   (float16) to 7x (bfloat16) faster with prompt lookup than plain `generate`, and faster
   than the fast decoder, which it then bypasses. A short prompt (a story) was 0.4-1.0x: the
   guesses are mostly wrong and a verify step of 11 tokens costs 1.3x (bfloat16) to 7x
   (float16) a decode step on this CPU. Sampled replies stay plain (fewer guesses are
   accepted, and a seeded reply would draw differently with and without); a reply that can
   reuse the KV cache keeps the reuse (see below: assisted replies cannot); CUDA and MPS are
   unmeasured, and there the fast decoder (compiled on CUDA) keeps its replies.
5. `prompt_lookup = off`: no assistance; the fast decoder or plain `generate` as before.

What transformers 5.24 allows, and what we do about it: assisted generation runs one sequence
(batch 1, `num_return_sequences` 1: we always send one); it streams (the streamer gets the
accepted tokens of a step together, which the consumer already handles); it samples
(prompt lookup: each position sampled from the main model; draft: speculative sampling), so
a seeded sampled reply is reproducible with the same settings, but draws differently from an
unassisted one; it needs a cache it can crop (the `DynamicCache` we pass; the fast decoder's
static cache is never used with it). Its loop feeds the whole prompt on the first step, even
over a cache that already holds a prefix (plain `generate` slices the prompt in its prefill;
the assisted loop does not), which gave wrong tokens in our tests: so an assisted reply
starts from an empty cache and prefills the whole conversation, and the cache it leaves is
reused by the next reply as usual (`LocalBackend._prepare`). The draft model keeps no
cache between replies (transformers builds its candidate generator per `generate` call), so
each reply prefills the draft with the whole prompt once. Token logprob capture
(`engine.local.logprobs`) keys its rows by position, and the main model's verify step scores
every accepted position last, so the recorded rows are the main model's, as without assistance.

torch and transformers are imported inside functions, like the rest of the engine.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any, Literal

from llama_tui.core.backend import LoadOptions, LoadProgress, LoadStage, ProgressCallback
from llama_tui.core.errors import ModelError
from llama_tui.core.params import GenerationParams

log = logging.getLogger(__name__)

PromptLookupMode = Literal["auto", "on", "off"]
PROMPT_LOOKUP_MODES: tuple[PromptLookupMode, ...] = ("auto", "on", "off")
AssistKind = Literal["prompt lookup", "draft model"]

# Tokens proposed per lookup hit, and the longest n-gram matched (transformers' defaults,
# which measured best of 5 / 10 / 20 on the code-rewrite prompt of benchmarks/assisted.py).
PROMPT_LOOKUP_TOKENS = 10
MAX_MATCHING_NGRAM = 2

# How `prompt_lookup = auto` decides; the measurements behind it are in benchmarks/README.md.
AUTO_RULE = (
    "prompt lookup for a greedy reply on a CPU whose last message has at least "
    "AUTO_MIN_CHARS characters and whose prompt has nothing in the KV cache to reuse; "
    "every other reply is unassisted"
)
# "Something to copy from": the code-rewrite prompt of benchmarks/assisted.py has about 600
# characters (prompt lookup 1.5-7x faster, by dtype), the story prompt 70 (0.4-1.0x: the
# guesses are wrong, and a verify step costs 1.3-7x a decode step on this CPU).
AUTO_MIN_CHARS = 400


@dataclass(frozen=True)
class Assist:
    """How one reply is assisted: what the footer says and the extra `generate` arguments."""

    kind: AssistKind
    kwargs: dict[str, Any]


def unsupported_reason(model: Any) -> str | None:
    """Why transformers cannot run assisted generation on `model`, or None."""
    if getattr(model, "_is_stateful", False):
        return f"{type(model).__name__} keeps a recurrent state that cannot be rolled back"
    if getattr(model.config, "is_encoder_decoder", False):
        return "encoder-decoder models are not supported"
    return None


def choose(
    mode: str,
    params: GenerationParams,
    *,
    draft: Any,
    unsupported: str | None,
    reusable: int = 0,
    device_type: str = "cpu",
    last_chars: int = AUTO_MIN_CHARS,
) -> Assist | None:
    """The routing rule of the module docstring for one reply, or None (unassisted).

    `draft`: the loaded draft model or None; `unsupported`: `unsupported_reason` of the main
    model;
    `reusable`: prompt tokens an unassisted reply would serve from the KV cache;
    `device_type`: where the model runs; `last_chars`: the length of the last message.
    """
    if unsupported is not None:
        return None
    if draft is not None:
        return Assist("draft model", {"assistant_model": draft})
    auto = (
        mode == "auto"
        and not params.do_sample
        and device_type == "cpu"
        and last_chars >= AUTO_MIN_CHARS
        and reusable == 0
    )
    if mode == "on" or auto:
        return Assist(
            "prompt lookup",
            {
                "prompt_lookup_num_tokens": PROMPT_LOOKUP_TOKENS,
                "max_matching_ngram_size": MAX_MATCHING_NGRAM,
            },
        )
    return None


def lookup_refused(mode: str, model: Any) -> str | None:
    """What to tell the user at load when `prompt_lookup = on` cannot work for `model`."""
    why = unsupported_reason(model) if mode == "on" else None
    return f"Prompt lookup is off for this model: {why}" if why is not None else None


# --- the draft model ----------------------------------------------------------------------


def draft_options(options: LoadOptions, main_dtype: str) -> LoadOptions:
    """How the draft is loaded: like the main model, in its dtype, on its (first) device."""
    return replace(
        options,
        dtype=main_dtype,  # no second dtype measurement; the two must agree anyway
        device_map=None,
        compile=False,
        draft_model=None,
        prompt_lookup="off",
    )


def check_same_tokenizer(
    main_name: str, main_tok: Any, main_model: Any, draft_name: str, draft_tok: Any, draft: Any
) -> None:
    """Raise `ModelError` (cause and fix) unless the draft reads and writes the same token ids."""
    fix = (
        "Name a draft model of the same family (a smaller size with the same tokenizer), "
        "or start without --draft-model."
    )
    same_vocab = main_tok.get_vocab() == draft_tok.get_vocab()
    main_size = _vocab_size(main_model)
    draft_size = _vocab_size(draft)
    if not same_vocab:
        raise ModelError(
            f"The draft model {draft_name} uses a different tokenizer from {main_name}, so its "
            "guesses cannot be checked token by token.",
            fix,
        )
    if main_size != draft_size:
        raise ModelError(
            f"The draft model {draft_name} has {draft_size} output tokens and {main_name} has "
            f"{main_size}: they do not share a vocabulary.",
            fix,
        )


def _vocab_size(model: Any) -> int | None:
    config = model.config
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    size = getattr(text, "vocab_size", None)
    return int(size) if size is not None else None


def load_draft(
    spec: str,
    options: LoadOptions,
    main: Any,
    main_tokenizer: Any,
    main_name: str,
    progress: ProgressCallback | None = None,
) -> Any:
    """Load the draft model named by `spec` beside `main`; refuse one that cannot assist it.

    Raises a `ModelError` (cause and fix): the draft cannot be loaded, uses another tokenizer,
    or the main model cannot be assisted at all.
    """
    from llama_tui.engine.loading import models

    why = unsupported_reason(main)
    if why is not None:
        raise ModelError(
            f"{main_name} cannot use a draft model: {why}.", "Start without --draft-model."
        )
    main_dtype = str(getattr(main, "dtype", "float32")).removeprefix("torch.")

    def tagged(p: LoadProgress) -> None:
        if progress is not None and p.stage != LoadStage.READY:
            progress(LoadProgress(p.stage, f"Draft model: {p.message}", p.fraction))

    loaded = models.load_model(spec, draft_options(options, main_dtype), tagged)
    check_same_tokenizer(
        main_name, main_tokenizer, main, loaded.info.name, loaded.tokenizer, loaded.model
    )
    why = unsupported_reason(loaded.model)
    if why is not None:
        raise ModelError(
            f"The draft model {loaded.info.name} cannot assist: {why}.",
            "Name a decoder-only draft model of the same family, or start without --draft-model.",
        )
    main_device = str(getattr(main, "device", "cpu"))
    if str(loaded.model.device) != main_device:
        loaded.model.to(main_device)
    log.info("draft model %s loaded for %s", loaded.info.name, main_name)
    return loaded.model

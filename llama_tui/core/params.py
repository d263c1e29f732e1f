"""Generation parameters: the frozen settings of one reply and their validation."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any

# Bounds used by validation; the settings panel and the config loader share them.
MAX_NEW_TOKENS_CAP = 1_000_000


@dataclass(frozen=True)
class GenerationParams:
    """Frozen sampling settings for one reply. Swapped whole, never mutated.

    `top_k == 0` and `min_p == 0.0` mean "off"; `do_sample=False` is greedy decoding, in which
    case the sampling fields are ignored (and not validated as strictly).
    """

    temperature: float = 0.7
    top_p: float = 1.0
    top_k: int = 50
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    max_new_tokens: int = 512
    do_sample: bool = True
    seed: int | None = None
    stop: tuple[str, ...] = ()

    def problems(self, context_length: int | None = None) -> dict[str, str]:
        """Return {field: reason} for every invalid field; empty when valid.

        transformers validates unevenly at generate time (inf accepted, top_p=1.5 silently
        ignored), so we validate everything ourselves before a value is applied or saved.
        """
        out: dict[str, str] = {}

        def finite(name: str, value: object) -> float | None:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                out[name] = "must be a number"
                return None
            if not math.isfinite(value):
                out[name] = "must be a finite number"
                return None
            return float(value)

        t = finite("temperature", self.temperature)
        if t is not None and self.do_sample and t <= 0:
            out["temperature"] = "must be > 0 when sampling (use greedy for deterministic output)"
        elif t is not None and t < 0:
            out["temperature"] = "must be >= 0"
        p = finite("top_p", self.top_p)
        if p is not None and not 0 < p <= 1:
            out["top_p"] = "must be in (0, 1]"
        mp = finite("min_p", self.min_p)
        if mp is not None and not 0 <= mp < 1:
            out["min_p"] = "must be in [0, 1)"
        rp = finite("repetition_penalty", self.repetition_penalty)
        if rp is not None and rp <= 0:
            out["repetition_penalty"] = "must be > 0 (1.0 means off)"
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int):
            out["top_k"] = "must be a whole number"
        elif self.top_k < 0:
            out["top_k"] = "must be >= 0 (0 means off)"
        m = self.max_new_tokens
        if isinstance(m, bool) or not isinstance(m, int):
            out["max_new_tokens"] = "must be a whole number"
        elif m <= 0:
            out["max_new_tokens"] = "must be >= 1"
        elif m > MAX_NEW_TOKENS_CAP or (context_length is not None and m >= context_length):
            limit = context_length if context_length is not None else MAX_NEW_TOKENS_CAP
            out["max_new_tokens"] = f"must be below the model's context ({limit} tokens)"
        if self.seed is not None and (
            isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0
        ):
            out["seed"] = "must be a whole number >= 0, or empty for random"
        if not isinstance(self.do_sample, bool):
            out["do_sample"] = "must be true or false"
        if not isinstance(self.stop, tuple) or not all(
            isinstance(s, str) and s for s in self.stop
        ):
            out["stop"] = "must be a list of non-empty strings"
        return out

    def with_changes(self, **changes: Any) -> GenerationParams:
        """A copy with some fields replaced (not validated: call `problems()`)."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["stop"] = list(self.stop)
        return d

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

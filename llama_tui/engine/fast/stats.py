"""What one run of the fast decoder did, and what it polls to stop early."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from llama_tui.core.backend import StopReason


class StopFlag(Protocol):
    """What `generate_ids` polls between tokens: a `threading.Event`, or any object that
    combines several (the user's cancel and a stop-string hit)."""

    def is_set(self) -> bool: ...


@dataclass
class DecodeStats:
    """What the last `generate_ids` did."""

    prompt_tokens: int = 0
    reused_tokens: int = 0  # prompt tokens served from the KV cache
    generated_tokens: int = 0  # ids produced (an EOS counts, but is not yielded)
    ttft_s: float | None = None  # start -> first id ready (prefill + first pick)
    decode_s: float = 0.0  # first id -> last id
    stop_reason: StopReason = StopReason.EOS
    eos_token_id: int | None = None  # the EOS id that ended the reply (counted, not yielded)
    bucket: int = 0
    steps_by_path: dict[str, int] = field(default_factory=dict)  # eager / compiled / graph

    @property
    def decode_tokens_per_s(self) -> float | None:
        n = self.generated_tokens - 1
        return n / self.decode_s if n > 0 and self.decode_s > 0 else None

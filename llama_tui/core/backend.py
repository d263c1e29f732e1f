"""The contract between the UI / CLI and any model backend (local transformers, remote server).

Everything here is plain data and protocols: importing this module never imports torch,
transformers or textual. Backends live in sibling modules and import their heavy
dependencies lazily, inside functions.

One generation, as data: the caller passes an immutable history snapshot, frozen
`GenerationParams` and a `threading.Event`; the backend returns a `Generation`, an iterator
of text chunks whose `stats` are filled in when it ends (normally, by cancel, or by error).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from enum import Enum
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from llama_tui.core.params import GenerationParams
from llama_tui.core.thinking import ThinkFormat

if TYPE_CHECKING:  # only named in annotations; the TUI imports this before its first paint
    from llama_tui.core.tokens import TokenLog

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class ChatMessage:
    """One message of a conversation, as the model sees it."""

    role: Role
    content: str
    # A reply's thinking (without its markers), for the backend to hand to the model's chat
    # template the way the template expects it (the template decides whether to keep it).
    reasoning: str = ""


class StopReason(str, Enum):
    """Why a generation ended."""

    EOS = "eos"
    LENGTH = "length"
    STOP_STRING = "stop_string"
    CANCELLED = "cancelled"
    ERROR = "error"


@dataclass(frozen=True)
class ReplayFacts:
    """What a backend knows about how it made one reply, to regenerate it exactly: the seed
    it used (drawn when none was set), the decode path, the prompt's token ids (as a sha256)
    and the ids it generated. A remote server gives only some of it (`token_ids` empty)."""

    seed: int | None
    decode_path: Literal["generate", "fast", "remote"]
    prompt_sha256: str | None = None
    token_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class GenerationStats:
    """What one generation did; filled in when it ends."""

    prompt_tokens: int = 0
    generated_tokens: int = 0
    ttft_s: float | None = None  # time to first token (seconds from start to first chunk)
    decode_tokens_per_s: float | None = None  # tokens after the first / time after the first
    total_s: float = 0.0
    stop_reason: StopReason = StopReason.EOS
    dropped_messages: int = 0  # oldest history messages left out to fit the context
    reused_prompt_tokens: int = 0  # prompt tokens served from the KV cache
    error: str | None = None  # sanitised, classified message when stop_reason is ERROR
    # A continued reply: `generated_tokens` counts the whole reply, this many of them came
    # before the last part (the other figures are the last part's).
    earlier_tokens: int = 0
    # How the reply was made (not part of `to_dict`: the chat core files it as the
    # message's replay record, `llama_tui.chat.replay`).
    replay: ReplayFacts | None = field(default=None, compare=False)
    # Of `generated_tokens`, this many were thinking (the rest the answer), over
    # `thinking_s` seconds; counted by the chat core (`chat.reply.stream_reply`).
    thinking_tokens: int = 0
    thinking_s: float | None = None
    # Assisted decoding (engine/local/assisted.py): "prompt lookup" or "draft model", and the
    # main model's decode steps; generated_tokens / assisted_steps is the tokens it accepted
    # per step (1.0: every guess was rejected).
    assisted: str = ""
    assisted_steps: int = 0

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "replay"}
        d["stop_reason"] = self.stop_reason.value
        return d

    @classmethod
    def from_dict(cls, record: object) -> GenerationStats | None:
        """The inverse of `to_dict`, for stats read back from a journal.

        The record comes from a file: a missing field keeps its default, and a value of the
        wrong type (or a non-finite number) makes the whole record unusable (None).
        """
        if not isinstance(record, dict):
            return None
        kw: dict[str, Any] = {}
        for f in fields(cls):
            value = record.get(f.name)
            if value is None or f.name == "replay":
                continue
            if f.name == "stop_reason":
                try:
                    kw[f.name] = StopReason(value)
                except ValueError:
                    return None
            elif f.name in ("error", "assisted"):
                if not isinstance(value, str):
                    return None
                kw[f.name] = value
            elif isinstance(value, bool) or not isinstance(value, (int, float)):
                return None
            elif f.name in _FLOAT_STATS:
                if not math.isfinite(value):
                    return None
                kw[f.name] = float(value)
            elif isinstance(value, int):
                kw[f.name] = value
            else:
                return None
        return cls(**kw)


_FLOAT_STATS = frozenset({"ttft_s", "decode_tokens_per_s", "total_s", "thinking_s"})


class Generation:
    """An in-progress reply: iterate for text chunks; `stats` is set once iteration ends.

    Chunks are whole UTF-8 characters (never a replacement character mid-stream). Iteration
    raises a `GenerationError` on failure, after `stats` has been set with `StopReason.ERROR`.
    """

    def __init__(self, chunks: Iterator[str]) -> None:
        self._chunks = chunks
        self.stats: GenerationStats | None = None
        # Set by the backend before the first chunk so a UI can show "dropped 3 old messages".
        self.dropped_messages = 0
        self.prompt_tokens = 0
        # Per-token logprobs and alternatives (`core.tokens`), appended while it streams;
        # None when not recorded (the `logprobs` setting is 0, or a backend cannot).
        self.token_log: TokenLog | None = None
        # Generated tokens behind the chunks yielded so far (set by the backend before each
        # chunk): how the chat core counts a thought's tokens while it streams.
        self.tokens = 0

    def __iter__(self) -> Iterator[str]:
        return self._chunks

    def text(self) -> str:
        """Consume everything and return the whole reply (tests, headless)."""
        return "".join(self)


class LoadStage(str, Enum):
    RESOLVE = "resolve"
    DOWNLOAD = "download"
    CONVERT = "convert"
    LOAD = "load"
    WARMUP = "warmup"
    READY = "ready"


@dataclass(frozen=True)
class LoadProgress:
    """A progress report from `Backend.load`, safe to post to a UI from a thread."""

    stage: LoadStage
    message: str
    fraction: float | None = None  # 0..1 when known (downloads)


ProgressCallback = Callable[[LoadProgress], None]


@dataclass(frozen=True)
class ModelInfo:
    """What the status bar and exports need to know about the loaded model."""

    name: str  # short display name, e.g. "SmolLM2-135M-Instruct (demo)"
    spec: str  # what the user asked for: repo id[@rev], path, file.gguf, demo, or a server URL
    source: str  # where it was loaded from (folder, URL)
    revision: str | None = None  # commit hash for hub models
    device: str = "cpu"  # e.g. "cuda:0 NVIDIA H100", "mps", "cpu", "cuda:0-3, 4 GPUs", "remote"
    dtype: str = "float32"
    parameters: int | None = None
    context_length: int = 2048
    chat_template: bool = True
    backend: Literal["local", "remote"] = "local"
    placement: dict[str, str] = field(default_factory=dict)  # module -> device for device_map
    thinking: ThinkFormat | None = None  # how the model marks its thinking; None: it does not


@dataclass(frozen=True)
class MemoryReading:
    """Memory in use, for the status bar: GPU memory for accelerators, process RSS on CPU."""

    used_bytes: int
    total_bytes: int | None = None
    label: str = "RSS"  # "RSS", "VRAM"
    per_device: tuple[tuple[str, int], ...] = ()


# The names a dtype may be given by (--dtype, config, environment) -> torch's name for it.
DTYPE_ALIASES: dict[str, str] = {
    "auto": "auto",
    "float32": "float32",
    "fp32": "float32",
    "float": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
    "int4": "int4",  # CPU only: 4-bit weights in torch's int4 kernel, bf16 activations
}
# accelerate's ways to place one model over several devices (--device-map).
DEVICE_MAPS: tuple[str, ...] = ("auto", "balanced", "balanced_low_0", "sequential")


@dataclass(frozen=True)
class LoadOptions:
    """How to load a local model. Built from Settings by the factory; frozen."""

    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16
    threads: int | None = None  # torch intra-op threads on CPU; None = torch default
    trust_remote_code: bool = False  # always passed explicitly to transformers
    allow_pickle: bool = False  # load .bin/.pt weights when no safetensors exist
    device_map: str | None = None  # e.g. "auto": accelerate spreads over all GPUs
    load_in_4bit: bool = False  # bitsandbytes, optional extra
    load_in_8bit: bool = False
    compile: bool = True  # background-compiled fast decode path where supported
    kv_reuse: bool = True  # reuse the KV cache of the common prefix across turns
    # Assisted decoding on the generate path (engine/local/assisted.py): a draft model with
    # the same tokenizer, loaded beside the main one, and prompt lookup (auto | on | off).
    # Load options rather than generation settings: they change the speed, never the text.
    draft_model: str | None = None
    prompt_lookup: str = "auto"


class BackendSettings(Protocol):
    """What building a backend reads from the settings (`config.settings.Settings` has it).

    A protocol, so that the engine builds backends without importing the config package.
    """

    @property
    def model(self) -> str: ...
    @property
    def server(self) -> str | None: ...
    @property
    def server_model(self) -> str | None: ...
    @property
    def api_key_env(self) -> str | None: ...
    @property
    def verify_tls(self) -> bool: ...
    @property
    def raw(self) -> bool: ...
    def load_options(self) -> LoadOptions: ...


@runtime_checkable
class Backend(Protocol):
    """A loaded or loadable model. Implementations: `LocalBackend`, `RemoteBackend`.

    Threading: `load` and `stream` block and run in worker threads; the caller guarantees
    that at most one `stream` runs at a time per backend (the UI waits for the previous one).
    """

    info: ModelInfo | None

    def load(self, progress: ProgressCallback | None = None) -> ModelInfo: ...

    def stream(
        self,
        history: Sequence[ChatMessage],
        params: GenerationParams,
        cancel: threading.Event,
    ) -> Generation: ...

    def count_tokens(self, history: Sequence[ChatMessage]) -> int:
        """Prompt tokens the history would take (chat template included)."""
        ...

    def default_params(self) -> GenerationParams:
        """The model's own defaults (generation_config), on top of ours."""
        ...

    def memory(self) -> MemoryReading: ...

    def close(self) -> None:
        """Free the model (GPU memory included). Safe to call twice."""
        ...


@runtime_checkable
class Replayable(Protocol):
    """Optional for a `Backend`: what `--replay` needs to regenerate replies exactly.
    `LocalBackend` has it; a server does not (it cannot be told which path to take)."""

    def use_decode_path(self, path: str) -> str | None:
        """Serve replies through "fast" or "generate" from now on; why not, or None."""
        ...

    def token_texts(self, ids: Sequence[int]) -> list[str]:
        """The text of each token id on its own."""
        ...


@runtime_checkable
class ReportsOptimising(Protocol):
    """Optional for a `Backend`: whether it is optimising in the background right now.

    `LocalBackend` compiles its fast decode step in a thread after loading (CUDA) and again
    when a conversation outgrows a cache bucket; replies are served meanwhile. The UI polls
    this on its status timer and shows "optimising". It must be cheap and thread-safe to
    read. A backend without it never optimises.
    """

    @property
    def optimising(self) -> bool: ...

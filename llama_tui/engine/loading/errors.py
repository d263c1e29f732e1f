"""Error classification: any exception from resolving or loading a model -> a `ModelError`.

Every failure becomes a `ModelError` subclass whose message names the cause and the fix
(`classify_load_error`; `classify_quantized_load_error` for pre-quantised checkpoints whose
optional package is missing). Messages are built from the spec, not from exception text, and
redacted anyway.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from llama_tui.core.errors import (
    DependencyMissingError,
    GatedRepoError,
    InvalidModelSpecError,
    ModelError,
    RepoNotFoundError,
)
from llama_tui.engine.loading.checks import ACCELERATE_FIX, remote_code_error
from llama_tui.engine.loading.hub import hub_offline, not_cached_error
from llama_tui.engine.loading.specs import user_text
from llama_tui.text import redact

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

    transformers wraps Hub errors in `OSError`; the real one (`GatedRepoError`,
    `RepositoryNotFoundError`, `LocalEntryNotFoundError`, ...) is in `__cause__` /
    `__context__`, so the whole chain is searched, most specific type first. Messages are
    built from the spec, not from exception text, and redacted anyway.
    """
    chain = list(_chain(exc))
    for e in chain:
        if isinstance(e, ModelError):
            return e
    return _hub_error(chain, spec) or _load_failure(exc, chain, spec)


def _hub_error(chain: list[BaseException], spec: str) -> ModelError | None:
    """What the Hub said, or that it could not be reached; None when it is not about the Hub."""
    from huggingface_hub import errors as hf

    def find(*types: type[BaseException]) -> BaseException | None:
        return next((e for e in chain if isinstance(e, types)), None)

    shown = user_text(spec)
    url = f"https://huggingface.co/{user_text(spec.partition('@')[0].strip())}"
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
    if find(hf.RevisionNotFoundError) is not None:
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
    incomplete = getattr(hf, "IncompleteSnapshotError", None)
    not_local = (hf.LocalEntryNotFoundError, hf.OfflineModeIsEnabled)
    if (
        find(*not_local) is not None
        or (incomplete is not None and find(incomplete) is not None)
        or any(_is_network_error(e) for e in chain)
    ):
        return not_cached_error(spec, offline=hub_offline())
    if find(hf.EntryNotFoundError) is not None:
        return ModelError(
            f"{shown} is missing a file transformers needs (config.json or weights).",
            "Check that this is a transformers text-generation model.",
        )
    return None


def _is_network_error(e: BaseException) -> bool:
    return isinstance(e, (ConnectionError, TimeoutError)) or type(e).__name__ in _NETWORK_ERRORS


def _load_failure(exc: BaseException, chain: list[BaseException], spec: str) -> ModelError:
    """Loading failed on our side: custom code, memory, a missing package, or else."""
    shown = user_text(spec)
    texts = [redact(str(e)) for e in chain]
    joined = " ".join(texts).lower()
    if "trust_remote_code" in joined or "custom code" in joined:
        return remote_code_error(spec)
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
            f"{ACCELERATE_FIX}.",
        )
    oom = any("OutOfMemory" in type(e).__name__ or "out of memory" in str(e).lower() for e in chain)
    if oom or isinstance(exc, MemoryError):
        return ModelError(
            f"Not enough memory to load {shown}.",
            "Close other programs, use a smaller model, --dtype bfloat16, or --load-in-4bit "
            "on a GPU.",
        )
    detail = user_text(f"{type(exc).__name__}: {texts[0] if texts else ''}", 300)
    return ModelError(
        f"Could not load {shown}: {detail}",
        "Check the model spec and the log file; a different model or --dtype may help.",
    )


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
    shown = user_text(spec_text)
    name = user_text(method, 40)
    if any(isinstance(e, ImportError) for e in chain) or "pip install" in joined:
        package = QUANT_PACKAGES.get(method)
        if package is None:
            hint = _PIP_HINT_RE.search(joined)
            package = user_text(hint.group(1), 60) if hint else None
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

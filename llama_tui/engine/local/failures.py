"""Exceptions raised inside local generation, as errors that name the cause and the fix.

torch is imported inside the functions: importing this module stays cheap.
"""

from __future__ import annotations

from llama_tui.core.errors import (
    DeviceFatalError,
    GenerationError,
    NonFiniteError,
    OutOfMemoryError,
)

# Cap on an exception message quoted to the user: long CUDA traces would flood the status line.
MAX_ERROR_CHARS = 400


def classify_error(exc: BaseException, device_type: str = "cpu") -> GenerationError:
    """Map an exception raised inside `generate` to a GenerationError with cause and fix."""
    if isinstance(exc, GenerationError):
        return exc
    message = f"{type(exc).__name__}: {exc}".strip()
    if len(message) > MAX_ERROR_CHARS:
        message = message[:MAX_ERROR_CHARS] + "…"
    lowered = message.lower()
    if _is_oom(exc):
        return OutOfMemoryError(
            f"The {device_type} ran out of memory during generation. Memory has been freed; "
            "the model is still loaded.",
            "Try a shorter context (start a new chat or delete old turns), fewer max new tokens, "
            "or load the model in 4-bit (--load-in-4bit).",
        )
    if "probability tensor contains" in lowered:
        return NonFiniteError(
            f"The model produced NaN or infinite probabilities ({message}).",
            "This is usually float16 overflow: use --dtype bfloat16 (or float32), "
            "or greedy decoding.",
        )
    if "device-side assert" in lowered:
        return DeviceFatalError(
            f"The GPU hit a device-side assert ({message}); the CUDA context is unusable now.",
            "Save your conversation and restart llama-tui.",
        )
    if "not currently implemented for the mps device" in lowered:
        return GenerationError(
            f"An operation is not implemented on Apple MPS ({message}).",
            "Restart with PYTORCH_ENABLE_MPS_FALLBACK=1 set in the environment (that op then "
            "runs on the CPU), or use --device cpu.",
        )
    return GenerationError(
        f"Generation failed: {message}",
        "Try again; if it keeps failing, try greedy decoding or different settings, and report it.",
    )


def free_device_memory(device_type: str) -> None:
    """Return cached allocator blocks to the device (after an OOM, or when a model goes)."""
    import torch

    if device_type == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif device_type == "mps" and hasattr(torch, "mps"):
        torch.mps.empty_cache()


def _is_oom(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, torch.OutOfMemoryError):
        return True
    # MPS reports OOM as a plain RuntimeError.
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()

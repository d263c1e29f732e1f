"""Handing freed host memory back to the operating system after a model goes.

Freeing a model's tensors returns their memory to glibc's malloc, not to the system: the
arenas (one per thread that allocated, and model loads run in worker threads) keep the pages,
so every `/model` reload grew the process by part of a model. `malloc_trim(0)` releases the
free pages of every arena. Other C libraries (musl, macOS) have no such call; nothing to do.
"""

from __future__ import annotations

import ctypes
import sys

__all__ = ["release_host_memory"]


def release_host_memory() -> bool:
    """Hand freed heap memory back to the OS (glibc only); True when it was asked to."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # musl and others: nothing to trim
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    trim(0)
    return True

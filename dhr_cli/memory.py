"""Giving freed memory back to the operating system.

glibc's malloc keeps freed blocks below its (self-raising) mmap threshold in the heap, so
dropping a network of many 10-MB tensors (e4e's 1.1 GB) leaves the process's RSS where it was;
`malloc_trim` returns those pages. Elsewhere (macOS, musl, Windows) this is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

__all__ = ["return_free_memory"]


@functools.cache
def _malloc_trim():  # -> the C function, or None
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


def return_free_memory() -> None:
    """Hand the allocator's free heap pages back to the system (glibc only)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)

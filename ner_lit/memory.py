"""Handing freed memory back to the operating system (training between epochs, a server after start-up).

Standard library only: ``serve`` calls it without importing Lightning.
"""
from __future__ import annotations


def release_freed_memory() -> bool:
    """Hand the memory Python and torch have freed back to the operating system, where the C
    library can (glibc's ``malloc_trim``); whether it could. Nothing in use is touched."""
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        trim = None
    if trim is None:
        return False
    trim(0)
    return True

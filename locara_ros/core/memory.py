"""Process memory housekeeping (no ROS).

glibc keeps memory freed by Python, numpy and onnxruntime in its heaps (one arena per thread
that allocated) and reuses it, but rarely returns it to the system: a node that synthesizes or
decodes variable-sized buffers on worker threads shows a resident size that climbs in steps with
each new high-water mark. :func:`trim_heap` asks glibc to release the free parts (`malloc_trim`);
the tts node calls it while it is idle, never on the audio path (it walks the heaps, a few ms).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys
from typing import Any

_libc: Any = None
_checked = False


def _malloc_trim() -> Any:
    global _libc, _checked
    if not _checked:
        _checked = True
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                if hasattr(libc, "malloc_trim"):  # glibc; musl has none
                    libc.malloc_trim.argtypes = [ctypes.c_size_t]
                    libc.malloc_trim.restype = ctypes.c_int
                    _libc = libc
            except OSError:
                _libc = None
    return _libc.malloc_trim if _libc is not None else None


def trim_heap() -> bool:
    """Return freed heap memory to the system; False where there is no glibc malloc_trim."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True

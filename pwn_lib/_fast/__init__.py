"""Compiled helpers for the fast paths (pwn_lib.fast_paths), loaded with ctypes (no torch headers, builds in a second).

``make setup`` (or ``make fast``) compiles ``cached_mol.c`` into ``libpwnfast.so`` beside this file with the
system C compiler. :func:`library` returns it, or None when it has not been built; callers then say so.
"""

from __future__ import annotations

import ctypes
from functools import cache
from pathlib import Path

import torch

LIBRARY_PATH = Path(__file__).with_name("libpwnfast.so")
BUILD_HINT = f"{LIBRARY_PATH} is not built: run `make fast` (needs a C compiler) in the repository root"


@cache
def library() -> ctypes.CDLL | None:
    """The compiled library, or None when ``make fast`` has not built it."""
    if not LIBRARY_PATH.exists():
        return None
    lib = ctypes.CDLL(str(LIBRARY_PATH))
    lib.pwn_cached_mol.restype = ctypes.c_int
    return lib


def pointer(tensor: torch.Tensor | None) -> ctypes.c_void_p:
    """The address of a contiguous float32/int32 CPU tensor (NULL for None), for a C argument."""
    if tensor is None:
        return ctypes.c_void_p(None)
    if not tensor.is_contiguous() or tensor.device.type != "cpu":
        raise ValueError("pwn_lib._fast needs contiguous CPU tensors")
    return ctypes.c_void_p(tensor.data_ptr())


__all__ = ["BUILD_HINT", "LIBRARY_PATH", "library", "pointer"]

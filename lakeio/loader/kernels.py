"""The compiled gather: one pass that copies each sample's row from its chunk into the batch.

numpy needs a call per chunk (or per sample) to gather rows from several arrays, and at 64×64
those calls, not the bytes, were most of a warm epoch. This kernel takes a table of each
loaded chunk's address and copies every row with one ``memcpy``, without the GIL, so the
batcher thread runs beside the training loop. It is compiled by numba (wheels on Linux, macOS
and Windows; ``cache=True`` keeps the machine code on disk between processes) on a thread the
first time a loader asks for it; until it is ready, batches are gathered with numpy
(`lakeio.loader.batch.gather`), so the JIT never delays a first batch.

``dask.config`` ``lakeio.loader.gather``: ``"auto"`` (default: compiled once ready),
``"numpy"`` (never compile) or ``"compiled"`` (compile now, waiting for it).
"""

from __future__ import annotations

import ctypes
import threading
import warnings
from collections.abc import Callable

import dask.config
import numpy as np

dask.config.update_defaults({"lakeio": {"loader": {"gather": "auto"}}})

CopyRows = Callable[[int, int, np.ndarray, np.ndarray, np.ndarray, np.ndarray], int]

_lock = threading.Lock()
_compiled: CopyRows | None = None
_compiling: threading.Thread | None = None
_failure: BaseException | None = None  # why compiling failed (the numpy path stays)


def _copy_rows_py(dest, row_bytes, addresses, lengths, chunk_ids, rows):
    """The kernel, in Python (numba compiles this very function): copy row ``rows[i]`` of chunk ``chunk_ids[i]`` (at ``addresses[chunk]``, holding
    ``lengths[chunk]`` rows) to ``dest + i * row_bytes``; returns -1, or the first sample whose
    chunk is not held or whose row is past its chunk's end (nothing is read out of bounds)."""
    for i in range(chunk_ids.shape[0]):
        chunk, row = chunk_ids[i], rows[i]
        if chunk < 0 or chunk >= min(addresses.shape[0], lengths.shape[0]):
            return i
        if row < 0 or row >= lengths[chunk]:
            return i
        base = addresses[chunk]
        if base == 0:
            return i
        _memcpy(dest + i * row_bytes, base + row * row_bytes, row_bytes)
    return -1


def _memcpy(dest: int, src: int, n: int) -> None:
    """Copy ``n`` bytes from address ``src`` to address ``dest``: ctypes' memmove in Python;
    in the compiled kernel, LLVM's memcpy (the overload `_compile` registers)."""
    ctypes.memmove(int(dest), int(src), int(n))


def _compile() -> CopyRows:
    """Build (or load from numba's on-disk cache) the kernel; a few hundred ms the first time."""
    import numba
    from numba import types
    from numba.core import cgutils
    from numba.extending import intrinsic, overload

    @intrinsic
    def memcpy(typingctx, dest, src, n):
        def codegen(context, builder, signature, args):
            pointer = context.get_value_type(types.CPointer(types.uint8))
            to = builder.inttoptr(args[0], pointer)
            start = builder.inttoptr(args[1], pointer)
            cgutils.raw_memcpy(builder, to, start, args[2], 1)
            return context.get_dummy_value()

        return types.void(types.int64, types.int64, types.int64), codegen

    @overload(_memcpy)
    def _memcpy_compiled(dest, src, n):
        return lambda dest, src, n: memcpy(dest, src, n)

    array = types.Array(types.int64, 1, "C", readonly=True)
    signature = types.int64(types.int64, types.int64, array, array, array, array)
    return numba.njit(signature, nogil=True, cache=True)(_copy_rows_py)


def _compile_in_background() -> None:
    global _compiled, _failure
    try:
        kernel = _compile()
    except Exception as exc:  # e.g. numba broken on this platform: numpy it is
        with _lock:
            _failure = exc
        warnings.warn(
            f"lakeio's compiled gather did not compile ({exc!r}); batches are gathered with "
            "numpy, which is slower for small images",
            RuntimeWarning,
            stacklevel=1,
        )
        return
    with _lock:
        _compiled = kernel


def copy_rows_kernel(wait: bool = False) -> CopyRows | None:
    """The compiled kernel if it is ready (starting its compilation if nobody has), else None;
    ``wait``: block until it is compiled. None too where ``lakeio.loader.gather`` is "numpy"."""
    global _compiling
    mode = dask.config.get("lakeio.loader.gather", "auto")
    if mode not in ("auto", "numpy", "compiled"):
        raise ValueError(
            f'lakeio.loader.gather is {mode!r}; expected "auto", "numpy" or "compiled"'
        )
    if mode == "numpy":
        return None
    with _lock:
        if _compiled is not None or _failure is not None:
            return _compiled
        if _compiling is None:
            _compiling = threading.Thread(
                target=_compile_in_background, name="lakeio-compile", daemon=True
            )
            _compiling.start()
        thread = _compiling
    if wait or mode == "compiled":
        thread.join()
        with _lock:
            if _failure is not None and mode == "compiled":
                raise RuntimeError("lakeio's compiled gather failed to compile") from _failure
            return _compiled
    return None

"""The compiled inverse of `lakeio.format.predict`, in a module of its own: importing it imports
numba (only lakes with ``predict-zstd`` fields need it), and its functions, defined at module
level, are found in numba's on-disk cache by every later process."""

from __future__ import annotations

import numba

_jit = numba.njit(cache=True, nogil=True, boundscheck=False)


@_jit
def undo_image(out, planes, colour):  # (H, W, C) from residual planes (C, H, W), overwritten
    channels, height, width = planes.shape
    if colour and channels >= 3:
        for h in range(height):
            for w in range(width):
                planes[0, h, w] += planes[1, h, w]
                planes[2, h, w] += planes[1, h, w]
    for c in range(channels):
        for h in range(1, height):
            for w in range(width):
                planes[c, h, w] += planes[c, h - 1, w]
    if channels == 3:  # (spelled out: the loop over channels kept this at ~1 GB/s)
        for h in range(height):
            for w in range(width):
                out[h, w, 0] = planes[0, h, w]
                out[h, w, 1] = planes[1, h, w]
                out[h, w, 2] = planes[2, h, w]
    elif channels == 1:
        for h in range(height):
            for w in range(width):
                out[h, w, 0] = planes[0, h, w]
    else:
        for h in range(height):
            for w in range(width):
                for c in range(channels):
                    out[h, w, c] = planes[c, h, w]


@_jit
def undo(planes, out, colour):  # (n, C, H, W) -> (n, H, W, C)
    for i in range(planes.shape[0]):
        undo_image(out[i], planes[i], colour)

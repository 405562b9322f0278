"""Lossless codecs for decoded pixels: ratio and one-core decode speed (issue 15, first slice).

Run: .venv/bin/python benchmarks/codecs.py [--chunks 4]      # about a minute

Which predictor to put in front of zstd, measured before building the codec. Four sets of
natural images: clean photo crops (scikit-image's photographs) and the same crops after a JPEG
q90 round trip (what most datasets are), at 64x64 (chunks of 341 images, 4.2 MB) and 224x224
(28 images, 4.2 MB). For each chunk codec: the ratio (decoded bytes / stored bytes) and the
decode speed on one core, in GB/s of decoded pixels (best of 7), with its share of plain
zstd:3's speed in the same run. For the predictors, decode is zstd's decompression into a
buffer plus the inverse (numba kernels), each also timed alone (the inverse on a copy of the
residuals, the copy's time taken off).

Predictors (residual = pixel - prediction, modulo 256), each per channel:
- ``vdelta``: the pixel above; the inverse is a running sum down each column, whole rows at
  a time (vectorises).
- ``grad``: left + above - above-left; the inverse is a running sum along each row, then one
  down the columns.
- ``med`` (LOCO-I's median edge detector, as JPEG-LS): ratio only (its inverse is sequential).
``+sg`` (subtract green): red and blue residuals minus the green one; being linear it commutes
with the predictors, so the inverse adds green back to the residuals first. ``planar``: the
residuals stored as planes (C, H, W) per image rather than interleaved (H, W, C).
The image codecs (WebP lossless, JPEG-XL, HTJ2K) are measured where ``imagecodecs`` is
installed (the benchmark environment), one image at a time.
"""

from __future__ import annotations

import argparse
import io
import time

import numba
import numpy as np
from numcodecs import Blosc, Zstd


def jpeg_round_trip(images: np.ndarray, quality: int = 90) -> np.ndarray:
    from PIL import Image

    out = np.empty_like(images)
    for i, image in enumerate(images):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, "JPEG", quality=quality)
        out[i] = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    return out


def residuals(x: np.ndarray, predictor: str, sg: bool, planar: bool) -> np.ndarray:
    """The forward transform (numpy, not tuned): (n, H, W, C) uint8 -> residuals uint8."""
    p = x.transpose(0, 3, 1, 2).astype(np.int32)  # (n, C, H, W)
    up = np.zeros_like(p)
    up[:, :, 1:] = p[:, :, :-1]
    left = np.zeros_like(p)
    left[..., 1:] = p[..., :-1]
    upleft = np.zeros_like(p)
    upleft[:, :, 1:, 1:] = p[:, :, :-1, :-1]
    if predictor == "vdelta":
        prediction = up
    elif predictor == "grad":
        prediction = left + up - upleft
    else:  # med
        low, high = np.minimum(left, up), np.maximum(left, up)
        prediction = np.where(
            upleft >= high, low, np.where(upleft <= low, high, left + up - upleft)
        )
    r = p - prediction
    if sg:
        r[:, 0] -= r[:, 1]
        r[:, 2] -= r[:, 1]
    r = (r & 0xFF).astype(np.uint8)
    return np.ascontiguousarray(r if planar else r.transpose(0, 2, 3, 1))


# The inverse kernels. Each loop is a small function of its own: numba compiles these into
# vectorised code where one function holding every branch (measured: 3.3 GB/s) was not.
_jit = numba.njit(cache=True, nogil=True, boundscheck=False)


@_jit
def _sum_down(out, res):  # out[h] = res[h] + out[h - 1], whole rows (2-D)
    out[0] = res[0]
    for h in range(1, out.shape[0]):
        for j in range(out.shape[1]):
            out[h, j] = res[h, j] + out[h - 1, j]


@_jit
def _sum_along_rows(res):  # (H, W, C): a running sum along each row, per channel
    for h in range(res.shape[0]):
        for w in range(1, res.shape[1]):
            for c in range(res.shape[2]):
                res[h, w, c] += res[h, w - 1, c]


@_jit
def _sum_along_plane_rows(planes):  # (C, H, W)
    for c in range(planes.shape[0]):
        for h in range(planes.shape[1]):
            for w in range(1, planes.shape[2]):
                planes[c, h, w] += planes[c, h, w - 1]


@_jit
def _green_back_and_sum_down(out, res):  # (H, W, 3), in one pass over whole pixels
    for w in range(out.shape[1]):
        g = res[0, w, 1]
        out[0, w, 0] = res[0, w, 0] + g
        out[0, w, 1] = g
        out[0, w, 2] = res[0, w, 2] + g
    for h in range(1, out.shape[0]):
        for w in range(out.shape[1]):
            g = res[h, w, 1]
            out[h, w, 0] = res[h, w, 0] + g + out[h - 1, w, 0]
            out[h, w, 1] = g + out[h - 1, w, 1]
            out[h, w, 2] = res[h, w, 2] + g + out[h - 1, w, 2]


@_jit
def _inverse_interleaved(r, out, grad, sg):  # r, out: (n, H, W, 3); r is overwritten
    n, height, width, _ = r.shape
    for i in range(n):
        if grad:
            _sum_along_rows(r[i])
        if sg:
            _green_back_and_sum_down(out[i], r[i])
        else:
            _sum_down(out[i].reshape(height, width * 3), r[i].reshape(height, width * 3))


@_jit
def _planar_image(out, planes, grad, sg):  # (H, W, 3) from residual planes (3, H, W)
    channels, height, width = planes.shape
    if sg:
        for h in range(height):
            for w in range(width):
                planes[0, h, w] += planes[1, h, w]
                planes[2, h, w] += planes[1, h, w]
    if grad:
        _sum_along_plane_rows(planes)
    for c in range(channels):
        for h in range(1, height):
            for w in range(width):
                planes[c, h, w] += planes[c, h - 1, w]
    for h in range(height):
        for w in range(width):
            out[h, w, 0] = planes[0, h, w]
            out[h, w, 1] = planes[1, h, w]
            out[h, w, 2] = planes[2, h, w]


@_jit
def _inverse_planar(r, out, grad, sg):  # r: (n, 3, H, W), overwritten; out: (n, H, W, 3)
    for i in range(r.shape[0]):
        _planar_image(out[i], r[i], grad, sg)


def best_of(run, reps: int = 7) -> float:
    best = float("inf")
    for _ in range(reps):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best


def plain_rows(chunks: list[np.ndarray], nbytes: int) -> tuple[list[tuple], float]:
    rows, zstd3_seconds = [], 0.0
    for name, codec in (
        ("lz4 (lakeio's default)", Blosc(cname="lz4", clevel=5, shuffle=Blosc.NOSHUFFLE)),
        ("zstd:3", Zstd(level=3)),
        ("blosc-zstd:5:bitshuffle", Blosc(cname="zstd", clevel=5, shuffle=Blosc.BITSHUFFLE)),
    ):
        stored = [codec.encode(c) for c in chunks]
        outs = [np.empty_like(c) for c in chunks]
        seconds = best_of(
            lambda codec=codec, stored=stored, outs=outs: [
                codec.decode(s, o) for s, o in zip(stored, outs, strict=True)
            ]
        )
        if name == "zstd:3":
            zstd3_seconds = seconds
        rows.append((name, nbytes / sum(map(len, stored)), nbytes / seconds, None, None))
    return rows, zstd3_seconds


def predictor_rows(chunks: list[np.ndarray], nbytes: int) -> list[tuple]:
    rows = []
    for predictor in ("vdelta", "grad", "med"):
        for sg, planar in ((False, False), (True, False), (True, True)):
            for level in (1, 3):
                name = f"{predictor}{'+sg' if sg else ''}{' planar' if planar else ''}+zstd:{level}"
                zstd = Zstd(level=level)
                res = [residuals(c, predictor, sg, planar) for c in chunks]
                stored = [zstd.encode(r) for r in res]
                ratio = nbytes / sum(map(len, stored))
                if predictor == "med":
                    rows.append((name, ratio, None, None, None))
                    continue
                rows.append(
                    (
                        name,
                        ratio,
                        *_decode_speeds(chunks, stored, zstd, res, predictor, sg, planar, nbytes),
                    )
                )
    return rows


def _decode_speeds(chunks, stored, zstd, res, predictor, sg, planar, nbytes):
    scratch = [np.empty_like(r) for r in res]
    outs = [np.empty_like(c) for c in chunks]
    grad = predictor == "grad"

    def inverse(r, out):
        (_inverse_planar if planar else _inverse_interleaved)(r, out, grad, sg)

    def decode():
        for s, r, o in zip(stored, scratch, outs, strict=True):
            zstd.decode(s, r)
            inverse(r, o)

    def decompress_only():
        for s, r in zip(stored, scratch, strict=True):
            zstd.decode(s, r)

    decode()
    for out, chunk in zip(outs, chunks, strict=True):
        assert np.array_equal(out, chunk), "the inverse is not exact"
    pristine = [r.copy() for r in res]  # (the inverse overwrites its input: timed on copies)

    def copy_back():
        for r, p in zip(scratch, pristine, strict=True):
            np.copyto(r, p)

    def copy_and_invert():
        for r, p, o in zip(scratch, pristine, outs, strict=True):
            np.copyto(r, p)
            inverse(r, o)

    inverse_seconds = max(best_of(copy_and_invert) - best_of(copy_back), 1e-9)
    return nbytes / best_of(decode), nbytes / best_of(decompress_only), nbytes / inverse_seconds


def image_codec_rows(chunks: list[np.ndarray], nbytes: int) -> list[tuple]:
    try:
        import imagecodecs
    except ImportError:
        return []
    rows = []
    for name, encode, decode in (
        (
            "WebP lossless",
            lambda a: imagecodecs.webp_encode(a, lossless=True),
            imagecodecs.webp_decode,
        ),
        (
            "JPEG-XL lossless",
            lambda a: imagecodecs.jpegxl_encode(a, lossless=True),
            imagecodecs.jpegxl_decode,
        ),
        ("HTJ2K lossless", lambda a: imagecodecs.htj2k_encode(a), imagecodecs.htj2k_decode),
    ):
        try:
            stored = [[encode(image) for image in c] for c in chunks]
        except Exception as exc:  # (a codec left out of this imagecodecs build)
            print(f"  ({name}: {exc})")
            continue
        seconds = best_of(
            lambda decode=decode, stored=stored: [[decode(s) for s in c] for c in stored], reps=3
        )
        size = sum(len(s) for c in stored for s in c)
        rows.append((name, nbytes / size, nbytes / seconds, None, None))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--chunks", type=int, default=4, help="chunks per image set")
    args = parser.parse_args()
    from lakeio.testing.images import photo_crop_arrays

    for size, per_chunk in ((64, 341), (224, 28)):
        clean = photo_crop_arrays(per_chunk * args.chunks, (size, size))[0]
        for label, images in (
            ("clean photo crops", clean),
            ("after JPEG q90", jpeg_round_trip(clean)),
        ):
            chunks = [
                np.ascontiguousarray(images[k * per_chunk : (k + 1) * per_chunk])
                for k in range(args.chunks)
            ]
            nbytes = sum(c.nbytes for c in chunks)
            rows, zstd3 = plain_rows(chunks, nbytes)
            rows += predictor_rows(chunks, nbytes) + image_codec_rows(chunks, nbytes)
            print(f"\n{size}x{size}, {label}: {args.chunks} chunks of {per_chunk} images\n")
            print("| codec | ratio | decode GB/s | of zstd:3 | zstd part GB/s | inverse GB/s |")
            print("|---|---|---|---|---|---|")
            for name, ratio, speed, part, inverse in rows:
                shown = [f"{ratio:.2f}"]
                shown += (
                    [f"{speed / 1e9:.2f}", f"{speed * zstd3 / nbytes:.2f}"] if speed else ["—", "—"]
                )
                shown += [f"{part / 1e9:.2f}", f"{inverse / 1e9:.1f}"] if part else ["", ""]
                print(f"| {name} | {' | '.join(shown)} |", flush=True)


if __name__ == "__main__":
    main()

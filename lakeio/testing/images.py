"""Real image files for tests, benchmarks and the demo, made on the spot (no downloads).

`photo_crops` cuts natural-image patches from the photographs scikit-image ships, so codecs and
decoders see real image statistics rather than noise.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
from PIL import Image

# Colour photographs that scikit-image ships inside its wheel (no network needed).
PHOTOS = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "immunohistochemistry",
    "stereo_motorcycle",
    "hubble_deep_field",
    "retina",
)


def load_photo(name: str) -> np.ndarray:
    """One shipped photograph as (H, W, 3) uint8."""
    import skimage.data

    image = getattr(skimage.data, name)()
    if isinstance(image, tuple):  # stereo pairs come as (left, right, disparity)
        image = image[0]
    return np.ascontiguousarray(image[..., :3]).astype(np.uint8)


def photo_crops(
    count: int, size: tuple[int, int], seed: int = 0, photos=PHOTOS
) -> Iterator[tuple[np.ndarray, int]]:
    """``count`` random (crop, photo index) pairs of ``size`` (H, W) from the shipped photographs."""
    rng = np.random.default_rng(seed)
    loaded = [load_photo(name) for name in photos]
    for i in range(count):
        label = i % len(loaded)
        photo = loaded[label]
        scale = rng.uniform(0.25, 0.6)
        ch = max(size[0], int(photo.shape[0] * scale))
        cw = max(size[1], int(ch * size[1] / size[0]))
        ch, cw = min(ch, photo.shape[0]), min(cw, photo.shape[1])
        y = rng.integers(0, photo.shape[0] - ch + 1)
        x = rng.integers(0, photo.shape[1] - cw + 1)
        crop = Image.fromarray(photo[y : y + ch, x : x + cw]).resize(
            (size[1], size[0]), Image.Resampling.BILINEAR
        )
        yield np.asarray(crop), label


def photo_crop_arrays(
    count: int, size: tuple[int, int], seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """`photo_crops` as two arrays: images (count, H, W, 3) uint8 and their labels."""
    pairs = list(photo_crops(count, size, seed))
    return np.stack([image for image, _ in pairs]), np.array([label for _, label in pairs])


def write_image_folder(
    root: str | os.PathLike,
    count: int,
    size: tuple[int, int] = (64, 64),
    fmt: str = "png",
    seed: int = 0,
    photos=PHOTOS,
    quality: int = 90,
) -> list[tuple[str, np.ndarray, int]]:
    """Write an ImageFolder tree of photo crops (class = source photo); returns (relpath, pixels, label)."""
    written = []
    for i, (pixels, label) in enumerate(photo_crops(count, size, seed, photos)):
        cls = photos[label]
        rel = f"{cls}/{i:06d}.{fmt}"
        path = os.path.join(os.fspath(root), rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        kwargs = {"quality": quality} if fmt in ("jpg", "jpeg", "webp") else {}
        Image.fromarray(pixels).save(path, **kwargs)
        written.append((rel, pixels, label))
    return written

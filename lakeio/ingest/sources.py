"""What an ingest reads: an ImageFolder tree, a .npy/.npz file, in-memory arrays, or (image, label) pairs.

Listing is deterministic (sorted) so two ingests of the same folder give the same lake. Files
that are not candidates (hidden files, non-image extensions, files outside class folders) are
ignored and counted, not decoded.
"""

from __future__ import annotations

import io
import posixpath
from dataclasses import dataclass

import numpy as np

from lakeio.errors import IngestError
from lakeio.format.location import Location
from lakeio.format.paths import stored_path

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")
ARRAY_EXTENSIONS = (".npy", ".npz")


@dataclass(frozen=True)
class SourceFile:
    """One candidate image: path relative to the source root, label, size, and a change stamp.

    ``stamp`` (modification time, or ETag on object stores) goes into the segment id with the
    size, so a file replaced under the same name is ingested again rather than skipped.
    """

    path: str
    label: int
    size: int
    stamp: str = ""


@dataclass(frozen=True)
class FolderScan:
    """The result of listing an ImageFolder tree (``SRC/<class>/<...>/<image>``)."""

    classes: tuple[str, ...]
    files: tuple[SourceFile, ...]
    ignored: tuple[tuple[str, str], ...]
    empty_classes: tuple[str, ...]


def _is_hidden(relative: str) -> bool:
    return any(part.startswith(".") for part in relative.split("/"))


def _is_folder_marker(name: str, info: dict) -> bool:
    """An empty ``cls/`` object that object-store consoles create for a "folder": the folder
    itself is listed too, so the marker is neither an image nor a file to report."""
    return name.endswith("/") and not int(info.get("size") or 0)


def _stamp(info: dict) -> str:
    """What changes when a file's content does: mtime on disks, ETag / LastModified on stores."""
    for key in ("mtime", "ETag", "etag", "LastModified", "last_modified", "updated", "md5Hash"):
        if info.get(key) is not None:
            return str(info[key])
    return ""


def _list_tree(src: Location) -> dict[str, dict]:
    """Every entry under ``src`` with its details, or one error that says what stopped the listing."""
    try:
        entries = src.fs.find(src.root, withdirs=True, detail=True)
    except FileNotFoundError:
        raise IngestError(f"{src.describe()}: source folder not found") from None
    except UnicodeDecodeError as exc:  # e.g. a zip entry flagged UTF-8 whose name is not
        raise IngestError(
            f"{src.describe()}: the listing holds a name that claims to be UTF-8 but is not "
            f"({exc}); re-create the archive, or unpack it and ingest the folder"
        ) from None
    if not src.fs.isdir(src.root):
        raise IngestError(f"{src.describe()}: not a folder, .npy or .npz file")
    return entries


def scan_image_folder(src: Location, extra_classes: tuple[str, ...] = ()) -> FolderScan:
    """List ``src`` as an ImageFolder; ``extra_classes`` are kept first (classes of a lake appended to).

    Class names are the class folders' names in `lakeio.format.paths.stored_path` form, so a
    folder name that is not valid UTF-8 still fits the manifest's JSON, without loss.
    """
    entries = _list_tree(src)
    prefix = src.root.rstrip("/") + "/"
    class_dirs, candidates, ignored = set(), [], []
    for full, info in entries.items():
        relative = full[len(prefix) :] if full.startswith(prefix) else full
        if not relative or _is_folder_marker(full, info):
            continue
        parts = relative.split("/")
        if _is_hidden(relative):
            if info.get("type") != "directory":
                ignored.append((relative, "hidden file"))
            continue
        if info.get("type") == "directory":
            if len(parts) == 1:
                class_dirs.add(stored_path(parts[0]))  # class names go into JSON: valid UTF-8
            continue
        if len(parts) == 1:
            ignored.append((relative, "file outside any class folder"))
        elif not relative.lower().endswith(IMAGE_EXTENSIONS):
            ignored.append((relative, "not an image extension"))
        else:
            size = int(info.get("size") or 0)
            candidates.append((stored_path(parts[0]), relative, size, _stamp(info)))
    if not class_dirs:
        raise IngestError(
            f"{src.describe()}: no class folders found; expected the ImageFolder layout "
            "SRC/<class>/<image> (e.g. SRC/cat/001.jpg)"
        )
    new_classes = sorted(class_dirs - set(extra_classes))
    classes = (*extra_classes, *new_classes)
    index = {name: i for i, name in enumerate(classes)}
    files = tuple(
        SourceFile(path, index[cls], size, stamp)
        for cls, path, size, stamp in sorted(candidates, key=lambda c: (index[c[0]], c[1]))
    )
    used = {f.label for f in files}
    empty = tuple(c for c in sorted(class_dirs) if index[c] not in used)
    return FolderScan(classes, files, tuple(sorted(ignored)), empty)


@dataclass(frozen=True)
class ArraySource:
    """Images and labels held in memory (from arrays, a .npy/.npz file, or an iterable)."""

    images: np.ndarray | list
    labels: np.ndarray
    classes: tuple[str, ...]
    name: str

    def __len__(self) -> int:
        return len(self.labels)


def array_source(images, labels=None, classes=None, name: str = "array") -> ArraySource:
    """Validate in-memory images (N, H, W[, C]) and labels (N,) as an ingest source."""
    if labels is None:
        raise IngestError(f"{name}: labels are required with array images (pass labels=...)")
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise IngestError(
            f"{name}: labels must be a 1-D integer array, found shape {labels.shape} dtype {labels.dtype}"
        )
    if len(images) != len(labels):
        raise IngestError(f"{name}: {len(images)} images but {len(labels)} labels")
    if isinstance(images, np.ndarray):
        if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] not in (1, 3, 4)):
            raise IngestError(
                f"{name}: images have shape {images.shape}; expected (N, H, W) or (N, H, W, C) "
                "with C in 1, 3, 4"
            )
        if images.dtype != np.uint8:
            raise IngestError(
                f"{name}: images are {images.dtype}; expected uint8 (scale to 0..255 first)"
            )
    if len(labels) and labels.min() < 0:
        raise IngestError(f"{name}: labels must be >= 0, found {labels.min()}")
    top = int(labels.max()) + 1 if len(labels) else 0
    if classes is None:
        classes = tuple(str(i) for i in range(top))
    classes = tuple(str(c) for c in classes)
    if top > len(classes):
        raise IngestError(
            f"{name}: label {top - 1} has no class name ({len(classes)} classes given)"
        )
    return ArraySource(images, labels.astype(np.int64), classes, name)


def iterable_source(pairs, classes=None, name: str = "iterable") -> ArraySource:
    """Collect an iterable of (image, label) pairs; images may differ in size if --size is given."""
    images, labels = [], []
    for i, item in enumerate(pairs):
        try:
            image, label = item
        except (TypeError, ValueError):
            raise IngestError(
                f"{name}[{i}]: expected an (image, label) pair, got {type(item).__name__}"
            ) from None
        images.append(np.asarray(image))
        labels.append(int(label))
    return array_source(images, np.asarray(labels, dtype=np.int64), classes, name)


def load_array_file(src: Location, labels_url: str | None = None) -> ArraySource:
    """Read a .npz (keys images+labels, or x+y) or a .npy of images plus a labels .npy."""
    name = src.describe()
    try:
        data = src.fs.cat_file(src.root)
    except FileNotFoundError:
        raise IngestError(f"{name}: file not found") from None
    try:
        loaded = np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as exc:
        raise IngestError(f"{name}: not a readable .npy/.npz without pickle ({exc})") from None
    if isinstance(loaded, np.ndarray):
        if labels_url is None:
            raise IngestError(
                f"{name}: a .npy holds images only; give labels with --labels FILE.npy"
            )
        lab_loc = Location.of(labels_url, src.storage_options)
        try:
            labels = np.load(io.BytesIO(lab_loc.fs.cat_file(lab_loc.root)), allow_pickle=False)
        except FileNotFoundError:
            raise IngestError(f"--labels {labels_url}: file not found") from None
        except ValueError as exc:
            raise IngestError(f"--labels {labels_url}: not a readable .npy ({exc})") from None
        return array_source(loaded, labels, None, name)
    try:
        return _from_npz(loaded, name)
    except ValueError as exc:  # object arrays (pickles) are refused, and so are bad shapes
        raise IngestError(f"{name}: {exc}") from None


def _from_npz(loaded, name: str) -> ArraySource:
    with loaded:
        keys = set(loaded.files)
        image_key = next((k for k in ("images", "x", "X") if k in keys), None)
        label_key = next((k for k in ("labels", "y", "Y") if k in keys), None)
        if image_key is None or label_key is None:
            raise IngestError(
                f"{name}: expected arrays 'images' and 'labels' (or 'x' and 'y'), found {sorted(keys)}"
            )
        classes = tuple(str(c) for c in loaded["classes"]) if "classes" in keys else None
        return array_source(loaded[image_key], loaded[label_key], classes, name)


def is_array_file(url: str) -> bool:
    return posixpath.basename(url.rstrip("/")).lower().endswith(ARRAY_EXTENSIONS)

"""The `lakeio` command line: ingest, info, verify, stats, codecs.

Errors lakeio raises on purpose print as one line (``lakeio: error: …``) with exit code 2 for
bad usage and 1 for failed work; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from lakeio.errors import LakeError

SO_HELP = "fsspec storage option, repeatable; dotted keys nest (client_kwargs.region_name=...)"
EPILOG = "Docs: docs/cli.md. Every command takes --help."


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


# Option names that hold credentials or names: always strings, so a key "20240101" stays one.
_SECRET_WORDS = ("key", "secret", "token", "password", "user", "profile", "account", "client_id")


def _is_secret(name: str) -> bool:
    return any(word in name.lower() for word in _SECRET_WORDS)


def _storage_options(pairs: Sequence[str]) -> dict:
    """``KEY=VALUE`` pairs → a dict; dotted keys nest, values parse as JSON where they can
    (``anon=true``, ``default_block_size=5242880``), except credentials, which stay text."""
    options: dict = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise LakeError(f"--storage-option {pair!r}: expected KEY=VALUE")
        *parents, leaf = key.split(".")
        try:
            parsed = value if _is_secret(leaf) else json.loads(value)
        except ValueError:
            parsed = value
        target = options
        for part in parents:
            target = target.setdefault(part, {})
        target[leaf] = parsed
    return options


def _add_ingest(sub) -> None:
    p = sub.add_parser(
        "ingest",
        help="turn an image folder (or .npy/.npz) into a lake, on a Dask cluster",
        description=(
            "Ingest SRC (an ImageFolder tree SRC/<class>/<image>, or a .npy/.npz file) into the "
            "lake at DEST. Local paths and fsspec URLs (s3://, memory://, ...) both work. Nothing "
            "is visible until the final commit; rerunning an interrupted command resumes it."
        ),
        epilog="Example: lakeio ingest ./pets s3://bucket/pets.lake --size 224x224 --codec zstd:3",
    )
    p.add_argument("src", help="source folder, .npy or .npz (path or URL)")
    p.add_argument("dest", help="lake location (path or URL)")
    p.add_argument(
        "--size", help="resize every image to HxW (e.g. 224x224); default: the images' shared size"
    )
    p.add_argument("--resize", choices=("center-crop", "pad", "stretch"), default="center-crop",
                   help="how --size fits images of another aspect ratio (default: center-crop)")  # fmt: skip
    p.add_argument("--channels", type=int, choices=(1, 3),
                   help="1 (grayscale) or 3 (RGB); default: 1 only if every image is grayscale")  # fmt: skip
    p.add_argument(
        "--codec",
        help="codec spec (see `lakeio codecs`); default lz4, or the lake's when appending",
    )
    p.add_argument(
        "--chunk-samples",
        type=_positive_int,
        help="samples per chunk (default: about 4 MiB per chunk)",
    )
    p.add_argument(
        "--workers",
        type=_positive_int,
        help="workers of the local Dask cluster (default: one per core)",
    )
    p.add_argument("--scheduler", help="address of an existing Dask scheduler (tcp://host:8786); "
                   "with workers on other machines, DEST must be shared storage (s3://…)")  # fmt: skip
    p.add_argument("--on-error", choices=("skip", "fail"), default="skip",
                   help="skip bad images into the report (default) or stop at the first")  # fmt: skip
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--append", action="store_true", help="add to the lake at DEST")
    mode.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the lake at DEST (old versions stay as snapshots)",
    )
    p.add_argument("--labels", help="labels .npy for a .npy SRC of images")
    p.add_argument("--report", help="also write the JSON-lines reject report here")
    p.add_argument("--max-pixels", type=int, default=64_000_000,
                   help="refuse images with more pixels (decompression bombs; default 64M)")  # fmt: skip
    p.add_argument("--max-aspect", type=float, default=20.0,
                   help="refuse images more elongated than this (default 20)")  # fmt: skip
    p.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE",
                   help="fsspec option for SRC and DEST, repeatable (e.g. endpoint_url=http://...)")  # fmt: skip
    p.add_argument("--format-version", type=int, choices=(1, 2),
                   help="lake format for a new lake (default 2; a lake keeps its own until "
                   "`lakeio upgrade`)")  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=_run_ingest)


def _run_ingest(args) -> int:
    from lakeio.ingest import ingest
    from lakeio.ingest.options import parse_size

    try:
        size = parse_size(args.size) if args.size else None
    except ValueError as exc:
        raise LakeError(f"--size: {exc}") from None
    options = _storage_options(args.storage_option)
    summary = ingest(
        args.src,
        args.dest,
        labels=args.labels,
        mode="append" if args.append else "overwrite" if args.overwrite else "create",
        cluster=args.scheduler,
        workers=args.workers,
        storage_options=options,
        source_options=options,
        report=args.report,
        progress=not args.quiet,
        size=size,
        resize=args.resize,
        channels=args.channels,
        codec=args.codec,
        chunk_samples=args.chunk_samples,
        on_error=args.on_error,
        format_version=args.format_version,
        max_pixels=args.max_pixels,
        max_aspect=args.max_aspect,
    )
    print("\n".join(summary.lines()))
    return 0


def _add_info(sub) -> None:
    p = sub.add_parser("info", help="fields, shapes, codec, classes and sizes of a lake",
                       description="Describe the lake at DEST from its manifest.")  # fmt: skip
    p.add_argument("dest", help="lake location (path or URL)")
    p.add_argument("--version", type=int, help="a snapshot version (default: latest)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--storage-option", action="append", default=[], metavar="KEY=VALUE", help=SO_HELP
    )
    p.set_defaults(run=_run_info)


def _run_info(args) -> int:
    from lakeio.dataset import open_dataset
    from lakeio.info import format_info, lake_info

    ds = open_dataset(
        args.dest, storage_options=_storage_options(args.storage_option), version=args.version
    )
    info = lake_info(ds)
    print(json.dumps(info, indent=1, ensure_ascii=False) if args.json else format_info(info))
    return 0


def _add_verify(sub) -> None:
    p = sub.add_parser("verify", help="read every chunk and check checksums and alignment",
                       description="Read every chunk of the lake at DEST; report each bad chunk "
                       "by key. Exit status 1 if any is bad.")  # fmt: skip
    p.add_argument("dest", help="lake location (path or URL)")
    p.add_argument("--version", type=int, help="a snapshot version (default: latest)")
    p.add_argument(
        "--storage-option", action="append", default=[], metavar="KEY=VALUE", help=SO_HELP
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=_run_verify)


def _run_verify(args) -> int:
    from tqdm.auto import tqdm

    from lakeio.dataset import open_dataset
    from lakeio.verify import count_chunks, verify_lake

    ds = open_dataset(
        args.dest, storage_options=_storage_options(args.storage_option), version=args.version
    )
    with tqdm(
        total=count_chunks(ds), unit="chunk", desc="lakeio verify", disable=args.quiet
    ) as bar:
        report = verify_lake(ds, progress=bar.update)
    for key, reason in report.problems:
        print(f"BAD {key}: {reason}")
    count = len(report.problems)
    verdict = "OK" if report.ok else f"{count} problem{'s' if count != 1 else ''}"
    print(
        f"{ds.loc.describe()} v{ds.version}: {report.chunks_checked} chunks, {report.samples} samples checked: {verdict}"
    )
    return 0 if report.ok else 1


def _add_upgrade(sub) -> None:
    p = sub.add_parser("upgrade", help="move a lake to the newest format (metadata only)",
                       description="Commit the latest version of the lake at DEST again in the "
                       "newest format version; no segment is read or rewritten, and earlier "
                       "versions stay readable as they are.")  # fmt: skip
    p.add_argument("dest", help="lake location (path or URL)")
    p.add_argument(
        "--storage-option", action="append", default=[], metavar="KEY=VALUE", help=SO_HELP
    )
    p.set_defaults(run=_run_upgrade)


def _run_upgrade(args) -> int:
    from lakeio.upgrade import upgrade

    print(upgrade(args.dest, storage_options=_storage_options(args.storage_option)).line())
    return 0


def _add_codecs(sub) -> None:
    p = sub.add_parser("codecs", help="list the codec specs --codec accepts",
                       description="List codec specs. All are zarr-python's own codecs, readable "
                       "by zarr, tensorstore, xarray and dask without lakeio.")  # fmt: skip
    p.set_defaults(run=_run_codecs)


def _run_codecs(args) -> int:
    from lakeio.format.codecs import CODECS, DEFAULT_CODEC

    for info in CODECS.values():
        mark = " (default)" if info.name == DEFAULT_CODEC else ""
        print(f"{info.syntax:<30} {info.summary.replace(' (default)', '')}{mark}")
    print(
        "Every chunk also carries a crc32c checksum. Readable by: zarr-python, tensorstore, "
        "xarray, dask; predict-zstd lakes by zarr-python with lakeio installed only."
    )
    return 0


def _add_stats(sub) -> None:
    p = sub.add_parser(
        "stats",
        help="per-channel mean/std and class histogram, computed on a Dask cluster and stored",
        description=(
            "Compute the per-channel mean and std of the images (exact, over every pixel) and "
            "the class histogram of the lake at DEST on a Dask cluster, and commit them into the "
            "lake's metadata as a new version. Loaders then use them with normalize=\"lake\"."
        ),
        epilog="Example: lakeio stats s3://bucket/pets.lake --scheduler tcp://10.0.0.5:8786",
    )  # fmt: skip
    p.add_argument("dest", help="lake location (path or URL)")
    p.add_argument("--scheduler", metavar="ADDRESS", help="an existing Dask scheduler")
    p.add_argument("--workers", type=_positive_int, metavar="N",
                   help="local cluster size when no --scheduler (default: one per core)")  # fmt: skip
    p.add_argument("--force", action="store_true",
                   help="recompute even if the lake's latest version already carries them")  # fmt: skip
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--storage-option", action="append", default=[], metavar="KEY=VALUE", help=SO_HELP
    )
    p.set_defaults(run=_run_stats)


def _run_stats(args) -> int:
    from lakeio.dataset import open_dataset
    from lakeio.stats import compute_stats

    options = _storage_options(args.storage_option)
    stats = compute_stats(
        args.dest, cluster=args.scheduler, workers=args.workers, storage_options=options,
        force=args.force, echo=None if args.json else print,
    )  # fmt: skip
    if args.json:
        print(json.dumps(stats, indent=1))
        return 0
    classes = open_dataset(args.dest, storage_options=options).classes
    images = stats["images"]
    if stats.get("up_to_date"):
        print(
            f"statistics already stored in version {stats['stored_in_version']} (--force recomputes)"
        )
    print(
        f"images: {stats['samples']:,} samples, {images['pixels_per_channel']:,} pixels per channel"
    )
    print("  mean (0..255): " + ", ".join(f"{m:.3f}" for m in images["mean"]))
    print("  std  (0..255): " + ", ".join(f"{s:.3f}" for s in images["std"]))
    print("classes:")
    counts = stats["class_histogram"]
    for i, count in enumerate(counts):
        name = classes[i] if i < len(classes) else str(i)
        print(f"  {name}: {count:,} ({100 * count / max(1, sum(counts)):.1f}%)")
    if not stats.get("up_to_date"):
        print(
            f'stored in the lake as version {stats["stored_in_version"]}; use normalize="lake" in loaders'
        )
    return 0


def _version() -> str:
    from lakeio import __version__

    return __version__


def build_parser() -> argparse.ArgumentParser:
    """The `lakeio` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="lakeio",
        description="lakeio: a Dask-powered data lake for image training data.",
        epilog=EPILOG,
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    parser.add_argument("--version", action="version", version=f"lakeio {_version()}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for add in (_add_ingest, _add_info, _add_verify, _add_stats, _add_upgrade, _add_codecs):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `lakeio` command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (LakeError, ValueError, OSError) as exc:
        if args.debug:
            raise
        print(f"lakeio: error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # a library's own error: still one line, the traceback on demand
        if args.debug:
            raise
        print(
            f"lakeio: error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        print("lakeio: interrupted; nothing was committed by the interrupted step", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""`lakeio ingest` into a bucket (moto on 127.0.0.1) as users type it: credentials that look
like numbers, a --report in the bucket, and a report that cannot be written."""

import json
import subprocess
import sys
from pathlib import Path

import fsspec
import pytest

import lakeio
from lakeio.cli import _storage_options
from lakeio.errors import LakeNotFoundError

LAKEIO = str(Path(sys.executable).with_name("lakeio"))


def _cli_options(s3_options, key="20240101", secret="00012345"):
    return [
        "--storage-option", f"key={key}",
        "--storage-option", f"secret={secret}",
        "--storage-option", f"endpoint_url={s3_options['endpoint_url']}",
        "--storage-option", "client_kwargs.region_name=us-east-1",
    ]  # fmt: skip


def _ingest(*args, address):
    return subprocess.run(
        [LAKEIO, "ingest", *map(str, args), "--scheduler", address, "--quiet"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_credentials_that_look_like_numbers_stay_text_other_values_parse():
    options = _storage_options(
        ["key=20240101", "secret=007", "token=1e5", "anon=false", "default_block_size=5242880",
         "client_kwargs.region_name=us-east-1", "config_kwargs.retries.total_max_attempts=3"]
    )  # fmt: skip
    assert options == {
        "key": "20240101",
        "secret": "007",
        "token": "1e5",
        "anon": False,
        "default_block_size": 5242880,
        "client_kwargs": {"region_name": "us-east-1"},
        "config_kwargs": {"retries": {"total_max_attempts": 3}},
    }


def test_ingest_with_numeric_credentials_writes_the_report_into_the_bucket(
    png_folder, cluster_address, s3_options, tmp_path
):
    src = tmp_path / "src"
    fsspec.filesystem("file").cp(str(png_folder[0]), str(src), recursive=True)
    (src / "astronaut" / "junk.png").write_bytes(b"not a png")
    url = "s3://lakeio-test/numeric-creds.lake"
    report = "s3://lakeio-test/reports/numeric-creds.jsonl"
    opts = _cli_options(s3_options)
    run = _ingest(src, url, "--report", report, *opts, address=cluster_address)
    assert run.returncode == 0, run.stderr
    fs = fsspec.filesystem("s3", **s3_options)
    rows = [json.loads(line) for line in fs.cat_file(report).decode().splitlines()]
    assert [(r["kind"], r["path"]) for r in rows] == [("rejected", "astronaut/junk.png")]
    ds = lakeio.open_dataset(url, storage_options=s3_options)
    assert len(ds) == len(png_folder[1])


def test_a_report_that_cannot_be_written_stops_before_the_commit(
    png_folder, cluster_address, s3_options, tmp_path
):
    url = "s3://lakeio-test/unreported.lake"
    report = "s3://no-such-bucket-here/r.jsonl"
    run = _ingest(png_folder[0], url, "--report", report, *_cli_options(s3_options),
                  address=cluster_address)  # fmt: skip
    assert run.returncode != 0
    last = run.stderr.strip().splitlines()[-1]
    assert report in last and "nothing was committed" in last, run.stderr
    with pytest.raises(LakeNotFoundError):  # segments may be there; no version lists them
        lakeio.open_dataset(url, storage_options=s3_options)


def test_folder_marker_objects_in_a_bucket_are_neither_images_nor_reported(
    png_folder, client, s3_options
):
    import boto3

    root, written = png_folder
    src = "s3://lakeio-test/marked-src"
    fs = fsspec.filesystem("s3", **s3_options)
    fs.put(str(root) + "/", src + "/", recursive=True)
    s3 = boto3.client(
        "s3", endpoint_url=s3_options["endpoint_url"], region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )  # fmt: skip
    classes = sorted({rel.split("/")[0] for rel, _, _ in written})
    for key in ["marked-src/", *(f"marked-src/{c}/" for c in classes), "marked-src/empty/"]:
        s3.put_object(Bucket="lakeio-test", Key=key, Body=b"")  # what a console's "folder" is
    summary = lakeio.ingest(
        src, "s3://lakeio-test/marked.lake", cluster=client, storage_options=s3_options,
        source_options=s3_options, progress=False, echo=None,
    )  # fmt: skip
    assert (summary.written, summary.rejected, summary.ignored) == (len(written), 0, 0)
    rows = fs.cat_file(summary.report).decode().splitlines()
    assert [json.loads(r) for r in rows] == [
        {"kind": "empty-class", "path": "empty", "reason": "class folder has no images"}
    ]

"""The fault proxy the object-store tests and benchmarks share: each fault it claims to inject
reaches an S3 client as that fault, and is counted."""

from __future__ import annotations

import time

import pytest

from lakeio.testing.s3proxy import FaultProxy


@pytest.fixture
def proxy(s3_options):
    with FaultProxy(s3_options["endpoint_url"]) as running:
        yield running


def _fs(options, endpoint, **config):
    import s3fs

    fs = s3fs.S3FileSystem(
        key=options["key"], secret=options["secret"], endpoint_url=endpoint,
        client_kwargs=options["client_kwargs"], skip_instance_cache=True,
        config_kwargs={"retries": {"mode": "standard", "total_max_attempts": 1}, **config},
    )  # fmt: skip
    fs.retries = 1  # s3fs's own layer (a class attribute, 5): each fault shows as itself
    return fs


def test_a_clean_proxy_passes_objects_through_and_adds_its_latency(proxy, s3_options):
    fs = _fs(s3_options, proxy.endpoint)
    data = bytes(range(256)) * 4096
    fs.pipe("lakeio-test/proxy/clean", data)
    assert fs.cat_file("lakeio-test/proxy/clean", start=0) == data
    assert fs.info("lakeio-test/proxy/clean")["size"] == len(data)  # a HEAD's length kept
    proxy.set_faults(latency=0.2)
    started = time.monotonic()
    assert fs.cat_file("lakeio-test/proxy/clean", start=0) == data
    assert time.monotonic() - started >= 0.2
    counts = proxy.counts
    assert counts["requests"] >= 3 and counts["delay_ms"] == 200
    assert not {"slowdown", "reset", "truncated", "denied", "missing"} & counts.keys()


def test_each_fault_reaches_the_client_as_itself_and_is_counted(proxy, s3_options):
    fs = _fs(s3_options, proxy.endpoint)
    fs.pipe("lakeio-test/proxy/obj", b"x" * 100_000)
    proxy.set_faults(deny=("lakeio-test/proxy/obj",))
    with pytest.raises(PermissionError):
        fs.cat_file("lakeio-test/proxy/obj", start=0)
    proxy.set_faults(deny=(), missing=("lakeio-test/proxy/*",))
    with pytest.raises(FileNotFoundError):
        fs.cat_file("lakeio-test/proxy/obj", start=0)
    proxy.set_faults(missing=(), slowdown_rate=1.0)
    with pytest.raises(Exception, match=r"SlowDown|reduce your request rate|503"):
        fs.cat_file("lakeio-test/proxy/obj", start=0)
    proxy.set_faults(slowdown_rate=0.0, truncate_rate=1.0)
    with pytest.raises(Exception, match=r"(?i)payload|content.?length|not enough data"):
        fs.cat_file("lakeio-test/proxy/obj", start=0)
    proxy.set_faults(truncate_rate=0.0, reset_rate=1.0)
    with pytest.raises(Exception, match=r"(?i)closed|disconnect|reset"):
        fs.cat_file("lakeio-test/proxy/obj", start=0)
    counts = proxy.counts
    assert counts["denied"] == 1 and counts["missing"] == 1
    assert counts["slowdown"] >= 1 and counts["truncated"] >= 1 and counts["reset"] >= 1


def test_bursts_of_503_and_a_bandwidth_cap(proxy, s3_options):
    fs = _fs(s3_options, proxy.endpoint)
    fs.pipe("lakeio-test/proxy/big", b"y" * 2_000_000)
    proxy.reset_counts()
    proxy.set_faults(slowdown_burst=(3, 2))  # 3 requests served, then 2 refused, and again
    outcomes = []
    for _ in range(10):
        try:
            fs.cat_file("lakeio-test/proxy/big", start=0)
            outcomes.append("ok")
        except Exception:
            outcomes.append("503")
    assert outcomes == ["ok", "ok", "ok", "503", "503"] * 2
    assert proxy.counts["slowdown"] == 4
    proxy.set_faults(slowdown_burst=None, bandwidth=10e6)
    started = time.monotonic()
    assert len(fs.cat_file("lakeio-test/proxy/big", start=0)) == 2_000_000
    assert time.monotonic() - started >= 0.15  # 2 MB at 10 MB/s: 0.2 s, less a first write


def test_a_lost_answer_a_changed_byte_and_denied_credentials(proxy, s3_options):
    # botocore checks a GET against the checksum S3 stored with a PUT: off here, to see the byte
    fs = _fs(s3_options, proxy.endpoint, response_checksum_validation="when_required")
    data = bytes(range(256)) * 400
    proxy.set_faults(lose_reply_every=1, on_writes=True)
    with pytest.raises(Exception, match=r"(?i)closed|disconnect|reset"):
        fs.pipe("lakeio-test/proxy/landed", data)
    proxy.set_faults(lose_reply_every=0, corrupt_every=1)
    body = fs.cat_file("lakeio-test/proxy/landed", start=0)  # the PUT landed all the same
    assert len(body) == len(data) and body != data
    assert sum(a != b for a, b in zip(body, data, strict=True)) == 1
    proxy.set_faults(on_writes=False)
    fs.pipe("lakeio-test/proxy/one-byte", b"x")
    first, again = (fs.cat_file("lakeio-test/proxy/one-byte", start=0) for _ in range(2))
    assert b"x" not in (first, again) and first != again  # damaged differently each read
    with pytest.raises(Exception, match=r"(?i)checksum"):  # as botocore is by default
        _fs(s3_options, proxy.endpoint).cat_file("lakeio-test/proxy/landed", start=0)
    proxy.set_faults(corrupt_every=0, deny_access_keys=(s3_options["key"],))
    with pytest.raises(PermissionError):
        fs.cat_file("lakeio-test/proxy/landed", start=0)
    other = {**s3_options, "key": "another-key"}
    assert _fs(other, proxy.endpoint).cat_file("lakeio-test/proxy/landed", start=0) == data
    counts = proxy.counts
    assert counts["corrupted"] == 4 and counts["denied"] == 1 and counts["GET"] == 6
    assert counts["reply_lost"] == counts["PUT"] - 1 >= 1  # (aiohttp may send it again, once;
    # the last PUT, of the one-byte object, passed unharmed)

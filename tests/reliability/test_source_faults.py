"""Transient read faults while ingesting: retried or failed, never an image lost as a "reject"."""

import dask.config
import pytest
from distributed import Client

import lakeio
from lakeio.errors import IngestError, LakeNotFoundError
from lakeio.testing.faults import FAULTS
from lakeio.testing.images import write_image_folder

FAULTY = (3, 17, 58)  # files whose reads fail
# Size and channels given: no header probe first, so every fault lands in the segment tasks.
NO_PROBE = {"size": (32, 32), "channels": 3}


@pytest.fixture(scope="module")
def jpeg_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("faulty-src")
    written = write_image_folder(root, 80, size=(32, 32), fmt="jpg", seed=4)
    return root, [rel for rel, _, _ in written]


@pytest.fixture(scope="module")
def threads():
    """An in-process cluster: its workers share this process's fault ledger."""
    with Client(processes=False, n_workers=2, threads_per_worker=1, dashboard_address=None) as c:
        yield c


@pytest.fixture(autouse=True)
def _no_faults_left():
    FAULTS.reset()
    yield
    FAULTS.reset()


def _lake_paths(lake) -> list[str]:
    return sorted(lakeio.open_dataset(lake).to_dask()["paths"].compute())


def _ingest(root, dest, client, **kw):
    return lakeio.ingest(
        f"faulty://{root}", dest, cluster=client, on_error="skip", progress=False, echo=None, **kw
    )


def test_faults_within_the_read_deadline_are_retried_and_nothing_is_lost(
    jpeg_folder, tmp_path, threads
):
    root, files = jpeg_folder
    for i in FAULTY:
        FAULTS.arm(files[i], times=2)
    summary = _ingest(root, tmp_path / "lake", threads, **NO_PROBE)
    assert FAULTS.injected == 2 * len(FAULTY)
    assert (summary.written, summary.rejected) == (80, 0)
    assert _lake_paths(tmp_path / "lake") == sorted(files)


def test_an_outage_fails_the_ingest_and_the_rerun_ingests_every_image(
    jpeg_folder, tmp_path, threads
):
    root, files = jpeg_folder
    for i in FAULTY:
        FAULTS.arm(files[i], times=10**9)  # down until cleared
    with dask.config.set({"lakeio.read.deadline": 0.2}), pytest.raises(IngestError) as err:
        _ingest(root, tmp_path / "lake", threads, **NO_PROBE)
    assert any(files[i] in str(err.value) for i in FAULTY), err.value
    assert "cannot read" in str(err.value) and "resumes" in str(err.value)
    assert FAULTS.injected >= len(FAULTY)
    with pytest.raises(LakeNotFoundError):
        lakeio.open_dataset(tmp_path / "lake")  # nothing committed
    FAULTS.clear()  # the network is back
    summary = _ingest(root, tmp_path / "lake", threads, **NO_PROBE)
    assert not summary.up_to_date
    assert (summary.written, summary.rejected) == (80, 0)
    assert _lake_paths(tmp_path / "lake") == sorted(files)


def test_one_folder_ingested_into_two_lakes_at_once_writes_both(jpeg_folder, tmp_path, threads):
    """Same source, same options: the same segment ids, bound for two destinations."""
    import threading

    root, files = jpeg_folder
    errors = []

    def ingest(dest):
        try:
            _ingest(root, dest, threads)
        except Exception as exc:  # reported below
            errors.append(exc)

    workers = [threading.Thread(target=ingest, args=(tmp_path / n,)) for n in ("a", "b")]
    for t in workers:
        t.start()
    for t in workers:
        t.join(timeout=120)
    assert not errors
    for name in ("a", "b"):
        assert _lake_paths(tmp_path / name) == sorted(files)


def test_a_botocore_error_while_probing_sizes_is_retried_not_fatal(jpeg_folder, tmp_path, threads):
    """Without --size the images' headers are probed first (a ranged read of each file)."""
    from botocore.exceptions import EndpointConnectionError

    root, files = jpeg_folder
    FAULTS.arm(files[5], times=2, error=lambda p: EndpointConnectionError(endpoint_url=p))
    summary = _ingest(root, tmp_path / "lake", threads)
    assert FAULTS.injected == 2
    assert (summary.written, summary.rejected) == (80, 0)


def test_seeded_fault_trials_lose_nothing_and_name_every_outage(tmp_path):
    """The soak's case with 3 trials: each fails once naming the file that stays down, then
    the rerun in the same client (right after the failed run's cancellations) commits all."""
    from lakeio.testing.faults import run_source_fault_trials

    write_image_folder(tmp_path / "src", 40, size=(24, 24), fmt="jpg", seed=5)
    tally = run_source_fault_trials(tmp_path / "src", tmp_path, trials=3, seed=2)
    assert (tally.trials, tally.lost) == (3, 0)
    assert tally.detected == tally.recovered == 3 and tally.injected >= 3 * 4

"""The crowd: reader processes sharing one disk tier half the lake's size, epoch after epoch."""

import pytest

import lakeio
from lakeio.testing.crowd import crowd

PROCESSES, EPOCHS, BATCH = 4, 3, 16


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_four_processes_sharing_a_tier_half_the_lake_get_every_batch_right(small_lake, tmp_path):
    path, _, _ = small_lake
    run = crowd(path, tmp_path, processes=PROCESSES, epochs=EPOCHS, seed=0, batch_size=BATCH)
    per_epoch = len(lakeio.open_dataset(path).loader(BATCH, rank=0, world_size=PROCESSES))
    assert [r["errors"] for r in run.readers] == [[]] * PROCESSES
    for r in run.readers:
        assert (r["batches"], r["wrong"], r["missing"]) == (EPOCHS * per_epoch, 0, 0), r
        assert r["corrupt_refetched"] == 0 and r["disk_write_errors"] == 0
    assert run.disk_size == run.lake_bytes // 2
    assert 0 < run.final_bytes_held <= run.disk_size  # each store culls until the tier fits
    assert run.refetches > 0  # the tier really was too small: chunks were culled and read again
    assert sum(r["disk_hits"] for r in run.readers) > 0  # and yet it served the crowd
    tally = run.tally()
    assert (tally.trials, tally.lost) == (PROCESSES * EPOCHS, 0)
    assert tally.injected == tally.detected == tally.recovered == run.refetches
    print(tally.row(), *tally.notes, sep="\n")

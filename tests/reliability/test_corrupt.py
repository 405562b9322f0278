"""Flipped bytes at seeded random places: detected and named, never delivered as data."""

import pytest

from lakeio.testing.corrupt import TARGETS, make_lake


@pytest.fixture(scope="module")
def two_version_lake(tmp_path_factory):
    path = tmp_path_factory.mktemp("corrupt") / "lake"
    return path, make_lake(path)


@pytest.mark.parametrize("target", TARGETS)
def test_every_flipped_byte_is_detected_and_nothing_wrong_is_delivered(
    target, two_version_lake, tmp_path
):
    import lakeio.testing.corrupt as corrupt

    lake, columns = two_version_lake
    only = {t: t == target for t in TARGETS}
    tallies = corrupt.run_corrupt_trials(lake, columns, tmp_path, trials=4, seed=3, only=only)
    (tally,) = tallies
    assert tally.trials == tally.injected == 4
    assert tally.lost == 0, tally.notes
    assert tally.detected == 4, tally.notes

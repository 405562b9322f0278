"""kill -9 of a real `lakeio ingest --append` at seeded random moments, with a reader running."""

import pytest

from lakeio.testing.images import write_image_folder
from lakeio.testing.kill import run_kill_trials


@pytest.mark.timeout(300)
def test_killed_appends_resume_to_the_uninterrupted_lake_and_readers_never_see_a_tear(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    write_image_folder(first, 40, size=(32, 32), fmt="png", seed=1, photos=("coffee", "rocket"))
    write_image_folder(second, 400, size=(32, 32), fmt="jpg", seed=2, photos=("chelsea", "coffee"))
    tally = run_kill_trials(first, second, tmp_path, trials=3, seed=9)
    assert tally.trials == 3 and tally.lost == 0, tally.notes
    assert tally.injected >= 2  # at least two kills landed while the append still ran
    assert tally.detected >= 1, tally.notes  # one of them mid-write: a rerun resumed its segments
    assert tally.recovered == tally.injected

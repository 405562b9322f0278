"""A full disk, for real: a small tmpfs in a private mount namespace under the disk tier and
under an ingest's destination (lakeio.testing.full_disk)."""

import pytest

import lakeio
from lakeio.testing.full_disk import TIERS, full_disk_tier, tier_tally
from lakeio.testing.full_disk_ingest import full_disk_ingest, ingest_tally, prepare_ingest


@pytest.fixture(scope="module")
def tier_report(small_lake, tmp_path_factory):
    path, _, _ = small_lake
    return full_disk_tier(path, tmp_path_factory.mktemp("full-tier"), seed=0)


@pytest.fixture(scope="module")
def epoch_batches(small_lake):
    return len(lakeio.open_dataset(small_lake[0]).loader(16))


def _chunks(small_lake) -> int:
    return len(lakeio.open_dataset(small_lake[0]).chunk_members()) * 2  # images and labels


@pytest.mark.slow
def test_loading_goes_on_from_the_origin_with_every_batch_right(tier_report, epoch_batches):
    assert "warnings" in tier_report, tier_report
    for name, epochs in (("tier-a", 2), ("tier-b", 2), ("tier-c", 1), ("tier-d", 1)):
        phase = tier_report[name]
        assert phase["errors"] == [], (name, phase["errors"])
        assert (phase["batches"], phase["wrong"], phase["missing"]) == (
            epochs * epoch_batches,
            0,
            0,
        )


@pytest.mark.slow
def test_every_failed_write_is_counted_and_warned_about_once_per_tier(tier_report, small_lake):
    assert tier_report["warnings"] | {"all": None} == dict.fromkeys(TIERS, 1) | {"all": None}
    assert len(tier_report["warnings"]["all"]) == len(TIERS), tier_report["warnings"]["all"]
    assert all("DiskTierWarning" in w for w in tier_report["warnings"]["all"])
    full_at_open = tier_report["tier-b"]
    assert full_at_open["write_errors"] == full_at_open["origin_reads"] >= _chunks(small_lake)
    assert full_at_open["hits"] == 0
    for name in ("tier-a", "tier-d"):  # half the lake stored while there was room, still served
        assert tier_report[name]["write_errors"] > 0 and tier_report[name]["hits"] > 0, name


@pytest.mark.slow
def test_a_damaged_copy_found_on_a_full_disk_is_refetched_not_served(tier_report):
    damaged = tier_report["tier-c"]
    assert damaged["corrupt_refetched"] >= 1 and damaged["errors"] == []
    # repaired once more with space back, unless the full disk let the good copy in already
    assert tier_report["space_freed"]["tier-c"]["corrupt_refetched"] in (0, 1)


@pytest.mark.slow
def test_nothing_half_written_is_kept_or_served_once_space_is_freed(tier_report, small_lake):
    for name, freed in tier_report["space_freed"].items():
        assert freed["errors"] == [] and freed["wrong"] == 0, name
        assert freed["write_errors"] == 0 and freed["origin_reads_last_epoch"] == 0, name
        assert freed["audit"] == {
            "values": _chunks(small_lake), "bad_values": 0, "unreadable": 0, "orphan_files": 0
        }, name  # fmt: skip
    assert tier_report["space_freed"]["tier-a"]["corrupt_refetched"] == 0
    tally = tier_tally(tier_report)
    assert (tally.trials, tally.injected, tally.detected, tally.recovered, tally.lost) == (
        4, 4, 4, 4, 0
    )  # fmt: skip
    print(tally.row(), *tally.notes, sep="\n")


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_an_append_onto_a_full_disk_fails_in_one_line_keeps_v1_and_resumes(tmp_path):
    prepared = prepare_ingest(tmp_path / "prepared")
    report = full_disk_ingest(prepared, tmp_path, seed=0)
    assert "failed" in report, report
    failed = report["failed"]
    assert failed["returncode"] == 1 and not failed["traceback"]
    [line] = failed["error_lines"]
    assert line.startswith(f"lakeio: error: {report['lake']}: the destination is full")
    assert "No space left on device writing" in line and "Nothing was committed" in line
    after_failure = report["after_failure"]
    assert after_failure["manifests"] == ["v00000001.json"]
    assert after_failure["version"] == 1 and after_failure["verified"]
    assert after_failure["same_values"] and after_failure["partials"] == 0
    assert report["resumed"]["returncode"] == 0, report["resumed"]
    assert "segments resumed from an earlier run" in report["resumed"]["stdout"]
    after_resume = report["after_resume"]
    assert after_resume["manifests"] == ["v00000001.json", "v00000002.json"]
    assert after_resume["version"] == 2 and after_resume["verified"]
    assert after_resume["same_segments"] and after_resume["same_values"]
    assert after_resume["partials"] == 0
    tally = ingest_tally(report)
    assert (tally.trials, tally.injected, tally.detected, tally.recovered, tally.lost) == (
        1, 1, 1, 1, 0
    )  # fmt: skip
    print(tally.row(), *tally.notes, sep="\n")

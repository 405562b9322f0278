"""What a reliability case counts, so `make test` and `benchmarks/soak.py` report the same figures.

Each case of the reliability suite (tests/reliability/, benchmarks/soak.py) is a function in
`lakeio.testing` that runs a number of seeded trials against real processes and files and
returns a `Tally`: how many faults it injected, how many lakeio detected (an error naming the
object, a warning, a counted refetch), how many it recovered from (the work went on or a rerun
completed it with nothing lost), and how many lost data or delivered wrong bytes. A test asserts
``lost == 0`` and ``recovered + detected`` cover every fault; the soak writes the figures to
docs/reliability.md.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class Tally:
    """The figures of one reliability case over its trials."""

    case: str
    trials: int = 0
    injected: int = 0
    detected: int = 0
    recovered: int = 0
    lost: int = 0
    notes: list[str] = field(default_factory=list)

    def add(self, other: Tally) -> Tally:
        """Sum two tallies of the same case (e.g. the soak's rounds)."""
        return Tally(
            self.case,
            self.trials + other.trials,
            self.injected + other.injected,
            self.detected + other.detected,
            self.recovered + other.recovered,
            self.lost + other.lost,
            [*self.notes, *other.notes],
        )

    def as_dict(self) -> dict:
        return asdict(self)

    def row(self) -> str:
        """One Markdown table row: case | trials | injected | detected | recovered | lost."""
        return (
            f"| {self.case} | {self.trials} | {self.injected} | {self.detected} | "
            f"{self.recovered} | {self.lost} |"
        )

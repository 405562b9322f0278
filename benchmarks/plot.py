"""Plot the loader tables recorded in docs/benchmarks.md (warm epoch, images/s, log scale).

Run: .venv/bin/python benchmarks/plot.py   (needs matplotlib: pip install matplotlib)
"""

from __future__ import annotations

import re
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"


def tables(text: str) -> dict[str, list[tuple[str, float]]]:
    """{'64x64 …': [(loader, epoch-2 img/s), …]} from the loader section's markdown tables."""
    section = text.split("## Loader", 1)[1].split("\n## ", 1)[0]
    out: dict[str, list[tuple[str, float]]] = {}
    title = None
    for line in section.splitlines():
        heading = re.match(r"^\*\*(.+)\*\*$", line.strip())
        if heading:
            title = heading.group(1)
            out[title] = []
        elif title and line.startswith("| ") and not line.startswith("| loader"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            out[title].append((cells[0], float(cells[2].replace(",", ""))))
    return out


def _short(name: str) -> str:
    for long, short in (
        (", 2 workers", ""),
        (" (first 3000)", ""),
        (" (raw .npy)", ""),
        (", disk tier only (cold, then warm)", ", warm disk tier"),
        (" (moto)", ""),
    ):
        name = name.replace(long, short)
    return name


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = tables((DOCS / "benchmarks.md").read_text())
    fig, axes = plt.subplots(len(data), 1, figsize=(9, 3.6 * len(data)))
    for ax, (title, rows) in zip(axes, data.items(), strict=True):
        names = [_short(name) for name, _ in rows]
        colors = ["#2a9d8f" if n.startswith("lakeio") else "#adb5bd" for n in names]
        ax.barh(names[::-1], [v for _, v in rows][::-1], color=colors[::-1])
        ax.set_xscale("log")
        ax.set_xlabel("images/s, warm epoch (log scale)")
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(DOCS / "loader-benchmark.png", dpi=110)
    print(f"wrote {DOCS / 'loader-benchmark.png'}")


if __name__ == "__main__":
    main()
